"""Pool stage, caps on names (SPEC §4.6): custom attributes and tags of a person stay within
their limits, through updates and through merges, so a record cannot grow without end."""

from __future__ import annotations

import orjson
from tests.contract.test_emitted_outputs import invalid
from tests.unit.domain.pool_harness import PoolHarness

from idstream.domain.config import PersonLimits, RuleConfig
from idstream.domain.messages import OutputTopic


def custom_of(h: PoolHarness, prid: str) -> dict[str, object]:
    snapshot = h.snapshot(h.profile_of(prid))
    assert snapshot is not None
    return dict(snapshot["customAttributes"])


def test_new_custom_attributes_beyond_the_cap_are_ignored() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(custom_attributes=3)))
    h.install("A", 1_000)
    h.personalize("A", 2_000, None, ["a@x.com"], custom={"a": 1, "b": 1})
    h.update("A", 3_000, custom={"c": 1, "d": 1, "a": 2})
    assert custom_of(h, "A") == {"a": 2, "b": 1, "c": 1}
    # Unsetting frees a slot; a write older than the unset does not take it back.
    h.update("A", 4_000, custom={"b": None})
    h.update("A", 3_500, custom={"b": "late"})
    h.update("A", 5_000, custom={"d": "now"})
    assert custom_of(h, "A") == {"a": 2, "c": 1, "d": "now"}


def test_a_merge_keeps_the_survivor_names_then_the_loser_ones_up_to_the_cap() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(custom_attributes=3, tags=2)))
    for prid in "ABC":
        h.install(prid, 1_000)
    h.personalize("A", 2_000, None, ["a@x.com"], custom={"a": 1, "b": 1})
    h.update("A", 2_100, tags_added=["t1"])
    h.personalize("B", 3_000, None, ["b@x.com"], custom={"b": 2, "c": 2, "d": 2})
    h.update("B", 3_100, tags_added=["t2", "t3"])
    h.personalize("C", 4_000, None, ["a@x.com", "b@x.com"])
    assert len(h.persons()) == 1
    snapshot = h.snapshot(h.profile_of("C"))
    assert snapshot is not None
    # b: the loser's write is newer (last writer wins); c: the one name left room for.
    assert snapshot["customAttributes"] == {"a": 1, "b": 2, "c": 2}
    assert snapshot["tags"] == ["t1", "t2"]


def test_an_sdk_writing_a_new_name_per_event_cannot_outgrow_the_snapshot() -> None:
    """60 names of 1 KB per personUpdate (what a 64 KiB input record holds): before the cap,
    17 such events made a snapshot over Kafka's 1 MB. Now it stops at 200 names."""
    h = PoolHarness(roundtrip=False)
    h.install("A", 1_000)
    h.personalize("A", 2_000, None, ["a@x.com"])
    for i in range(40):
        h.update("A", 3_000 + i, custom={f"k{i}_{j}": "v" * 1_000 for j in range(60)})
    assert len(custom_of(h, "A")) == PersonLimits().custom_attributes
    for output in h.outputs:
        assert not invalid(output.topic, output.value)
    largest = max(
        len(orjson.dumps(o.value)) for o in h.outputs if o.topic is OutputTopic.PROFILES and o.value
    )
    assert largest < 256 * 1024
