"""A broker outage: the gateway answers 503 (SDKs retry 5xx), within its produce deadline and
well inside the SDKs' 15 s request timeout, and never a 200 for what Kafka did not store.

The test starts a broker of its own (the session's is shared) and stops it mid-test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from idstream.devbroker import LocalKafka
from idstream.errors import BrokerUnavailableError
from idstream.gateway.intake import Record
from idstream.gateway.kafka import DeliveryError, KafkaSink
from idstream.settings import Settings
from tests.support.gateway import gateway_settings, in_process_gateway
from tests.support.names import UniqueNames

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRODUCE_TIMEOUT_MS = 3_000


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    kafka = LocalKafka(ready_timeout=90)
    try:
        kafka.start()
    except BrokerUnavailableError as exc:
        pytest.fail(f"no Kafka broker of its own for the outage test: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()


def track(message_id: str) -> dict[str, object]:
    return {"type": "track", "event": "x", "messageId": message_id, "anonymousId": "anon-1"}


async def test_a_broker_outage_is_a_503_within_the_deadline(
    own_broker: LocalKafka, names: UniqueNames
) -> None:
    settings = gateway_settings(
        own_broker.bootstrap_servers, names, gateway_produce_timeout_ms=PRODUCE_TIMEOUT_MS
    )
    # A second sink that may hold almost nothing unacknowledged.
    small = KafkaSink(settings, PRODUCE_TIMEOUT_MS / 1000, max_pending_bytes=100)
    await small.start()
    record = Record(b"anon-1", b"x" * 200)
    try:
        await small.deliver([record], [])  # acknowledged; the sink knows the partitions now
        await outage(own_broker, settings, small, record)
    finally:
        await small.stop()


async def outage(broker: LocalKafka, settings: Settings, small: KafkaSink, record: Record) -> None:
    async with in_process_gateway(settings) as gateway:
        assert (await gateway.post("/v1/track", track("before"))).status == 200
        await asyncio.to_thread(broker.stop)
        started = time.monotonic()
        response = await gateway.post("/v1/track", track("during"))
        elapsed = time.monotonic() - started
        assert response.status == 503
        assert (await response.json())["code"] == "unavailable"
        assert elapsed < PRODUCE_TIMEOUT_MS / 1000 + 5, elapsed
        # Still answering, still refusing: a batch is no different.
        batch = {"batch": [track("a"), track("b")]}
        assert (await gateway.post("/v1/batch", batch)).status == 503

    # The producer retries forever during an outage; past its bound the sink refuses at once.
    with pytest.raises(DeliveryError, match="did not acknowledge"):
        await small.deliver([record], [])
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="unacknowledged"):
        await small.deliver([record], [])
    assert time.monotonic() - started < 1
    started = time.monotonic()
    await small.stop()  # bounded, although Kafka never acknowledged
    assert time.monotonic() - started < PRODUCE_TIMEOUT_MS / 1000 + 5
