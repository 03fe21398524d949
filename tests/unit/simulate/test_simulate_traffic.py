"""The traffic simulator: deterministic, realistic in mix and order, odd traffic as asked."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idstream.errors import ConfigurationError
from idstream.simulate import DEFAULT_MIX, SimRecord, Traffic, TrafficConfig, generate
from idstream.simulate.junk import OVERSIZE_BYTES

STANDARD = (
    "applicationVersion",
    "deviceManufacturer",
    "deviceModel",
    "osLanguage",
    "osVersion",
    "platform",
    "sdkVersion",
)


def records(**overrides: Any) -> list[SimRecord]:
    return list(generate(TrafficConfig(**overrides)))


def stamp(value: dict[str, Any]) -> int:
    ts = value["timestamp"]
    if isinstance(ts, int):
        return ts
    from datetime import datetime

    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def by_install(recs: list[SimRecord]) -> Iterator[tuple[bytes, list[tuple[SimRecord, Any]]]]:
    groups: dict[bytes, list[tuple[SimRecord, Any]]] = defaultdict(list)
    for rec in recs:
        if not rec.malformed:
            groups[rec.key].append((rec, rec.json()))
    yield from groups.items()


def test_same_seed_gives_the_same_bytes() -> None:
    config = TrafficConfig(seed=7, events=3000, malformed_share=0.02)
    first = [(r.key, r.value) for r in generate(config)]
    second = [(r.key, r.value) for r in generate(config)]
    assert first == second


def test_different_seeds_differ() -> None:
    first = [r.value for r in generate(TrafficConfig(seed=1, events=500))]
    second = [r.value for r in generate(TrafficConfig(seed=2, events=500))]
    assert first != second


def test_generate_is_a_lazy_iterator_of_exactly_the_asked_count() -> None:
    stream = generate(TrafficConfig(events=10**9))
    assert next(stream).label == "install"
    assert len(records(events=1234)) == 1234


def test_mix_follows_the_configured_weights() -> None:
    traffic = Traffic(TrafficConfig(events=40_000, users=2000))
    for _ in traffic:
        pass
    total = sum(DEFAULT_MIX.values())
    for kind, weight in DEFAULT_MIX.items():
        expected = weight / total
        got = traffic.stats.labels[kind] / 40_000
        assert abs(got - expected) <= 0.004 + expected * 0.15, (kind, got, expected)


def test_a_custom_mix_only_yields_its_types() -> None:
    recs = records(events=2000, mix={"install": 1.0, "appLaunch": 9.0})
    assert {r.label for r in recs} == {"install", "appLaunch"}


def test_each_install_starts_with_install_and_stays_silent_after_uninstall() -> None:
    recs = records(events=30_000, users=500, late_share=0.5)
    late_seen = 0
    for _key, events in by_install(recs):
        assert events[0][0].label == "install"
        kinds = [rec.label for rec, _ in events]
        if "uninstall" not in kinds:
            continue
        at = kinds.index("uninstall")
        uninstalled_ms = stamp(events[at][1])
        for rec, value in events[at + 1 :]:
            assert "late" in rec.flags
            assert stamp(value) < uninstalled_ms
            late_seen += 1
    assert late_seen > 0


def test_lost_installs_start_with_a_launch() -> None:
    recs = records(events=5000, lost_install_share=0.5)
    lost = [events for _, events in by_install(recs) if events[0][0].label != "install"]
    assert lost
    for events in lost:
        assert "lost_install" in events[0][0].flags


def test_timestamps_mostly_increase_per_install_and_globally() -> None:
    recs = records(events=20_000)
    backwards = 0
    pairs = 0
    for _, events in by_install(recs):
        times = [stamp(value) for _, value in events]
        pairs += len(times) - 1
        backwards += sum(1 for a, b in pairwise(times) if b < a)
    assert 0 < backwards < pairs * 0.03
    arrivals = [r.record_ms for r in recs]
    assert arrivals == sorted(arrivals)


def test_relaunches_inside_30_seconds_exist() -> None:
    recs = records(events=10_000)
    inside = 0
    for _, events in by_install(recs):
        launches = [stamp(v) for r, v in events if r.label == "appLaunch" and "late" not in r.flags]
        inside += sum(1 for a, b in pairwise(launches) if 0 < b - a <= 30_000)
    relaunches = sum(1 for r in recs if "relaunch" in r.flags)
    assert relaunches > 0.1 * sum(1 for r in recs if r.label == "appLaunch")
    assert inside >= relaunches


def test_odd_traffic_appears_at_the_configured_shares() -> None:
    config = TrafficConfig(
        events=40_000, users=1000, malformed_share=0.05, junk_share=0.1, conflict_share=0.1
    )
    traffic = Traffic(config)
    recs = list(traffic)
    stats = traffic.stats
    assert abs(stats.malformed / 40_000 - 0.05) < 0.006
    personalizes = stats.labels["personalize"]
    junk = sum(1 for r in recs if r.label == "personalize" and {"junk", "junk_only"} & set(r.flags))
    assert abs(junk / personalizes - 0.1) < 0.03
    assert 0.03 < stats.flags["conflict"] / personalizes < 0.13
    assert stats.flags["shared_device"] > 0
    assert stats.flags["email_change"] > 0.15 * stats.labels["personUpdate"]
    assert stats.flags["rfc3339"] > 0


def test_no_odd_traffic_when_its_shares_are_zero() -> None:
    config = TrafficConfig(
        events=5000,
        junk_share=0.0,
        conflict_share=0.0,
        shared_device_share=0.0,
        jitter_share=0.0,
        rfc3339_share=0.0,
        late_share=0.0,
    )
    traffic = Traffic(config)
    for _ in traffic:
        pass
    assert traffic.stats.malformed == 0
    assert not traffic.stats.flags.keys() - {"relaunch", "email_change", "force"}


def test_email_changes_replace_the_email_the_person_used_before() -> None:
    recs = records(events=30_000, users=300, email_change_share=1.0)
    used: set[str] = set()
    changes = 0
    for rec in recs:
        if rec.malformed:
            continue
        value = rec.json()
        if rec.label == "personalize":
            used.update(value["userIdentity"].get("emails", ()))
        elif "email_change" in rec.flags:
            (change,) = value["identitiesReplaced"]
            assert change["kind"] == "email"
            assert change["old"] != change["new"]
            changes += 1 if change["old"] in used else 0
    assert changes > 0


def test_conflicting_personalizes_claim_an_email_of_another_user() -> None:
    recs = records(events=20_000, conflict_share=0.5)
    owner: dict[str, str] = {}
    conflicts = 0
    for rec in recs:
        if rec.label != "personalize":
            continue
        identity = rec.json()["userIdentity"]
        emails = identity.get("emails", [])
        if "conflict" in rec.flags:
            assert len(emails) >= 1
            conflicts += 1
        elif "externalUserId" in identity and emails and "junk" not in rec.flags:
            owner.setdefault(emails[0], identity["externalUserId"])
    assert conflicts > 0


def test_malformed_records_are_really_malformed() -> None:
    recs = [r for r in records(events=20_000, malformed_share=0.2) if r.malformed]
    kinds = {r.label for r in recs}
    assert kinds == {
        "malformed:invalid_json",
        "malformed:wrong_type",
        "malformed:unknown_type",
        "malformed:missing_field",
        "malformed:oversize",
        "malformed:not_object",
    }
    for rec in recs:
        assert b"\n" not in rec.value
        if rec.label == "malformed:invalid_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(rec.value)
        elif rec.label == "malformed:oversize":
            assert len(rec.value) > OVERSIZE_BYTES
        elif rec.label == "malformed:not_object":
            assert not isinstance(orjson.loads(rec.value), dict)


def _check_fields(value: dict[str, Any]) -> None:
    assert isinstance(value["eventId"], str) and value["eventId"]
    assert isinstance(value["timestamp"], int | str)
    assert isinstance(value["appCode"], str) and value["appCode"]
    assert isinstance(value["pushRegistrationId"], str) and value["pushRegistrationId"]
    assert value["platform"] in ("Android", "iOS")
    for name in STANDARD:
        assert isinstance(value[name], str)
    kind = value["type"]
    if kind == "personalize":
        assert value["userIdentity"]
    elif kind == "custom":
        assert isinstance(value["definitionId"], str)
        assert all(
            isinstance(v, str | int | float | bool | None) for v in value["properties"].values()
        )
    elif kind == "installUpdate":
        assert {"systemData", "customAttributes", "primaryDevice"} & value.keys()
    elif kind == "personUpdate":
        changes = ("attributes", "tagsAdded", "tagsRemoved", "identitiesAdded")
        assert {*changes, "identitiesRemoved", "identitiesReplaced"} & value.keys()


def test_well_formed_records_have_the_required_fields() -> None:
    recs = records(events=20_000, malformed_share=0.01)
    ids = set()
    for rec in recs:
        if rec.malformed:
            continue
        value = rec.json()
        _check_fields(value)
        assert rec.key == value["pushRegistrationId"].encode()
        assert value["type"] == rec.label
        ids.add(value["eventId"])
    assert len(ids) == sum(1 for r in recs if not r.malformed)


def test_events_of_every_type_appear() -> None:
    labels = {r.label for r in records(events=20_000)}
    assert labels >= set(DEFAULT_MIX)


@pytest.mark.parametrize(
    "change",
    [
        {"users": 0},
        {"events": -1},
        {"app_codes": ()},
        {"mix": {"purchase": 1.0}},
        {"mix": {"install": 0.0}},
        {"malformed_share": 1.5},
        {"mean_gap_ms": 0},
    ],
)
def test_invalid_configs_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        replace(TrafficConfig(), **change)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), users=st.integers(1, 50), events=st.integers(0, 400))
def test_any_seed_is_deterministic_and_installs_come_first(
    seed: int, users: int, events: int
) -> None:
    config = TrafficConfig(seed=seed, users=users, events=events, malformed_share=0.05)
    first = [r.value for r in generate(config)]
    assert first == [r.value for r in generate(config)]
    assert len(first) == events
    for _, group in by_install(list(generate(config))):
        assert group[0][0].label == "install"


def test_output_does_not_depend_on_the_process_hash_seed() -> None:
    script = (
        "import hashlib, sys\n"
        "from idstream.simulate import TrafficConfig, generate\n"
        "h = hashlib.sha256()\n"
        "for r in generate(TrafficConfig(seed=11, events=3000, malformed_share=0.05)):\n"
        "    h.update(r.key + b'\\0' + r.value + b'\\n')\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(done.stdout.strip())
    assert len(digests) == 1
