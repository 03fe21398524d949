"""What the drivers emit is what schemas/output says, and every input record has exactly one
outcome (SPEC §5, §6): resolved, dead-lettered, or skipped by a counted rule.

The records checked here are the ones the in-process driver actually emitted for simulated
traffic with malformed, junk and forget input, under several interleavings; the Kafka
driver's are checked the same way on the broker (tests/integration/test_topology.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from tests.codecs import oracle

from idstream.domain.messages import OutputTopic
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink
from idstream.simulate import Traffic, TrafficConfig

SCHEMA = {
    OutputTopic.RESOLVED_EVENTS: "output/resolved-event.schema.json",
    OutputTopic.PROFILE_CHANGES: "output/profile-change.schema.json",
    OutputTopic.PROFILES: "output/profile-snapshot.schema.json",
    OutputTopic.DEAD_LETTER: "output/dead-letter.schema.json",
    OutputTopic.FORGET_REGISTER: "output/forget-register.schema.json",
}

MIX = {
    "install": 15.0,
    "appLaunch": 25.0,
    "custom": 15.0,
    "installUpdate": 8.0,
    "personalize": 15.0,
    "depersonalize": 6.0,
    "personUpdate": 10.0,
    "uninstall": 2.0,
    "forget": 4.0,
}


def invalid(topic: OutputTopic, value: Any) -> list[str]:
    """Why a record value does not validate (as a consumer parses it: JSON bytes)."""
    if value is None:
        return [] if topic is OutputTopic.PROFILES else ["a tombstone outside `profiles`"]
    doc = oracle.parse(orjson.dumps(value))
    validator = oracle.validator(SCHEMA[topic])
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def assert_valid(sink: MemorySink) -> int:
    checked = 0
    for topic in OutputTopic:
        for output in sink[topic]:
            errors = invalid(topic, output.value)
            assert not errors, (topic.value, output.value, errors[:3])
            checked += 1
    return checked


def outcomes(driver: LocalDriver, sink: MemorySink) -> Counter[tuple[int, int]]:
    """How many outcomes each input record (partition, offset) had."""
    found: Counter[tuple[int, int]] = Counter()
    for topic in (OutputTopic.RESOLVED_EVENTS, OutputTopic.DEAD_LETTER):
        for output in sink[topic]:
            assert output.value is not None
            source = output.value["source"]
            found[(source["partition"], source["offset"])] += 1
    for _, _, partition, offset in sink.skips:
        found[(partition, offset)] += 1
    return found


def traffic(seed: int, events: int) -> list[tuple[bytes, bytes, int]]:
    config = TrafficConfig(
        seed=seed,
        users=max(10, events // 30),
        events=events,
        mix=MIX,
        malformed_share=0.05,
        junk_share=0.1,
        conflict_share=0.2,
        shared_device_share=0.2,
        late_share=0.1,
    )
    return [(r.key, r.value, r.record_ms) for r in Traffic(config)]


@pytest.mark.parametrize(("seed", "shuffle", "partitions"), [(1, None, 1), (2, 7, 3), (3, 8, 6)])
def test_every_record_the_driver_emits_validates_and_each_input_has_one_outcome(
    seed: int, shuffle: int | None, partitions: int
) -> None:
    records = traffic(seed, 3_000)
    sink = MemorySink()
    driver = LocalDriver(sink=sink, shuffle_seed=shuffle, partitions=partitions)
    for key, value, at in records:
        driver.submit(value, key=key, record_timestamp=at)
    driver.drain()
    checked = assert_valid(sink)
    assert checked > len(records)
    kinds = {o.value["kind"] for o in sink[OutputTopic.PROFILE_CHANGES] if o.value}
    # The traffic is rich enough to check every change kind's shape.
    assert {"created", "merged", "identity_added", "install_linked", "forgotten"} <= kinds
    assert {o.value["reason"] for o in sink[OutputTopic.DEAD_LETTER] if o.value} >= {
        "malformed_json",
        "blocked_identity",
    }
    found = outcomes(driver, sink)
    ticks = driver.stats.skipped["tick"]
    assert len(found) == len(records) + ticks, "a record with no outcome"
    assert {n for n in found.values()} == {1}, "a record with two outcomes"
