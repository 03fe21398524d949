"""Properties over generated event histories (SPEC §4.1, §5): duplicates change nothing, any
interleaving that keeps each install's order gives the same state, and a replay into empty
state rebuilds the same state and profile ids. Histories come from the seeded simulator, with
forgets: the pool decides in its fold which fresh anonymous profile each of the forgotten
person's installs moves to (docs/architecture.md, "Forget"), so forgets converge too. Two
workers whose streams are far apart in event time converge too, re-applying only the claims a
late one depends on.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idstream.digest import state_digest
from idstream.domain import install as install_stage
from idstream.domain import pool as pool_stage
from idstream.domain.events import EventType
from idstream.domain.messages import Claim, OutputTopic, StageResult
from idstream.domain.pool import apply_claim
from idstream.domain.pool_state import index_key, log_key
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
    }
)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch hypothesis may share between examples (each example undoes it)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


HISTORIES = settings(
    max_examples=500,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


WITH_FORGET = MappingProxyType({**MIX, EventType.FORGET.value: 4.0})


@st.composite
def histories(draw: st.DrawFn, *, forget: bool = True) -> list[bytes]:
    config = TrafficConfig(
        seed=draw(st.integers(0, 2**32)),
        users=draw(st.integers(1, 5)),
        events=draw(st.integers(1, 40)),
        mix=WITH_FORGET if forget else MIX,
        app_codes=("shop", "shop-tablet"),
        conflict_share=0.2,
        shared_device_share=0.3,
        multi_app_share=0.5,
        malformed_share=0.03,
        late_share=0.2,
        jitter_share=0.1,
        mean_gap_ms=3_000,
    )
    return [r.value for r in Traffic(config)]


def replay(records: list[bytes], *, seed: int | None = None, partitions: int = 1) -> LocalDriver:
    driver = LocalDriver(store=DictStore(roundtrip=True), shuffle_seed=seed, partitions=partitions)
    driver.replay(records)
    return driver


def install_of(value: bytes) -> str:
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ""
    prid = decoded.get("pushRegistrationId") if isinstance(decoded, dict) else None
    return prid if isinstance(prid, str) else ""


def interleave(records: list[bytes], rng: random.Random) -> list[bytes]:
    """Another arrival order that keeps each install's own order."""
    queues: dict[str, list[bytes]] = defaultdict(list)
    for value in records:
        queues[install_of(value)].append(value)
    for queue in queues.values():
        queue.reverse()
    out = []
    keys = sorted(queues)
    while keys:
        key = rng.choice(keys)
        out.append(queues[key].pop())
        if not queues[key]:
            keys.remove(key)
    return out


def final_profile_ids(driver: LocalDriver) -> set[str]:
    sink = driver.sink
    assert isinstance(sink, MemorySink)
    latest: dict[str, bool] = {}
    for o in sink[OutputTopic.PROFILES]:
        latest[o.key] = o.value is not None
    return {k for k, alive in latest.items() if alive}


@HISTORIES
@given(records=histories(), data=st.data())
def test_duplicating_any_events_changes_nothing(records: list[bytes], data: st.DataObject) -> None:
    reference = replay(records)
    copies = data.draw(st.lists(st.integers(0, max(len(records) - 1, 0)), max_size=10))
    noisy = list(records)
    for index in copies:
        if not records:
            break
        # A duplicate arrives some time after the original.
        at = data.draw(st.integers(index + 1, len(records)))
        noisy.insert(noisy.index(records[index]) + 1 + (at - index - 1), records[index])
    duplicated = replay(noisy)
    assert duplicated.digest() == reference.digest()
    assert final_profile_ids(duplicated) == final_profile_ids(reference)


@HISTORIES
@given(
    records=histories(),
    order_seed=st.integers(0, 2**32),
    shuffle_seed=st.integers(0, 2**32),
    partitions=st.integers(1, 4),
)
def test_any_interleaving_gives_the_same_state(
    records: list[bytes], order_seed: int, shuffle_seed: int, partitions: int
) -> None:
    reference = replay(records)
    other = interleave(records, random.Random(order_seed))
    shuffled = replay(other, seed=shuffle_seed, partitions=partitions)
    assert shuffled.digest() == reference.digest()
    assert list(shuffled.install_tables.held.scan()) == []


@HISTORIES
@given(records=histories(), shuffle_seed=st.integers(0, 2**32))
def test_replay_into_empty_state_rebuilds_the_same_state_and_ids(
    records: list[bytes], shuffle_seed: int
) -> None:
    first = replay(records, seed=shuffle_seed, partitions=2)
    rebuilt = replay(records)
    assert rebuilt.digest() == first.digest()
    assert final_profile_ids(rebuilt) == final_profile_ids(first)
    # Replaying the whole input again into the built state changes nothing either.
    rebuilt.replay(records)
    assert rebuilt.digest() == first.digest()


@HISTORIES
@given(records=histories())
def test_a_crash_redelivery_resends_the_same_and_changes_nothing(
    records: list[bytes], monkeypatch_module: Any
) -> None:
    """Every install-stage input is delivered twice in a row, as after a crash between
    storing state and sending outputs: the second delivery returns the same result and
    leaves every table (bookkeeping included) as it was."""
    driver = LocalDriver(store=DictStore(roundtrip=True))
    tables = {n: t for n, t in driver.store.tables.items() if n.startswith("install_")}

    def twice(apply: Callable[..., StageResult]) -> Callable[..., StageResult]:
        def run(*args: Any) -> StageResult:
            first = apply(*args)
            state = state_digest(tables, frozenset())
            assert apply(*args) == first
            assert state_digest(tables, frozenset()) == state
            return first

        return run

    monkeypatch_module.setattr(install_stage, "apply_event", twice(install_stage.apply_event))
    monkeypatch_module.setattr(install_stage, "apply_decision", twice(install_stage.apply_decision))
    try:
        driver.replay(records)
    finally:
        monkeypatch_module.undo()
    assert driver.digest() == replay(records).digest()


# --- two workers, one far ahead ------------------------------------------------------------


@st.composite
def skewed_streams(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """A history, and the same records as two workers deliver them: installs split between
    two streams, each in its own order, one running `lead` records ahead of the other."""
    config = TrafficConfig(
        seed=draw(st.integers(0, 2**32)),
        users=draw(st.integers(5, 30)),
        events=draw(st.integers(100, 300)),
        mix=WITH_FORGET,
        app_codes=("shop", "shop-tablet"),
        conflict_share=0.2,
        shared_device_share=0.3,
        multi_app_share=0.5,
        late_share=0.2,
        jitter_share=0.1,
        mean_gap_ms=3_000,
    )
    records = [r.value for r in Traffic(config)]
    salt = draw(st.integers(0, 2**16))
    streams: tuple[list[bytes], list[bytes]] = ([], [])
    for value in records:
        streams[zlib.crc32(f"{salt}:{install_of(value)}".encode()) % 2].append(value)
    ahead, behind = streams
    lead = draw(st.integers(len(ahead) // 2, len(ahead)))
    delivered: list[bytes] = []
    i = j = 0
    while i < len(ahead) or j < len(behind):
        if j == len(behind) or (i < len(ahead) and i <= j + lead):
            delivered.append(ahead[i])
            i += 1
        else:
            delivered.append(behind[j])
            j += 1
    return records, delivered


def late_inversions(keys: list[str]) -> int:
    """Claims the pool re-applied before dependent re-folds: for each claim, every claim that
    arrived before it with a larger log key."""
    return sum(1 for n, key in enumerate(keys) for earlier in keys[:n] if earlier > key)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(streams=skewed_streams())
def test_two_skewed_streams_converge_and_re_apply_only_dependent_claims(
    streams: tuple[list[bytes], list[bytes]], monkeypatch_module: Any
) -> None:
    records, delivered = streams
    arrived: list[str] = []
    reapplied = 0

    def counting(tables: pool_stage.PoolTables, claim: Claim, rules: Any) -> StageResult:
        nonlocal reapplied
        stored = pool_stage.stored_claim(claim)
        if tables.claim_index.get(index_key(claim.pool, claim.push_registration_id, claim.seq)):
            return apply_claim(tables, claim, rules)
        arrived.append(log_key(claim.pool, stored))
        result = apply_claim(tables, claim, rules)
        reapplied += pool_stage.reapplied_count(result)
        return result

    monkeypatch_module.setattr(pool_stage, "apply_claim", counting)
    try:
        skewed = replay(delivered)
    finally:
        monkeypatch_module.undo()
    assert skewed.digest() == replay(records).digest()
    # Re-applying every later claim was the rule before. Measured on these 40 histories:
    # 11 % of that in all, 33 % at most (conflicts and shared devices tie users together).
    assert reapplied <= late_inversions(arrived) // 2 + 10
