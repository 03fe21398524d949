"""Small aiokafka helpers for tests: create topics, produce, read a topic, delete records."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError, for_code

from idstream.drivers.faust.topics import cluster_size, replicated
from idstream.settings import Settings

# How idstream creates its input topic (drivers/faust/topics.py): the broker stamps records.
INPUT_CONFIG = {"message.timestamp.type": "LogAppendTime"}


async def create_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int = 1,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the topics, replicated as idstream replicates its own (`Settings.replication`
    for the brokers the cluster lists); existing ones are left alone."""
    names = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    try:
        while True:
            factor, full = replicated(Settings(), configs or {}, await cluster_size(admin))
            response = await admin.create_topics(
                [NewTopic(name, partitions, factor, topic_configs=full) for name in names]
            )
            errors = [
                (name, code, rest)
                for name, code, *rest in response.topic_errors
                if code and code != TopicAlreadyExistsError.errno
            ]
            # A KRaft broker that just started has "0 brokers registered" for a moment.
            starting = all(code == InvalidReplicationFactorError.errno for _, code, _ in errors)
            if errors and starting and loop.time() < deadline:
                await asyncio.sleep(0.3)
                continue
            for name, code, rest in errors:
                raise for_code(code)(f"cannot create {name}: {rest}")
            return
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], rate: float = 0
) -> None:
    """Send (key, value) records in order and wait until all are acknowledged; with `rate`,
    no faster than `rate` a second, as live producers would.

    One idempotent producer for all: through a broker outage or failover it holds and
    retries the records (up to 3 minutes), neither losing nor doubling one."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=180_000,
    )
    await producer.start()
    try:
        # One producer keeps the order per partition; waiting only at the end batches sends.
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending = []
        for n, (key, value) in enumerate(records):
            pending.append(await producer.send(topic, value, key=key))
            # Pace by the clock, never by sleeping a fixed time per record.
            ahead = started + (n + 1) / rate - loop.time() if rate > 0 else 0
            if ahead > 0.01:
                await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, in order (asking the broker when the consumer has no metadata)."""
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[TopicPartition, int]:
    """The offsets `group` has committed on `topic` (partitions without a commit are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def all_committed(bootstrap: str, group: str, topic: str) -> bool:
    """True when `group` has committed every record now in `topic`."""
    ends = {tp: end for tp, end in (await end_offsets(bootstrap, topic)).items() if end > 0}
    committed = await committed_offsets(bootstrap, group, topic)
    return all(committed.get(tp, -1) >= end for tp, end in ends.items())


async def alter_topic_configs(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    """Set `topic`'s configuration overrides to `config` (AlterConfigs replaces all of them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for response in await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, config)]
        ):
            for code, message, *_ in response.resources:
                if code:
                    raise for_code(code)(f"cannot alter {topic}: {message}")
    finally:
        await admin.close()


async def delete_all_records(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """Delete every record now in `topic` (move each log start to the end); return the ends.

    Kafka refuses DeleteRecords on a compact-only topic (PolicyViolation), so the topic's
    cleanup.policy becomes "compact,delete" first (AlterConfigs replaces all overrides).
    """
    ends = await end_offsets(bootstrap, topic)
    await alter_topic_configs(bootstrap, topic, {"cleanup.policy": "compact,delete"})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items()})
    finally:
        await admin.close()
    return ends


async def partition_leaders(bootstrap: str, topics: Iterable[str]) -> dict[int, int]:
    """How many partitions of `topics` each broker (node id) leads now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        counts: dict[int, int] = defaultdict(int)
        for topic in await admin.describe_topics(list(topics)):
            for partition in topic.get("partitions", ()):
                counts[partition["leader"]] += 1
        return dict(counts)
    finally:
        await admin.close()


async def replication(bootstrap: str, topics: Iterable[str]) -> dict[str, tuple[int, str]]:
    """Per topic: the fewest replicas of any of its partitions, and its min.insync.replicas."""
    names = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        replicas = {
            t["topic"]: min((len(p["replicas"]) for p in t.get("partitions", ())), default=0)
            for t in await admin.describe_topics(names)
        }
        insync: dict[str, str] = {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        for response in await admin.describe_configs(resources):
            for result in response.to_object()["resources"]:
                for entry in result["config_entries"]:
                    if entry["config_names"] == "min.insync.replicas":
                        insync[result["resource_name"]] = entry["config_value"]
        return {n: (replicas.get(n, 0), insync.get(n, "")) for n in names}
    finally:
        await admin.close()


class TopicReader:
    """Reads a whole topic from the beginning in the background (no consumer group).

    `values[key]` lists the values of a key in the order they arrived.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.values: dict[bytes, list[bytes]] = defaultdict(list)
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def latest(self) -> dict[bytes, bytes]:
        return {key: vals[-1] for key, vals in self.values.items() if vals}

    async def __aenter__(self) -> TopicReader:
        # Short metadata refresh so partitions created later are seen quickly.
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(self._consumer))
        return self

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            self.values[record.key].append(record.value)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


async def _records(bootstrap: str, topic: str) -> list[Any]:
    """Every record now in `topic`, partition by partition, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend(batch.get(tp, []))
        return out
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) now in `topic`, partition by partition, in offset order."""
    return [(m.key, m.value) for m in await _records(bootstrap, topic)]


async def record_positions(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """(partition, offset) of every record now in `topic` (ticks included)."""
    return [(m.partition, m.offset) for m in await _records(bootstrap, topic)]


async def read_from(
    bootstrap: str, topic: str, starts: dict[TopicPartition, int]
) -> list[tuple[bytes | None, bytes | None]]:
    """The records of `topic` from the given offset of each partition on (0 where none given)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, topic)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        for tp in tps:
            consumer.seek(tp, starts.get(tp, 0))
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend((m.key, m.value) for m in batch.get(tp, []))
        return out
    finally:
        await consumer.stop()
