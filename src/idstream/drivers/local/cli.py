"""`idstream replay`: process a JSONL file of input records in-process, into RocksDB state.

Drivers layer (entry point). One Kafka record value per line; a line that is not a valid
event goes to the dead letter like any bad record. Writes one JSONL file per output topic.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from idstream.errors import IdstreamError

# How often the progress line is redrawn, in seconds.
_PROGRESS_EVERY = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True, help="JSONL file, one value a line")
    parser.add_argument(
        "--state", type=Path, required=True, help="state directory (RocksDB; created if missing)"
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="directory for <topic>.jsonl output files"
    )
    parser.add_argument(
        "--shuffle-seed",
        type=int,
        default=None,
        help="deliver inter-stage messages in a seeded random interleaving (holds all input "
        "in memory)",
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="simulated install-stage partitions (default 1)"
    )
    parser.add_argument(
        "--flush-every",
        type=int,
        default=2000,
        help="records per RocksDB write batch (default 2000)",
    )
    parser.add_argument("--settings", type=Path, help="settings file (TOML or JSON)")


class Progress:
    """A plain-text progress line on a terminal; elsewhere nothing until the end."""

    def __init__(self, total_bytes: int, stream: IO[str]) -> None:
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self._next = self.started

    def update(self, records: int, done_bytes: int) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now < self._next:
            return
        self._next = now + _PROGRESS_EVERY
        self._draw(records, done_bytes, now)

    def _draw(self, records: int, done_bytes: int, now: float) -> None:
        share = min(done_bytes / self.total, 1.0)
        width = 30
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        rate = records / max(now - self.started, 1e-9)
        self.stream.write(f"\r[{bar}] {share:6.1%} {records:,} records {rate:,.0f}/s")
        self.stream.flush()

    def finish(self, records: int) -> float:
        now = time.perf_counter()
        if self.tty:
            self._draw(records, self.total, now)
            self.stream.write("\n")
        else:
            rate = records / max(now - self.started, 1e-9)
            self.stream.write(f"replayed {records:,} records ({rate:,.0f}/s)\n")
        self.stream.flush()
        return now - self.started


def _lines(file: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each non-empty line without its line ending, with the bytes read so far."""
    done = 0
    for line in file:
        done += len(line)
        value = line.rstrip(b"\r\n")
        if value:
            yield value, done


def run(args: argparse.Namespace) -> int:
    from idstream.codecs import Limits
    from idstream.drivers.local.driver import LocalDriver
    from idstream.drivers.local.sinks import JsonlSink
    from idstream.settings import load_settings
    from idstream.storage.rocks import RocksStore

    try:
        settings = load_settings(args.settings)
        limits = Limits(
            max_record_bytes=settings.max_record_bytes,
            max_future_skew_ms=settings.max_future_skew_ms,
        )
        if args.partitions < 1 or args.flush_every < 1:
            print("idstream replay: --partitions and --flush-every must be >= 1", file=sys.stderr)
            return 2
        total = args.input.stat().st_size
        sink = JsonlSink(args.output)
        store = RocksStore(args.state)
    except (IdstreamError, OSError) as exc:
        print(f"idstream replay: {exc}", file=sys.stderr)
        return 2
    driver = LocalDriver(
        settings.rules(),
        store=store,
        sink=sink,
        partitions=args.partitions,
        shuffle_seed=args.shuffle_seed,
        limits=limits,
        flush_every=args.flush_every,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
    )
    progress = Progress(total, sys.stderr)
    records = 0
    try:
        with open(args.input, "rb", buffering=1 << 20) as file:
            for value, done in _lines(file):
                driver.submit(value)
                records += 1
                if not records & 0xFF:
                    progress.update(records, done)
        driver.run()
        elapsed = progress.finish(records)
        digest = driver.digest()
    finally:
        driver.close()
    counts = ", ".join(f"{topic.value} {n:,}" for topic, n in sink.counts.items())
    print(f"{records:,} records in {elapsed:.1f} s: {records / max(elapsed, 1e-9):,.0f} events/s")
    print(f"outputs: {counts}")
    print(f"state digest: {digest}")
    return 0
