"""The records of a batch, built into Kafka record batches and delivered before the batch is acked.

Driver layer. No Faust `Topic.send` per record: one aiokafka record batch per topic partition.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust
from aiokafka.errors import KafkaError

logger = logging.getLogger(__name__)

# Bytes per Kafka record batch the Outbox builds (the broker's default limit is 1 MiB).
RECORD_BATCH_BYTES = 256 * 1024
# Keys whose partition the Outbox remembers before it starts over.
PARTITION_CACHE = 100_000


class Outbox:
    """The records of one batch, built into one Kafka record batch per topic partition.

    `add` appends a record to the open batch of its partition (aiokafka's `BatchBuilder`: no
    future, no coroutine per record); `delivered` hands every batch to the app's aiokafka
    producer, waits until the broker has acknowledged all of them and returns the offset of
    the last record per (topic, partition). A batch that cannot be delivered (aiokafka gave up
    retrying) halts the process, as kill -9 would: `take_events` acks a batch's records even
    when its body raises, so raising could commit them.
    """

    def __init__(self, app: faust.App, partitions: int) -> None:
        self._app = app
        self._all_partitions = list(range(partitions))
        self._partition_of: dict[bytes, int] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[str, int, Any]] = []

    def _producer(self) -> Any:
        return self._app.producer._ensure_producer()  # type: ignore[attr-defined]

    def _partition(self, key: bytes) -> int:
        # The producer's default partitioner (murmur2, as Java's) over `partitions`, which every
        # idstream topic has (topics.ensure_topics refuses any other count); pure Python, so
        # cached (keys repeat: pools, profiles, installs).
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= PARTITION_CACHE:
                self._partition_of.clear()
            partition = self._producer()._partitioner(key, self._all_partitions, None)
            self._partition_of[key] = partition
        return partition

    def add(
        self, topic: str, key: bytes, value: bytes | None, partition: int | None = None
    ) -> None:
        if partition is None:
            partition = self._partition(key)
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self._producer().create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:
            # Full: keep it for `delivered` (in order) and start the next one, which takes
            # its first record whatever its size.
            self._full.append((topic, partition, builder))
            builder = self._open[tp] = self._producer().create_batch()
            builder.append(timestamp=None, key=key, value=value)

    def discard(self) -> None:
        """Forget every record added since the last delivery (a batch processed again)."""
        self._full, self._open = [], {}

    async def delivered(self) -> dict[tuple[str, int], int]:
        batches = [*self._full, *((t, p, b) for (t, p), b in self._open.items())]
        self._full, self._open = [], {}
        if not batches:
            return {}
        producer = self._producer()
        try:
            sent = [
                (
                    topic,
                    partition,
                    builder.record_count(),
                    await producer.send_batch(builder, topic, partition=partition),
                )
                for topic, partition, builder in batches
            ]
            await asyncio.gather(*(future for *_, future in sent))
        except (KafkaError, OSError):
            logger.critical("records of a batch could not be delivered; halting", exc_info=True)
            logging.shutdown()
            os._exit(70)
        # Batches of one partition were sent in order, so the last one's offsets are the highest.
        return {(t, p): future.result().offset + count - 1 for t, p, count, future in sent}
