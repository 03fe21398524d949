"""Alignment on a real broker (docs/architecture.md, "Alignment"): an input partition far
ahead of the others in record time is paused until they catch up, pending claims stay
bounded, and the state is what the in-process driver builds from the same log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from idstream.drivers.partitioner import kafka_partition
from idstream.simulate import Traffic, TrafficConfig
from tests.support.kafka import create_topics
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology, _get

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
AHEAD = 0
ALIGN_MS = 60_000
DAY_MS = 24 * 3600 * 1000
# CreateTime, as idstream accepts it (future stamps capped), so the test can stamp the past.
CREATE_TIME = {"message.timestamp.type": "CreateTime", "message.timestamp.after.max.ms": "60000"}


@dataclass
class Seen:
    """What /metrics showed while the worker ran."""

    max_pending: float = 0.0
    paused: set[str] = field(default_factory=set)
    max_lead_s: float = 0.0
    last: dict[str, float] = field(default_factory=dict)


def _samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("idstream_") and not line.startswith("#")
    }


async def _watch(url: str, seen: Seen) -> None:
    while True:
        with contextlib.suppress(OSError):
            samples = _samples(await asyncio.to_thread(_get, url, None))
            seen.last = samples
            pending = sum(v for k, v in samples.items() if k.startswith("idstream_pending_claims"))
            seen.max_pending = max(seen.max_pending, pending)
            for key, value in samples.items():
                if key.startswith("idstream_source_paused") and value == 1:
                    seen.paused.add(key)
                if key == f'idstream_source_lead_seconds{{partition="{AHEAD}"}}':
                    seen.max_lead_s = max(seen.max_lead_s, value)
        await asyncio.sleep(0.1)


async def _produce_stamped(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> int:
    """Partition AHEAD's records stamped one day ago, the others' three days ago (10 ms apart
    along each partition, so the others stay well within ALIGN_MS of each other): AHEAD is
    two days ahead from its first record. Returns how many records went to AHEAD."""
    now = int(time.time() * 1000)
    starts = {p: now - 3 * DAY_MS for p in range(PARTITIONS)}
    starts[AHEAD] = now - DAY_MS
    counts = dict.fromkeys(range(PARTITIONS), 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        pending = []
        for key, value in records:
            p = kafka_partition(key, PARTITIONS)
            stamp = starts[p] + 10 * counts[p]
            counts[p] += 1
            pending.append(
                await producer.send(topic, value, key=key, partition=p, timestamp_ms=stamp)
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts[AHEAD]


async def test_a_partition_far_ahead_is_paused_until_the_others_catch_up(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = [(r.key, r.value) for r in Traffic(TrafficConfig(seed=13, users=300, events=9_000))]
    topology = Topology(
        kafka_bootstrap,
        names,
        processes,
        tmp_path,
        partitions=PARTITIONS,
        extra_env={
            "IDSTREAM_ALIGN_MS": str(ALIGN_MS),
            # Small fetches and stream buffer (Faust settings): few records in flight when the
            # partition is paused, so the bound shows on 3,000 records, not 300,000.
            "CONSUMER_MAX_FETCH_SIZE": "16384",
            "STREAM_BUFFER_MAXSIZE": "256",
        },
    )
    await create_topics(kafka_bootstrap, [topology.topics["events"]], PARTITIONS, CREATE_TIME)
    ahead = await _produce_stamped(kafka_bootstrap, topology.topics["events"], records)
    assert ahead > 2_000
    seen = Seen()
    await topology.start(0)
    watcher = asyncio.create_task(_watch(f"http://127.0.0.1:{topology.ports[0]}/metrics", seen))
    try:
        await topology.wait_done(240)
        await asyncio.sleep(0.3)  # one more look at /metrics, all done
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    topology.stop_all()

    flag = f'idstream_source_paused{{partition="{AHEAD}"}}'
    # Paused: the worker said so while it ran, and counted it.
    assert flag in seen.paused, seen.last
    assert seen.last[f'idstream_source_pauses_total{{partition="{AHEAD}"}}'] >= 1
    assert seen.max_lead_s > ALIGN_MS / 1000
    # ... and resumed: everything was read, nothing is paused or pending at the end.
    assert seen.last[flag] == 0
    assert not any(k.startswith("idstream_source_paused") and v for k, v in seen.last.items())
    # Bounded: only what was in flight when it was paused waited, not the partition's claims.
    print(f"max pending {seen.max_pending}, records ahead {ahead}")
    # (Partition AHEAD sends about 440 claims: one per 7 records.)
    assert seen.max_pending < ahead / 20
    expected, _ = await topology.replayed()
    assert topology.digest() == expected
