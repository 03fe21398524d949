"""Rebuild all state from the input topic: reset, then reprocess from the earliest offset.

Driver layer. Run it with every worker stopped. It (1) refuses while the worker group has
members, (2) deletes the internal topics (claims, decisions) and the table changelogs,
(3) deletes the consumer group, so the worker reads the input from its start, (4) removes
the local state directory, then (5) runs a worker until the group has caught up again.
Because every id and decision derives from the input (SPEC §5), the rebuilt state has the
same digest. Output topics are
left alone: a rebuild publishes every output again, with the same keys and content.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import GroupIdNotFound, KafkaError, NonEmptyGroup, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from idstream.drivers.faust.topics import admin_client, changelog_topics, ensure_topics
from idstream.drivers.faust.topics import consumer as kafka_consumer
from idstream.errors import ConfigurationError
from idstream.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _group_members(response: Any, group: str) -> int:
    for entry in response.to_object()["groups"]:
        if entry["group"] == group:
            return len(entry["members"])
    return 0


async def reset(settings: Settings) -> int:
    """Steps 1 to 4 above; returns the number of input records to reprocess."""
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await _retrying(lambda: admin.describe_consumer_groups([settings.app_id]))
        for response in described:
            members = _group_members(response, settings.app_id)
            if members:
                raise ConfigurationError(
                    f"{members} worker(s) of {settings.app_id} are running: stop every worker "
                    "before a rebuild (it replaces their state)"
                )
        # The internal topics and changelogs are deleted, not emptied: Kafka then drops the
        # group's offsets for them, and the worker starts on them as a fresh deployment does.
        existing = set(await admin.list_topics())
        internal = [settings.topics.claims, settings.topics.decisions]
        doomed = [t for t in [*internal, *changelog_topics(settings)] if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
            await _wait_gone(admin.list_topics, doomed)
        await _retrying(lambda: _delete_group(admin, settings.app_id))
    finally:
        await admin.close()
    await ensure_topics(settings)
    inputs = [TopicPartition(settings.topics.events, p) for p in range(settings.partitions)]
    starts = await _offsets(settings, inputs, end=False)
    shutil.rmtree(Path(settings.data_dir), ignore_errors=True)
    input_ends = await _offsets(settings, inputs, end=True)
    return sum(input_ends[tp] - starts[tp] for tp in inputs)


async def _offsets(settings: Settings, tps: list[TopicPartition], *, end: bool) -> dict[Any, int]:
    consumer = kafka_consumer(settings)
    await consumer.start()
    try:
        found = await (consumer.end_offsets(tps) if end else consumer.beginning_offsets(tps))
        return dict(found)
    finally:
        await consumer.stop()


async def _delete_group(admin: Any, group: str) -> None:
    """Delete the worker group and its offsets: the rebuild then starts as a new deployment.

    aiokafka's admin client has no call for DeleteGroups, so the request goes out directly.
    """
    node = await admin.find_coordinator(group)
    response = await admin._send_request(DeleteGroupsRequest([group]), node)
    for name, code in response.results:
        if code == NonEmptyGroup.errno:
            raise ConfigurationError(f"workers of {name} are running: stop them first")
        if code and code != GroupIdNotFound.errno:
            raise for_code(code)(f"cannot delete the consumer group {name}")


async def _retrying(call: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """`call()`, again while Kafka answers with a retriable error (no group coordinator yet
    on a fresh broker, a coordinator moving) and `timeout` seconds have not passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable or loop.time() > deadline:
                raise
            logger.info("Kafka: %s; trying again", exc)
            await asyncio.sleep(0.5)


async def _wait_gone(
    list_topics: Callable[[], Any], topics: list[str], timeout: float = 60.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while set(topics) & set(await list_topics()):
        if loop.time() > deadline:
            raise ConfigurationError(f"topics {topics} were not deleted within {timeout} s")
        await asyncio.sleep(0.2)
