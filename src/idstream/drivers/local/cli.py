"""`idstream replay`: process a file of input records in-process, into RocksDB state.

Drivers layer (entry point). One record per line, in the envelope form (`idstream export`:
partition, offset, record time, key, headers and value, as Kafka had them) or the plain form
(one record value per line); the first line decides (codecs/envelope.py). A value that is not a
valid event goes to the dead letter like any bad record. Appends one JSONL file per output
topic. Into existing state, a replay continues: its records come after the state's own (plain
form), or are recognised by their offsets when the state has them already (envelope form).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from idstream.domain.erasure import NOTHING_ERASED, Erased
from idstream.domain.identities import key_fingerprint
from idstream.errors import IdstreamError

# How often the progress line is redrawn, in seconds.
_PROGRESS_EVERY = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", type=Path, required=True, help="JSONL file: envelopes or one value a line"
    )
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
        "--partitions",
        type=int,
        default=None,
        help="input partitions (default: the settings' partitions for envelopes, 1 for plain "
        "values)",
    )
    parser.add_argument(
        "--flush-every",
        type=int,
        default=2000,
        help="records per RocksDB write batch (default 2000)",
    )
    parser.add_argument(
        "--register",
        type=Path,
        help="a forget register from an earlier run of the same log (its forget-register.jsonl):"
        " nothing of a person it names is published again",
    )
    parser.add_argument(
        "--no-drain",
        action="store_true",
        help="leave the claims that wait for other partitions pending at the end (their "
        "events held), for a later run that continues the state with the rest of the log; "
        "without it, the run ends with tick records of its own so that everything is applied",
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


def _register(path: Path) -> Erased:
    """A forget-register.jsonl as `idstream replay` writes it ({"key", "value"} per line)."""
    import orjson

    from idstream.domain.erasure import read_register

    records = []
    with open(path, "rb") as file:
        for line in file:
            if line.strip():
                doc = orjson.loads(line)
                records.append((str(doc["key"]), doc["value"]))
    return read_register(records)


def _first_offsets(path: Path) -> dict[int, int]:
    """The offset of each partition's first envelope in the file that gives one."""
    from idstream.codecs.envelope import decode_envelope

    first: dict[int, int] = {}
    with open(path, "rb", buffering=1 << 20) as file:
        for line in file:
            if line.strip():
                record = decode_envelope(line.strip())
                first.setdefault(record.partition, record.offset)
    return first


def _first_line(path: Path) -> bytes:
    with open(path, "rb") as file:
        for line in file:
            if line.strip():
                return line.strip()
    return b""


def run(args: argparse.Namespace) -> int:
    import logging

    from idstream.codecs.envelope import EnvelopeError, decode_envelope, is_envelope
    from idstream.drivers.local.driver import LocalDriver
    from idstream.drivers.local.sinks import JsonlSink
    from idstream.settings import load_settings
    from idstream.storage.rocks import RocksStore

    logging.basicConfig(level=logging.WARNING, format="idstream replay: %(message)s")
    try:
        settings = load_settings(args.settings)
        settings.personal_key()  # the same keyed hashes as the deployment's workers
        envelopes = is_envelope(_first_line(args.input))
        partitions = args.partitions or (settings.partitions if envelopes else 1)
        if partitions < 1 or args.flush_every < 1:
            print("idstream replay: --partitions and --flush-every must be >= 1", file=sys.stderr)
            return 2
        total = args.input.stat().st_size
        register = _register(args.register) if args.register else NOTHING_ERASED
        # The state first: a refused state directory leaves the output files untouched.
        store = RocksStore(args.state)
        try:
            store.bind_key(key_fingerprint(settings.personal_key()))
        except IdstreamError:
            store.close()
            raise
        sink = JsonlSink(args.output)
    except (IdstreamError, OSError) as exc:
        print(f"idstream replay: {exc}", file=sys.stderr)
        return 2
    driver = LocalDriver(
        settings.rules(),
        store=store,
        sink=sink,
        partitions=partitions,
        shuffle_seed=args.shuffle_seed,
        limits=settings.limits(),
        flush_every=args.flush_every,
        topic=settings.topics.events,
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        register=register,
    )
    if driver.resumed:
        print(f"idstream replay: continuing the existing state in {args.state}", file=sys.stderr)
        if envelopes:
            # Before anything is applied: refused, the run leaves state and outputs as they were.
            try:
                driver.check_offsets(_first_offsets(args.input))
            except (ValueError, EnvelopeError) as exc:
                driver.close()
                print(f"idstream replay: {exc}", file=sys.stderr)
                return 2
    progress = Progress(total, sys.stderr)
    records = 0
    try:
        with open(args.input, "rb", buffering=1 << 20) as file:
            for number, (value, done) in enumerate(_lines(file), start=1):
                if envelopes:
                    try:
                        record = decode_envelope(value)
                    except EnvelopeError as exc:
                        print(f"idstream replay: line {number}: {exc}", file=sys.stderr)
                        return 2
                    driver.submit_record(record)
                else:
                    driver.submit(value)
                records += 1
                if not records & 0xFF:
                    progress.update(records, done)
        driver.drain(ticks=not args.no_drain)
        elapsed = progress.finish(records)
        digest = driver.digest()
    except ValueError as exc:
        print(f"idstream replay: {exc}", file=sys.stderr)
        return 2
    finally:
        driver.close()
    stats = driver.stats
    counts = ", ".join(f"{topic.value} {n:,}" for topic, n in sink.counts.items())
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in stats.skipped.items() if n)
    print(f"{records:,} records in {elapsed:.1f} s: {records / max(elapsed, 1e-9):,.0f} events/s")
    if stats.redelivered:
        print(f"already in the state (skipped): {stats.redelivered:,}")
    print(f"outputs: {counts}")
    print(f"skipped by a rule: {skipped or 'none'}")
    print(f"state digest: {digest}")
    return 0
