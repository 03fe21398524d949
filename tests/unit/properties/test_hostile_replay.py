"""Hostile input through the in-process driver, as `idstream replay` runs it (issue #11 item 5):
20,000 generated records (idstream.simulate.hostile) in several arrival orders. Nothing
raises, and every input record, counted by (partition, offset), has exactly one outcome
(SPEC §5): resolved, dead-lettered, or skipped by a counted rule (a duplicate eventId, a
dropped launch: `StageResult.notes`); and no identity holding a control or format character is
stored.

Outcomes are read from what the driver emits: every resolved event and every dead letter
names its input record (`source`), and every skip is reported with its record's position.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import pytest
from tests.support.outcomes import Position, sink_outcomes

from idstream.codecs import Rejection, decode
from idstream.domain.events import AnyEvent, AppLaunch
from idstream.domain.identities import forbidden_character
from idstream.domain.messages import NOTE_DUPLICATE, NOTE_LAUNCH_DROPPED
from idstream.drivers.local.driver import INPUT_TOPIC, LocalDriver
from idstream.drivers.local.sinks import MemorySink
from idstream.drivers.partitioner import kafka_partition
from idstream.simulate import SimRecord
from idstream.simulate.hostile import HostileConfig, hostile

EVENTS = 20_000
PARTITIONS = 4
SHUFFLE_SEEDS = (1, 2, 3, 4, 5)
SKIPS = (NOTE_DUPLICATE, NOTE_LAUNCH_DROPPED)


@cache
def records() -> tuple[SimRecord, ...]:
    return tuple(hostile(HostileConfig(seed=11, events=EVENTS)))


def outcomes(sink: MemorySink) -> dict[Position, list[str]]:
    """What happened to each input record, by (partition, offset)."""
    found = sink_outcomes(sink, INPUT_TOPIC)
    return {position: [o.what for o in found[position]] for position in found}


@cache
def _events() -> tuple[AnyEvent | None, ...]:
    """Each record decoded (None: rejected), to tell a true duplicate or launch from a false one."""
    return tuple(
        None if isinstance(event := decode(r.value), Rejection) else event for r in records()
    )


@cache
def _twins() -> Counter[tuple[str, str]]:
    return Counter((e.push_registration_id, e.event_id) for e in _events() if e is not None)


def _wrong_skip(outcome: str, event: AnyEvent | None) -> bool:
    """A skip the record does not qualify for: a duplicate with no twin, a launch that is not one
    (a false duplicate is a record lost through a key collision)."""
    if event is None:
        return outcome in SKIPS
    if outcome == NOTE_DUPLICATE:
        return _twins()[(event.push_registration_id, event.event_id)] < 2
    if outcome == NOTE_LAUNCH_DROPPED:
        return not isinstance(event, AppLaunch)
    return False


@cache
def _positions() -> list[tuple[Position, SimRecord]]:
    offsets = [0] * PARTITIONS
    out = []
    for record in records():
        partition = kafka_partition(record.key, PARTITIONS)
        out.append(((partition, offsets[partition]), record))
        offsets[partition] += 1
    return out


def test_the_stream_is_hostile_enough() -> None:
    labels = Counter(r.label.split(":")[0] for r in records())
    assert len(records()) == EVENTS
    assert labels["hostile"] >= 2_000
    assert sum(n for label, n in labels.items() if label != "hostile") >= EVENTS // 2


@pytest.mark.parametrize("shuffle_seed", SHUFFLE_SEEDS)
def test_every_hostile_record_has_exactly_one_outcome(shuffle_seed: int) -> None:
    sink = MemorySink()
    driver = LocalDriver(partitions=PARTITIONS, shuffle_seed=shuffle_seed, sink=sink)
    try:
        for record in records():
            driver.submit(record.value, key=record.key, record_timestamp=record.record_ms)
        driver.drain()  # must not raise
        # No identity with a control or format character (or worse) was stored.
        stored = [
            value
            for _, profile in driver.pool_tables.profiles.scan()
            for value in (*profile.external_user_ids, *profile.emails, *profile.phones)
        ]
        assert stored
        assert [v for v in stored if forbidden_character(v) >= 0] == []
    finally:
        driver.close()

    found = outcomes(sink)
    ticks = {(p, o) for reason, _, p, o in sink.skips if reason == "tick"}
    wrong: Counter[tuple[str, tuple[str, ...]]] = Counter()
    examples: dict[tuple[str, tuple[str, ...]], str] = {}
    for (position, record), event in zip(_positions(), _events(), strict=True):
        got = tuple(sorted(found.get(position, ["none"])))
        if len(got) == 1 and _wrong_skip(got[0], event):
            got = (f"{got[0]}, wrongly (no twin, or not a launch)",)
        if len(got) != 1 or got == ("none",) or "wrongly" in got[0]:
            case = (record.label, got)
            wrong[case] += 1
            examples.setdefault(case, f"{position} {record.value[:160]!r}")
    unknown = set(found) - {p for p, _ in _positions()} - ticks
    report = "\n".join(
        f"  {n:5d} x {label}: {outcome}  e.g. {examples[(label, outcome)]}"
        for (label, outcome), n in wrong.most_common()
    )
    if wrong or unknown:
        pytest.fail(
            f"shuffle_seed={shuffle_seed}: {sum(wrong.values())} of {EVENTS} records without "
            f"exactly one outcome:\n{report}\noutcomes for unknown positions: "
            f"{sorted(unknown)[:5]}",
            pytrace=False,
        )
