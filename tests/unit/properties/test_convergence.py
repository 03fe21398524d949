"""Properties over generated input logs (SPEC §4.1, §5): any interleaving of partitions,
duplicate deliveries and crashes, and any replay of one input log give the same state and the
same outputs. Logs come from the seeded simulator (with late and jittered device clocks,
shared devices, conflicts and forgets), each record with its key and broker time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idstream.digest import state_digest
from idstream.domain.events import EventType
from idstream.domain.messages import OutputTopic
from idstream.drivers import steps
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink
from idstream.simulate import Traffic, TrafficConfig
from idstream.storage.memory import DictStore

# Identity-heavy traffic, so that small histories still personalize, merge and conflict.
MIX = MappingProxyType(
    {
        EventType.INSTALL.value: 20.0,
        EventType.APP_LAUNCH.value: 20.0,
        EventType.CUSTOM.value: 15.0,
        EventType.INSTALL_UPDATE.value: 8.0,
        EventType.PERSONALIZE.value: 20.0,
        EventType.DEPERSONALIZE.value: 8.0,
        EventType.PERSON_UPDATE.value: 8.0,
        EventType.UNINSTALL.value: 3.0,
        EventType.FORGET.value: 4.0,
    }
)

HISTORIES = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Log = list[tuple[bytes, bytes, int]]  # (key, value, broker time)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch hypothesis may share between examples (each example undoes it)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@st.composite
def logs(draw: st.DrawFn) -> Log:
    config = TrafficConfig(
        seed=draw(st.integers(0, 2**32)),
        users=draw(st.integers(1, 5)),
        events=draw(st.integers(1, 40)),
        mix=MIX,
        app_codes=("shop", "shop-tablet"),
        conflict_share=0.2,
        shared_device_share=0.3,
        multi_app_share=0.5,
        malformed_share=0.03,
        late_share=0.2,
        jitter_share=0.1,
        mean_gap_ms=3_000,
    )
    return [(r.key, r.value, r.record_ms) for r in Traffic(config)]


def replay(log: Log, *, seed: int | None = None, partitions: int = 3) -> LocalDriver:
    driver = LocalDriver(
        sink=MemorySink(),
        store=DictStore(roundtrip=True),
        shuffle_seed=seed,
        partitions=partitions,
    )
    for key, value, at in log:
        driver.submit(value, key=key, record_timestamp=at)
    driver.drain()
    return driver


def outputs(driver: LocalDriver) -> dict[str, dict[str, list[Any]]]:
    """Per output topic, each key's records in order: what a consumer of one key reads.
    Resolved events are per install (a key's order is the install's order)."""
    sink = driver.sink
    assert isinstance(sink, MemorySink)
    out: dict[str, dict[str, list[Any]]] = {}
    for topic in (OutputTopic.PROFILE_CHANGES, OutputTopic.PROFILES):
        per_key: dict[str, list[Any]] = {}
        for o in sink[topic]:
            per_key.setdefault(o.key, []).append(o.value)
        out[topic.value] = per_key
    # Dead letters come from both stages: the set of them, by the input record they hold.
    dead = sorted(
        (o.value["source"]["offset"], o.value["reason"])
        for o in sink[OutputTopic.DEAD_LETTER]
        if o.value
    )
    out["dead-letter"] = {"": dead}
    per_install: dict[str, list[Any]] = {}
    for o in sink[OutputTopic.RESOLVED_EVENTS]:
        assert o.value is not None
        per_install.setdefault(o.value["installId"], []).append(o.value["eventId"])
    out["resolved-events"] = per_install
    return out


def resolved_to(driver: LocalDriver) -> set[tuple[str, str, str]]:
    """(install, eventId, profile) of each resolved event, the profile followed through the
    `merged` changes to where it ended."""
    sink = driver.sink
    assert isinstance(sink, MemorySink)
    survivor = {
        o.value["loser"]: o.value["survivor"]
        for o in sink[OutputTopic.PROFILE_CHANGES]
        if o.value is not None and o.value["kind"] == "merged"
    }

    def follow(pid: str) -> str:
        while pid in survivor:
            pid = survivor[pid]
        return pid

    return {
        (o.value["installId"], o.value["eventId"], follow(o.value["profileId"]))
        for o in sink[OutputTopic.RESOLVED_EVENTS]
        if o.value is not None
    }


@HISTORIES
@given(log=logs(), seed=st.integers(0, 2**32), partitions=st.integers(1, 4))
def test_any_interleaving_gives_the_same_state_and_outputs(
    log: Log, seed: int, partitions: int
) -> None:
    reference = replay(log, partitions=partitions)
    shuffled = replay(log, seed=seed, partitions=partitions)
    assert shuffled.digest() == reference.digest()
    assert outputs(shuffled) == outputs(reference)
    assert list(shuffled.install_tables.held.scan()) == []
    assert list(shuffled.pool_tables.pending.scan()) == []
    # A merge another install caused reaches an install in its own time, so an event may
    # name the profile merged away (consumers re-key with `merged`); followed through the
    # merges, every event ends on the same profile.
    forgotten_somewhere = {value for _, value, _ in log if b'"forget"' in value}
    if not forgotten_somewhere:
        assert resolved_to(shuffled) == resolved_to(reference)


@HISTORIES
@given(log=logs(), data=st.data())
def test_duplicate_records_change_no_decision(log: Log, data: st.DataObject) -> None:
    """A producer that sends a record twice (SPEC §4.1): the copy, at a later offset, is
    skipped; every decision, change and snapshot is the same."""
    copies = data.draw(st.lists(st.integers(0, max(len(log) - 1, 0)), max_size=10))
    noisy = list(log)
    for index in copies:
        if not log:
            break
        at = data.draw(st.integers(index + 1, len(log)))
        key, value, _ = log[index]
        # The copy arrives later, stamped by the broker when it arrives.
        noisy.insert(noisy.index(log[index]) + 1 + (at - index - 1), (key, value, log[at - 1][2]))
    reference, duplicated = replay(log), replay(noisy)
    got, want = outputs(duplicated), outputs(reference)
    assert got["profile-changes"] == want["profile-changes"]
    assert got["profiles"] == want["profiles"]
    assert got["resolved-events"] == want["resolved-events"]


@HISTORIES
@given(log=logs(), seed=st.integers(0, 2**32))
def test_replaying_the_log_rebuilds_the_same_state_and_ids(log: Log, seed: int) -> None:
    first = replay(log, seed=seed)
    rebuilt = replay(log)
    assert rebuilt.digest() == first.digest()
    assert outputs(rebuilt) == outputs(first)
    # The same records delivered again into the built state (a consumer restarted from the
    # start): every one is a redelivery, nothing changes and nothing is sent.
    sink = rebuilt.sink
    assert isinstance(sink, MemorySink)
    sent = sum(len(v) for v in sink.records.values())
    again = LocalDriver(store=rebuilt.store, sink=sink, partitions=3)
    offsets = dict.fromkeys(range(3), 0)
    for key, value, at in log:
        partition = again_partition(key, 3)
        again.submit(value, key=key, record_timestamp=at, offset=offsets[partition])
        offsets[partition] += 1
    again.run()
    assert again.digest() == first.digest()
    assert sum(len(v) for v in sink.records.values()) == sent


def again_partition(key: bytes, partitions: int) -> int:
    from idstream.drivers.partitioner import kafka_partition

    return kafka_partition(key, partitions)


@HISTORIES
@given(log=logs())
def test_a_crash_after_the_state_is_written_loses_and_doubles_nothing(
    log: Log, monkeypatch_module: Any
) -> None:
    """Every input record, claim and heartbeat is delivered twice in a row, as after a crash
    between writing state and committing the input's offset: the second delivery is
    recognised by its position and changes nothing (bookkeeping included)."""
    driver = LocalDriver(store=DictStore(roundtrip=True), partitions=2)
    tables = driver.store.tables

    def twice(apply: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, *args: Any) -> Any:
            first = apply(self, *args)
            state = state_digest(tables, frozenset())
            again = apply(self, *args)
            assert again is None or (not again.outputs and not again.messages)
            assert state_digest(tables, frozenset()) == state
            return first

        return run

    monkeypatch_module.setattr(steps.Steps, "input_isolated", twice(steps.Steps.input_isolated))
    monkeypatch_module.setattr(steps.Steps, "pool_message", twice(steps.Steps.pool_message))
    try:
        for key, value, at in log:
            driver.submit(value, key=key, record_timestamp=at)
        driver.drain()
    finally:
        monkeypatch_module.undo()
    assert driver.digest() == replay(log, partitions=2).digest()
