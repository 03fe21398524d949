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
    """aiokafka's idempotent producer retries a batch until the broker takes it, however long
    an outage lasts (it never expires one), so the sink bounds what it holds unacknowledged:
    past `max_pending_bytes` a request is refused at once (DeliveryError, answered 503)."""

    def __init__(self, settings: Settings, timeout_s: float, max_pending_bytes: int) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._max_pending = max_pending_bytes
        self._pending = 0  # bytes handed to the producer and not yet acknowledged
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
        """Flush, waiting at most the produce deadline: records still unacknowledged then
        belong to requests answered 503, which the SDKs send again."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        stopping = asyncio.ensure_future(producer.stop())
        try:
            await asyncio.wait_for(asyncio.shield(stopping), self._timeout_s)
        except TimeoutError:
            logger.warning(
                "stopping with %d bytes Kafka has not acknowledged (answered 503, sent again "
                "by the SDKs)",
                self._pending,
            )
            # The idempotent producer would retry them forever: end its sender, then stop.
            await producer._sender.close()
            await stopping

    async def deliver(self, events: Sequence[Record], dead_letters: Sequence[Record]) -> None:
        """Produce the records (input topic, then dead letters) and wait for every ack."""
        topics = self._settings.topics
        if self._pending > self._max_pending:
            raise DeliveryError(
                f"{self._pending} bytes still unacknowledged by Kafka (limit {self._max_pending})"
            )
        sent: list[asyncio.Future[Any]] = []

        async def send_all() -> None:
            # One send per record: the producer's accumulator joins the records of concurrent
            # requests in shared batches. Whole batches (send_batch) queue one per partition
            # at a time, so concurrent requests timed out waiting for each other.
            for topic, records in ((topics.events, events), (topics.dead_letter, dead_letters)):
                for record in records:
                    future = await self._producer.send(topic, record.value, key=record.key)
                    size = len(record.value)
                    self._pending += size
                    future.add_done_callback(lambda f, size=size: self._settled(f, size))
                    sent.append(future)
            # Not gather: cancelled at the deadline, it would cancel the records' futures,
            # which the producer keeps sending.
            if sent:
                await asyncio.wait(sent)
            for future in sent:
                future.result()

        try:
            await asyncio.wait_for(send_all(), self._timeout_s)
        except TimeoutError as exc:
            raise DeliveryError(f"Kafka did not acknowledge within {self._timeout_s:g}s") from exc
        except KafkaError as exc:
            raise DeliveryError(f"Kafka refused a record: {exc!r}") from exc

    def _settled(self, future: asyncio.Future[Any], size: int) -> None:
        self._pending -= size
        # Read a late failure here, not in asyncio's "exception never retrieved" log.
        if not future.cancelled():
            future.exception()
