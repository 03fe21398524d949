"""Bounded dead letters on a real broker (issue #11 item 4): a 5 MB input record becomes a
dead letter with a prefix, the length and the sha256, which the dead-letter topic (created by
the worker with a matching max.message.bytes) accepts; the worker goes on."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from idstream.codecs import DEFAULT_LIMITS
from idstream.domain.messages import DEAD_LETTER_MAX_BYTES, dead_letter_topic_bytes
from tests.support.kafka import INPUT_CONFIG, create_topics
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration]

INPUT_MAX_BYTES = 8 * 1024 * 1024  # the test's input topic takes records up to 8 MiB


def event(event_id: str, padding: int = 0, minute: int = 0) -> bytes:
    """An appLaunch, made `padding` bytes longer by a standard property (valid JSON)."""
    doc = {
        "eventId": event_id,
        "type": "appLaunch",
        "timestamp": 1_767_225_600_000 + minute * 60_000,
        "appCode": "shop",
        "pushRegistrationId": "device-1",
        "platform": "x" * padding,
    }
    return orjson.dumps(doc)


async def topic_config(bootstrap: str, topic: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for _, _, _, _, entries in response.resources:
        for entry in entries:
            if entry[0] == name:
                return str(entry[1])
    raise AssertionError(f"{topic} has no {name}")


async def test_oversize_records_at_and_above_the_limits_become_bounded_dead_letters(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    limit = DEFAULT_LIMITS.max_record_bytes
    at_input_limit = event("at-limit", limit - len(event("at-limit")) + 1)  # 1 byte over
    above_dead_letter_limit = event("above", DEAD_LETTER_MAX_BYTES)  # ~256 KiB + 120 B
    five_mb = event("five-mb", 5_000_000)
    assert len(at_input_limit) == limit + 1
    records = [
        (b"device-1", event("before")),
        (b"device-1", at_input_limit),
        (b"device-1", above_dead_letter_limit),
        (b"device-1", five_mb),
        (b"device-1", event("after", minute=2)),  # launches a minute apart are both logged
    ]
    topology = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=1)
    await create_topics(
        kafka_bootstrap,
        [topology.topics["events"]],
        1,
        {**INPUT_CONFIG, "max.message.bytes": str(INPUT_MAX_BYTES)},
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=INPUT_MAX_BYTES
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topology.topics["events"], value, key=key)
    finally:
        await producer.stop()

    await topology.start(0)
    await topology.wait_done(300)
    topology.stop_all()

    assert await topic_config(
        kafka_bootstrap, topology.topics["dead_letter"], "max.message.bytes"
    ) == str(dead_letter_topic_bytes())
    dead = {}
    for _, found in await topology.read(topology.topics["dead_letter"]):
        assert found is not None
        assert len(found) < dead_letter_topic_bytes()
        letter = orjson.loads(found)
        dead[letter["originalLength"]] = letter
    assert sorted(dead) == sorted(
        len(r) for r in (at_input_limit, above_dead_letter_limit, five_mb)
    )

    whole = dead[len(at_input_limit)]
    assert whole["reason"] == "oversize"
    assert whole["truncated"] is False
    assert base64.b64decode(whole["originalBase64"]) == at_input_limit
    for raw in (above_dead_letter_limit, five_mb):
        letter = dead[len(raw)]
        assert letter["reason"] == "oversize"
        assert letter["truncated"] is True
        assert base64.b64decode(letter["originalBase64"]) == raw[:DEAD_LETTER_MAX_BYTES]
        assert letter["originalSha256"] == hashlib.sha256(raw).hexdigest()
        assert base64.b64decode(letter["key"]) == b"device-1"

    # The worker went on: the events around them were resolved.
    resolved = [
        orjson.loads(v) for _, v in await topology.read(topology.topics["resolved_events"]) if v
    ]
    assert sorted(r["eventId"] for r in resolved) == ["after", "before"]
