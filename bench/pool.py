"""One pool on one core: the claims and heartbeats of a single pool, from 6 interleaved sources.

Simulated traffic (every appCode in the default pool) goes through the in-process driver over
`--partitions` input partitions once, untimed, and every claim and heartbeat its pool receives
is recorded in arrival order. Each timed run then feeds that recording to the pool stage
alone (`Steps.pool_message`, as a worker's pool agent calls it, each claim isolated) over a
fresh RocksDB store. One pool is one partition of the pool topic, so this rate is the ceiling
of one app family however many workers run. Reported: claims per second of wall time and per
CPU-second of this process.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from bench.core import EncodingSink
from bench.harness import Report, Sample
from idstream.domain.messages import Claim, Heartbeat, StageResult
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.steps import Steps
from idstream.simulate import TrafficConfig
from idstream.simulate.traffic import Traffic
from idstream.storage.memory import DictStore
from idstream.storage.rocks import RocksStore

DESCRIPTION = "the pool stage alone: one pool's claims and heartbeats from 6 sources, RocksDB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="input records simulated")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=6, help="input partitions (sources)")


def record(config: TrafficConfig, partitions: int) -> list[Claim | Heartbeat]:
    """Every claim and heartbeat the pool stage receives in one in-process run, in order."""
    driver = LocalDriver(store=DictStore(), sink=EncodingSink(), partitions=partitions)
    recorder = _Recorder(driver.steps)
    driver.steps = recorder  # type: ignore[assignment]
    for item in Traffic(config):
        driver.submit(item.value, key=item.key, record_timestamp=item.record_ms)
    driver.drain()
    return recorder.received


class _Recorder:
    """The driver's steps, recording what the pool stage receives."""

    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.received: list[Claim | Heartbeat] = []

    def pool_message(self, message: Claim | Heartbeat) -> StageResult:
        self.received.append(message)
        return self.steps.pool_message(message)

    def __getattr__(self, name: str) -> object:
        return getattr(self.steps, name)


def once(messages: list[Claim | Heartbeat], partitions: int) -> Sample:
    with tempfile.TemporaryDirectory(prefix="idstream-bench-pool-") as tmp:
        store = RocksStore(f"{tmp}/state")
        # The install tables are opened too (Steps needs them) but stay empty.
        driver = LocalDriver(store=store, sink=EncodingSink(), partitions=partitions)
        steps: Steps = driver.steps
        claims = sum(isinstance(m, Claim) for m in messages)
        outputs = decisions = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for number, message in enumerate(messages, 1):
            result = steps.pool_message(message)
            outputs += len(result.outputs)
            decisions += len(result.messages)
            if number % 2000 == 0:
                store.flush()
        store.flush()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        store.close()
    return Sample(
        claims,
        wall,
        {
            "claims per CPU-second": round(claims / cpu),
            "heartbeats": len(messages) - claims,
            "outputs": outputs,
            "decisions": decisions,
        },
    )


def run(args: argparse.Namespace) -> Report:
    config = TrafficConfig(events=args.events, users=args.users)
    messages = record(config, args.partitions)
    report = Report(
        "pool",
        DESCRIPTION,
        params={
            "events": args.events,
            "users": args.users,
            "partitions": args.partitions,
            "seed": config.seed,
        },
        unit="claims/s",
    )
    for _ in range(args.runs):
        report.samples.append(once(messages, args.partitions))
    cpu = sorted(int(s.extra["claims per CPU-second"]) for s in report.samples)
    report.notes.append(f"claims per CPU-second (one core): median {cpu[len(cpu) // 2]:,}")
    return report
