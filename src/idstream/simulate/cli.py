"""`idstream simulate`: write seeded SDK traffic to a JSONL file or to a Kafka topic.

Entry-point layer: parses options, drives `idstream.simulate.generate`, shows progress on
stderr and prints what it produced. aiokafka is imported only when producing to Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from idstream.errors import ConfigurationError, IdstreamError
from idstream.settings import Settings
from idstream.simulate.config import TrafficConfig
from idstream.simulate.traffic import SimRecord, Traffic, TrafficStats

# Unacknowledged sends allowed before waiting for the broker; bounds memory.
_IN_FLIGHT = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--users", type=int, default=1000, help="simulated people (default 1000)")
    parser.add_argument("--events", type=int, default=10_000, help="records (default 10000)")
    parser.add_argument(
        "--app-codes",
        default="shop,shop-tablet",
        help="comma-separated appCodes the users spread over (default shop,shop-tablet)",
    )
    parser.add_argument(
        "--malformed-share", type=float, default=0.0, help="share of malformed records (0..1)"
    )
    parser.add_argument(
        "--junk-share",
        type=float,
        default=0.02,
        help="share of identity events with a blocklisted identity (default 0.02)",
    )
    parser.add_argument(
        "--days",
        type=float,
        default=0.0,
        help="spread the records over this many days of simulated time (default: one record "
        "every 500 ms)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--output",
        type=Path,
        help="write the records to FILE: envelopes (partition, offset, record time, key, "
        "value; what `idstream replay` reads as a Kafka history) or, with --format value, one "
        "record value per line",
    )
    parser.add_argument(
        "--format",
        choices=("envelope", "value"),
        default="envelope",
        help="what --output writes (default envelope)",
    )
    where.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="produce to Kafka (default: IDSTREAM_BOOTSTRAP_SERVERS when --output is not given)",
    )
    parser.add_argument("--topic", help="input topic (default: settings, idstream.events)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="partitions of the topic if it must be created (default: settings, 6)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="records per second (default 0: as fast as possible)",
    )
    parser.add_argument(
        "--record-time",
        choices=("now", "sim"),
        default="now",
        help="Kafka record timestamp: broker time (default) or the simulated arrival time",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress, no summary")


def run(args: argparse.Namespace) -> int:
    try:
        if args.days < 0:
            raise ConfigurationError(f"--days must not be negative, got {args.days}")
        gap = {}
        if args.days:
            gap = {"mean_gap_ms": max(1, round(args.days * 86_400_000 / max(args.events, 1)))}
        config = TrafficConfig(
            seed=args.seed,
            users=args.users,
            events=args.events,
            app_codes=tuple(code.strip() for code in args.app_codes.split(",") if code.strip()),
            malformed_share=args.malformed_share,
            junk_share=args.junk_share,
            **gap,
        )
        if args.rate < 0:
            raise ConfigurationError(f"--rate must not be negative, got {args.rate}")
        traffic = Traffic(config)
        progress = Progress(config.events, sys.stderr, enabled=not args.quiet)
        started = time.perf_counter()
        from idstream.settings import load_settings

        settings = load_settings()
        if args.output is not None:
            target = str(args.output)
            records = progress.wrap(paced(traffic, args.rate))
            if args.format == "value":
                write_file(args.output, records)
            else:
                topic = args.topic or settings.topics.events
                partitions = args.partitions or settings.partitions
                write_envelopes(args.output, records, topic, partitions)
        else:
            bootstrap = args.bootstrap_servers or settings.bootstrap_servers
            topic = args.topic or settings.topics.events
            target = f"{topic} at {bootstrap}"
            records = progress.wrap(paced(traffic, args.rate))
            asyncio.run(
                produce(
                    records,
                    bootstrap,
                    topic,
                    use_sim_time=args.record_time == "sim",
                    partitions=args.partitions or settings.partitions,
                    settings=settings,
                )
            )
        elapsed = time.perf_counter() - started
        progress.close()
    except IdstreamError as exc:
        print(f"idstream simulate: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(summary(traffic.stats, target, elapsed))
    return 0


def write_envelopes(path: Path, records: Iterable[SimRecord], topic: str, partitions: int) -> None:
    """The records as a Kafka history: each in the partition its key goes to, with the
    simulated arrival time as its record time (docs/operations.md, "Replaying a file")."""
    from idstream.codecs.envelope import Envelope, encode_envelope
    from idstream.drivers.partitioner import kafka_partition

    offsets = [0] * partitions
    try:
        with open(path, "wb", buffering=1 << 20) as out:
            for record in records:
                partition = kafka_partition(record.key, partitions)
                envelope = Envelope(
                    topic,
                    partition,
                    offsets[partition],
                    record.record_ms,
                    record.key,
                    (),
                    record.value,
                )
                offsets[partition] += 1
                out.write(encode_envelope(envelope))
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc}") from exc


def write_file(path: Path, records: Iterable[SimRecord]) -> None:
    """One record value per line; values never hold a newline."""
    try:
        with open(path, "wb", buffering=1 << 20) as out:
            write = out.write
            for record in records:
                write(record.value + b"\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot write {path}: {exc}") from exc


async def ensure_topic(
    bootstrap: str, topic: str, partitions: int, settings: Settings | None = None
) -> None:
    """Create `topic` with `partitions` partitions unless it exists already (replicated as
    `settings.replication` says for the brokers the cluster lists)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from idstream.drivers.faust.topics import cluster_size, replicated

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return
        # As idstream creates its input topic: the broker stamps the records (SPEC §5).
        config = {"message.timestamp.type": "LogAppendTime"}
        factor, config = replicated(settings or Settings(), config, await cluster_size(admin))
        # Someone else may create it meanwhile: fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, factor, topic_configs=config)])
    finally:
        await admin.close()


async def produce(
    records: Iterable[SimRecord],
    bootstrap: str,
    topic: str,
    *,
    use_sim_time: bool = False,
    partitions: int = 0,
    settings: Settings | None = None,
) -> None:
    """Send every record, keyed by pushRegistrationId, batching for throughput.

    With `partitions`, a missing topic is first created with that many partitions.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from idstream.errors import BrokerUnavailableError

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
        # Idempotent, acks=all: a broker failing over neither loses nor doubles a record.
        acks="all",
        enable_idempotence=True,
    )
    try:
        await producer.start()
        if partitions:
            await ensure_topic(bootstrap, topic, partitions, settings)
    except KafkaError as exc:
        await producer.stop()
        raise BrokerUnavailableError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            stamp = record.record_ms if use_sim_time else None
            pending.append(
                await producer.send(topic, record.value, key=record.key, timestamp_ms=stamp)
            )
            if len(pending) >= _IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    except KafkaError as exc:
        raise BrokerUnavailableError(f"producing to {topic} at {bootstrap} failed: {exc}") from exc
    finally:
        await producer.stop()


def paced(records: Iterable[SimRecord], rate: float) -> Iterator[SimRecord]:
    """Yield records no faster than `rate` per second (0: unpaced)."""
    if rate <= 0:
        yield from records
        return
    started = time.monotonic()
    for n, record in enumerate(records):
        ahead = n / rate - (time.monotonic() - started)
        if ahead > 0.005:
            time.sleep(ahead)
        yield record


class Progress:
    """A stdlib progress bar on a terminal; a single final line otherwise."""

    def __init__(self, total: int, stream: IO[str], *, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.live = enabled and stream.isatty()
        self.done = 0
        self._started = time.perf_counter()
        self._shown = 0.0

    def wrap(self, records: Iterable[SimRecord]) -> Iterator[SimRecord]:
        for record in records:
            self.done += 1
            if self.live and not self.done & 1023:
                self._show()
            yield record

    def _show(self, end: str = "") -> None:
        now = time.perf_counter()
        if not end and now - self._shown < 0.2:
            return
        self._shown = now
        share = self.done / self.total if self.total else 1.0
        width = 30
        bar = "#" * int(share * width)
        rate = self.done / max(now - self._started, 1e-9)
        self.stream.write(
            f"\rsimulate [{bar:<{width}}] {self.done:,}/{self.total:,} {rate:,.0f} records/s{end}"
        )
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.live:
            self._show(end="\n")
            return
        elapsed = time.perf_counter() - self._started
        rate = self.done / max(elapsed, 1e-9)
        self.stream.write(f"simulate: {self.done:,} records in {elapsed:.2f} s ({rate:,.0f}/s)\n")
        self.stream.flush()


def summary(stats: TrafficStats, target: str, elapsed: float) -> str:
    """Counts per event type, malformed kinds and markers, as a small table."""
    rate = stats.total / max(elapsed, 1e-9)
    lines = [f"{stats.total:,} records to {target} in {elapsed:.2f} s ({rate:,.0f} records/s)"]
    events = {k: v for k, v in stats.labels.items() if not k.startswith("malformed:")}
    for label, count in sorted(events.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {label:<16}{count:>10,}")
    if stats.malformed:
        kinds = ", ".join(
            f"{label.removeprefix('malformed:')} {count:,}"
            for label, count in sorted(stats.labels.items())
            if label.startswith("malformed:")
        )
        lines.append(f"  {'malformed':<16}{stats.malformed:>10,}  ({kinds})")
    junk = stats.flags["junk"] + stats.flags["junk_only"]
    lines.append(f"  {'junk identity':<16}{junk:>10,}  ({stats.flags['junk_only']:,} all junk)")
    lines.append(f"  installs {stats.installs:,}, users {stats.users_seen:,}")
    markers = ", ".join(
        f"{flag} {count:,}"
        for flag, count in sorted(stats.flags.items())
        if flag not in ("junk", "junk_only")
    )
    if markers:
        lines.append(f"  markers: {markers}")
    return "\n".join(lines)
