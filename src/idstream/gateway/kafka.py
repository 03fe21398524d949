"""The gateway's Kafka side: topics made as the worker makes them, and an acks=all producer.

Adapter layer. `deliver` returns only when the broker has acknowledged every record of a
request (acks=all, idempotent producer), so a 200 never precedes storage; it raises
`DeliveryError` when that does not happen within the deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from idstream.drivers.faust.topics import client_options, ensure_topics
from idstream.errors import IdstreamError
from idstream.gateway.intake import Record
from idstream.settings import Settings

logger = logging.getLogger(__name__)


class DeliveryError(IdstreamError):
    """Kafka did not acknowledge every record of a request in time. Retriable: the client
    sends the request again (5xx), and eventIds make the records it already stored no-ops."""

    retriable = True


class KafkaSink:
    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._producer: Any = None

    async def start(self) -> None:
        """Create missing topics exactly as `idstream worker` does, then connect."""
        await ensure_topics(self._settings)
        timeout_ms = max(1, int(self._timeout_s * 1000))
        self._producer = AIOKafkaProducer(
            **client_options(self._settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=timeout_ms,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def deliver(self, events: Sequence[Record], dead_letters: Sequence[Record]) -> None:
        """Produce the records (input topic, then dead letters) and wait for every ack."""
        topics = self._settings.topics
        sent: list[asyncio.Future[Any]] = []

        async def send_all() -> None:
            for topic, records in ((topics.events, events), (topics.dead_letter, dead_letters)):
                for record in records:
                    future = await self._producer.send(topic, record.value, key=record.key)
                    # Read a late failure here, not in asyncio's "never retrieved" log.
                    future.add_done_callback(_consume)
                    sent.append(future)
            await asyncio.gather(*sent)

        try:
            await asyncio.wait_for(send_all(), self._timeout_s)
        except TimeoutError as exc:
            raise DeliveryError(f"Kafka did not acknowledge within {self._timeout_s:g}s") from exc
        except KafkaError as exc:
            raise DeliveryError(f"Kafka refused a record: {exc!r}") from exc


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
