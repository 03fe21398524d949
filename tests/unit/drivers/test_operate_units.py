"""Pure pieces of operating a worker: Prometheus text, metric counting from stage results,
HTTP settings checks, `idstream profile` keys and output, `idstream tail` lines (masked)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from idstream.domain.messages import (
    NOTE_LAUNCH_DROPPED,
    Output,
    OutputTopic,
    StageResult,
    dead_letter,
)
from idstream.domain.reasons import RejectReason
from idstream.drivers.faust.metrics import Family, Histogram, Metrics
from idstream.drivers.faust.reader import PartitionReader, ReadOnlyTableError
from idstream.drivers.faust.web import pool_names
from idstream.drivers.faust.web_guard import check_http_settings, is_loopback
from idstream.errors import ConfigurationError
from idstream.lookup_cli import add_arguments, parse_key, render_profile
from idstream.settings import Settings
from idstream.tail_cli import render

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z]+="[^"]*",?)*\})? [0-9.e+Inf-]+$')


def test_prometheus_text_escapes_labels_and_sorts_series() -> None:
    family = Family("x_total", "counter", "Things")
    family.inc((("reason", 'a "b"\\c\nd'),), 2)
    family.inc((("reason", "a"),))
    assert family.render() == [
        "# HELP x_total Things",
        "# TYPE x_total counter",
        'x_total{reason="a"} 1',
        'x_total{reason="a \\"b\\"\\\\c\\nd"} 2',
    ]


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    h = Histogram("lat_seconds", "Latency", buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value, (("stage", "pool"),))
    assert h.render()[2:] == [
        'lat_seconds_bucket{stage="pool",le="0.1"} 2',
        'lat_seconds_bucket{stage="pool",le="1"} 3',
        'lat_seconds_bucket{stage="pool",le="+Inf"} 4',
        'lat_seconds_sum{stage="pool"} 3.65',
        'lat_seconds_count{stage="pool"} 4',
    ]


def change(**fields: Any) -> Output:
    return Output(OutputTopic.PROFILE_CHANGES, str(fields["profileId"]), fields)


def test_metrics_count_what_the_stages_returned() -> None:
    m = Metrics.for_settings(Settings())
    rejected = dead_letter(b"{", None, RejectReason.MALFORMED_JSON, "x")
    m.observe_input("invalid")
    m.observe_result(StageResult(outputs=(rejected,)))
    m.observe_result(StageResult(notes=(NOTE_LAUNCH_DROPPED,)))
    m.set_pending("default", 3)
    merged = {"kind": "merged", "loser": "p_b", "survivor": "p_a"}
    m.observe_result(
        StageResult(
            outputs=(
                change(profileId="p_b", **merged),
                change(profileId="p_a", **merged),  # the same merge, on the survivor
                change(profileId="p_a", kind="identity_rejected", reason="blocked_identity"),
                change(profileId="p_c", kind="forgotten"),
                Output(OutputTopic.PROFILES, "p_b", None),
            )
        )
    )
    m.set_lag([("idstream.events", 3, 7)])
    text = m.render()
    for line in text.splitlines():
        assert line.startswith("#") or SAMPLE.match(line), line
    assert 'idstream_events_in_total{type="invalid"} 1' in text
    assert 'idstream_dead_letters_total{reason="malformed_json"} 1' in text
    assert 'idstream_skipped_total{reason="launch_dropped"} 1' in text
    assert 'idstream_pending_claims{pool="default"} 3' in text
    assert "idstream_merges_total 1" in text
    assert 'idstream_identity_rejections_total{reason="blocked_identity"} 1' in text
    assert "idstream_forgotten_total 1" in text
    assert 'idstream_outputs_total{topic="idstream.profile-changes"} 4' in text
    assert 'idstream_outputs_total{topic="idstream.profiles"} 1' in text
    assert 'idstream_consumer_lag{partition="3",topic="idstream.events"} 7' in text


def test_serving_beyond_loopback_needs_a_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    check_http_settings(Settings())
    check_http_settings(Settings(http_host="0.0.0.0", http_token="t"))
    with pytest.raises(ConfigurationError, match="IDSTREAM_HTTP_TOKEN"):
        check_http_settings(Settings(http_host="0.0.0.0"))


def test_lookups_try_the_default_pool_and_every_configured_one() -> None:
    from types import MappingProxyType

    settings = Settings(pools=MappingProxyType({"a": "shop", "b": "shop", "c": "vendor"}))
    assert pool_names(settings) == ["default", "shop", "vendor"]


@pytest.mark.parametrize(
    ("key", "path", "install"),
    [
        ("email:Jo@Example.com", "/identities/email/Jo%40Example.com", False),
        ("phone:+49 151 1234", "/identities/phone/%2B49%20151%201234", False),
        ("externalUserId:u/1", "/identities/externalUserId/u%2F1", False),
        ("EMAIL:a@b.co", "/identities/email/a%40b.co", False),
        ("p_0123456789abcdef0123", "/profiles/p_0123456789abcdef0123", False),
        ("a_0123456789abcdef0123", "/profiles/a_0123456789abcdef0123", False),
        ("profile:anything", "/profiles/anything", False),
        ("fcm:abc123", "/installs/fcm%3Aabc123", True),
        ("install:email:x", "/installs/email%3Ax", True),
    ],
)
def test_profile_keys(key: str, path: str, install: bool) -> None:
    parsed = parse_key(key)
    assert (parsed.path, parsed.install) == (path, install)


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_key("email:")


SNAPSHOT = {
    "profileId": "p_1",
    "kind": "person",
    "pool": "default",
    "version": 3,
    "createdAt": 0,
    "identities": {
        "externalUserId": "cust-42",
        "emails": ["jo@example.com"],
        "phones": ["+491511234567"],
    },
    "attributes": {"firstName": "Jo"},
    "customAttributes": {},
    "tags": ["vip"],
    "installs": [
        {
            "pushRegistrationId": "fcm:1",
            "appCode": "shop",
            "lifecycle": "personalized",
            "primaryDevice": True,
            "pushEnabled": True,
        }
    ],
    "channels": {"emails": [{"value": "jo@example.com", "primary": True}], "phones": []},
    "mergedFrom": [],
}


def test_profile_output_masks_identities_unless_asked() -> None:
    masked = render_profile(SNAPSHOT)
    assert "j***@e***.com (primary)" in masked and "+49********67" in masked
    assert "jo@example.com" not in masked and "+491511234567" not in masked
    assert "cust-42" not in masked and "fcm:1  shop  personalized  [primary, push]" in masked
    shown = render_profile(SNAPSHOT, show_identities=True)
    assert "jo@example.com (primary)" in shown and "cust-42" in shown


def test_profile_raw_flag_keeps_its_old_name() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert not parser.parse_args(["p_1"]).raw
    assert parser.parse_args(["p_1", "--raw"]).raw
    assert parser.parse_args(["p_1", "--show-identities"]).raw


def test_tail_lines_never_show_a_raw_identity() -> None:
    import orjson

    added = {"profileId": "p_1", "version": 2, "kind": "identity_added", "identityKind": "phone"}
    line = render("profile-changes", b"p_1", orjson.dumps({**added, "value": "+491511234567"}))
    assert line == "profile-changes p_1 v2 identity_added phone=+49********67 event=None"
    snapshot = render("profiles", b"p_1", orjson.dumps(SNAPSHOT))
    assert "jo@example.com" not in snapshot and "emails=1" in snapshot
    assert render("profiles", b"p_1", None) == "profiles p_1 tombstone"
    dead = dead_letter(b'{"email":"jo@example.com"}', None, RejectReason.MALFORMED_JSON, "jo@")
    assert dead.value is not None
    line = render("dead-letter", b"", orjson.dumps(dead.value))
    assert "reason=malformed_json" in line and "jo@" not in line


class FakeDb:
    """The part of a rocksdict Rdict that PartitionReader uses."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self, *, from_key: bytes, backwards: bool = False) -> Any:
        keys = sorted(self.data, reverse=backwards)
        keys = [k for k in keys if (k <= from_key if backwards else k >= from_key)]
        return [(k, self.data[k]) for k in keys]


class FakeStore:
    def __init__(self, dbs: dict[int, FakeDb]) -> None:
        self.dbs = dbs

    def _db_for_partition(self, partition: int) -> FakeDb:
        return self.dbs[partition]


class FakeTable:
    def __init__(self, dbs: dict[int, FakeDb]) -> None:
        self.data = FakeStore(dbs)


def test_partition_reader_reads_one_partition_and_never_writes() -> None:
    from idstream.storage.codec import ValueCodec

    enc = ValueCodec(int).encode
    dbs = {
        0: FakeDb({b"t\x00a": enc(1), b"t\x00b": enc(2), b"u\x00a": enc(9)}),
        1: FakeDb({b"t\x00a": enc(5)}),
    }
    table = PartitionReader(FakeTable(dbs), 0)("t", int)
    assert table.get("a") == 1 and table.get("zz") is None
    assert list(table.scan()) == [("a", 1), ("b", 2)]
    assert list(table.scan(reverse=True)) == [("b", 2), ("a", 1)]
    assert PartitionReader(FakeTable(dbs), 1)("t", int).get("a") == 5
    with pytest.raises(ReadOnlyTableError):
        table.put("a", 3)
