"""The resolver core: install and pool stages with RocksDB state, in process, on simulated traffic.

Runs `idstream.drivers.local.LocalDriver` over a `RocksStore` in a fresh directory per run.
Inputs are generated before the clock starts; outputs are encoded to bytes (what producing
them would need) and dropped. Reported: events/s of wall time and events per CPU-second of
this process, the per-core figure (the driver is single-threaded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter

from bench.harness import Report, Sample
from idstream.codecs import encode_record
from idstream.domain.messages import Output
from idstream.simulate import TrafficConfig
from idstream.simulate.traffic import SimRecord, Traffic

DESCRIPTION = "install + pool stages, RocksDB state, in-process driver, default simulated mix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=50_000, help="input records per run")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument(
        "--malformed-share", type=float, default=0.0, help="share of malformed input (0..1)"
    )
    parser.add_argument(
        "--store",
        choices=("rocks", "dict"),
        default="rocks",
        help="state store: RocksDB (default) or in-memory dicts, to isolate the RocksDB cost",
    )


class EncodingSink:
    """Encodes every output as a producer would, counts it, keeps nothing."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.bytes = 0
        self.skips: Counter[str] = Counter()

    def emit(self, output: Output) -> None:
        if output.value is not None:
            self.bytes += len(encode_record(output.value))
        self.counts[output.topic.value] += 1

    def skip(self, reason: str, topic: str, partition: int, offset: int) -> None:
        """An input skipped by a SPEC rule: no output, counted apart."""
        self.skips[reason] += 1

    def close(self) -> None:
        """Nothing to release."""


def once(records: list[SimRecord], store_kind: str = "rocks") -> Sample:
    from idstream.drivers.local.driver import LocalDriver, Store
    from idstream.storage.memory import DictStore
    from idstream.storage.rocks import RocksStore

    with tempfile.TemporaryDirectory(prefix="idstream-bench-core-") as tmp:
        store: Store = RocksStore(f"{tmp}/state") if store_kind == "rocks" else DictStore()
        sink = EncodingSink()
        driver = LocalDriver(store=store, sink=sink)
        wall, cpu = time.perf_counter(), time.process_time()
        for record in records:
            driver.submit(record.value, key=record.key, record_timestamp=record.record_ms)
        driver.run()
        store.flush()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        store.close()
    outputs = sum(sink.counts.values())
    return Sample(
        len(records),
        wall,
        {
            "per CPU-second": round(len(records) / cpu),
            "outputs": outputs,
            "dead letters": sink.counts["dead-letter"],
            "skipped": sum(sink.skips.values()),
            "claims": driver.stats.claims,
        },
    )


def run(args: argparse.Namespace) -> Report:
    config = TrafficConfig(
        events=args.events, users=args.users, malformed_share=args.malformed_share
    )
    records = list(Traffic(config))
    report = Report(
        "core" if args.store == "rocks" else f"core-{args.store}",
        DESCRIPTION,
        params={
            "events": args.events,
            "users": args.users,
            "malformed_share": args.malformed_share,
            "store": args.store,
            "seed": config.seed,
        },
    )
    for _ in range(args.runs):
        report.samples.append(once(records, args.store))
    cpu = sorted(int(s.extra["per CPU-second"]) for s in report.samples)
    report.notes.append(
        f"events per CPU-second of the process (per core): median {cpu[len(cpu) // 2]:,}"
    )
    return report
