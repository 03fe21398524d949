"""The Kafka ceiling: a stateless aiokafka consume, orjson decode, produce loop on a real broker.

What any Python stage on this machine can reach at best: no state, no rules, one process.
Broker: $KAFKA_BOOTSTRAP_SERVERS if set, else a throwaway `idstream.devbroker.LocalKafka`.
`python -m bench.ceiling BOOTSTRAP SOURCE SINK PARTITIONS EVENTS` runs one loop as a process
of its own (how `bench peers` runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import Report, Sample
from idstream.simulate import TrafficConfig
from idstream.simulate.traffic import Traffic

DESCRIPTION = "raw aiokafka consume + orjson decode + produce one record per input (no state)"
_PRODUCER = {"linger_ms": 20, "max_batch_size": 512 * 1024, "acks": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="input records (N)")
    parser.add_argument("--partitions", type=int, default=6, help="input partitions (P)")


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """Bootstrap servers of the broker to use; starts and stops a local one if none is given."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    from idstream.devbroker import LocalKafka

    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers


# How idstream creates its input topic (drivers/faust/topics.py): the broker stamps records.
INPUT_CONFIG = {"message.timestamp.type": "LogAppendTime"}


async def _create_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create `names` with `partitions` each; `configs` gives topic-level config by name.
    Replicated as idstream replicates its topics (one broker: 1; three: 3, min.insync 2)."""
    from idstream.drivers.faust.topics import cluster_size, replicated
    from idstream.settings import Settings

    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        brokers = await cluster_size(admin)
        topics = []
        for n in names:
            factor, config = replicated(Settings(), configs.get(n, {}), brokers)
            topics.append(NewTopic(n, partitions, factor, topic_configs=config))
        await admin.create_topics(topics)
    finally:
        await admin.close()


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def traffic_config(events: int) -> TrafficConfig:
    """The simulated input of the Kafka benchmarks: default mix, one user per 100 events."""
    return TrafficConfig(events=events, users=max(1000, events // 100))


async def fill(bootstrap: str, topic: str, events: int) -> Sample:
    """Produce the simulated input (timed too: the producer-only figure)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **_PRODUCER)
    await producer.start()
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in Traffic(traffic_config(events)):
            pending.append(await producer.send(topic, record.value, key=record.key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return Sample(events, time.perf_counter() - started)


async def pipe(bootstrap: str, source: str, sink: str, partitions: int, events: int) -> Sample:
    """Consume every input record, decode it, produce one output; time until all are flushed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **_PRODUCER)
    await consumer.start()
    await producer.start()
    try:
        # Manual assignment: no group join in the measurement.
        consumer.assign([TopicPartition(source, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        seen = 0
        bad = 0
        loads, dumps, send = orjson.loads, orjson.dumps, producer.send
        started = time.perf_counter()
        while seen < events:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    try:
                        value = dumps(loads(record.value))
                    except orjson.JSONDecodeError:
                        bad += 1
                        value = record.value
                    await send(sink, value, key=record.key)
                seen += len(records)
        await producer.flush()
        return Sample(seen, time.perf_counter() - started, {"undecodable": bad})
    finally:
        await producer.stop()
        await consumer.stop()


async def _measure(bootstrap: str, args: argparse.Namespace, report: Report) -> None:
    tag = uuid.uuid4().hex[:8]
    source = f"bench.ceiling.in.{tag}"
    sinks = [f"bench.ceiling.out.{tag}.{i}" for i in range(args.runs)]
    await _create_topics(bootstrap, [source, *sinks], args.partitions, {source: INPUT_CONFIG})
    try:
        produced = await fill(bootstrap, source, args.events)
        report.notes.append(
            f"filling the input (producer only) ran at {produced.rate:,.0f} events/s"
        )
        for sink in sinks:
            report.samples.append(await pipe(bootstrap, source, sink, args.partitions, args.events))
    finally:
        with contextlib.suppress(Exception):
            await _delete_topics(bootstrap, [source, *sinks])


def run(args: argparse.Namespace) -> Report:
    report = Report(
        "ceiling",
        DESCRIPTION,
        params={"events": args.events, "partitions": args.partitions, "producer": _PRODUCER},
    )
    with broker() as bootstrap:
        report.params["broker"] = (
            "KAFKA_BOOTSTRAP_SERVERS" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "LocalKafka"
        )
        asyncio.run(_measure(bootstrap, args, report))
    return report


def _main(argv: list[str]) -> None:
    """`python -m bench.ceiling BOOTSTRAP SOURCE SINK PARTITIONS EVENTS`: one `pipe` as a
    process of its own (`bench peers` times it from spawn), its sample printed as JSON."""
    bootstrap, source, sink, partitions, events = argv
    sample = asyncio.run(pipe(bootstrap, source, sink, int(partitions), int(events)))
    result = {"events": sample.events, "seconds": sample.seconds, **sample.extra}
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    _main(sys.argv[1:])
