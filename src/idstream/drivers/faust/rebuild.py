"""Rebuild all state from the input topic: reset, then reprocess from the earliest offset.

Driver layer. Run it with every worker stopped. It (1) refuses while the worker group has
members, (2) empties the internal topics (claims, decisions) and deletes the table changelogs,
(3) moves the group's input offsets back to the start, (4) removes the local state directory,
then (5) runs a worker until the group has caught up again. Because every id and decision
derives from the input (SPEC §5), the rebuilt state has the same digest. Output topics are
left alone: a rebuild publishes every output again, with the same keys and content.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

from idstream.drivers.faust.topics import admin_client, ensure_topics
from idstream.errors import ConfigurationError
from idstream.settings import Settings
from idstream.storage.partitions import STAGE_TABLES

logger = logging.getLogger(__name__)


def changelog_topics(settings: Settings) -> list[str]:
    """Faust names a table's changelog `<app id>-<table>-changelog`."""
    return [f"{settings.app_id}-{table}-changelog" for table in STAGE_TABLES]


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
        for response in await admin.describe_consumer_groups([settings.app_id]):
            members = _group_members(response, settings.app_id)
            if members:
                raise ConfigurationError(
                    f"{members} worker(s) of {settings.app_id} are running: stop every worker "
                    "before a rebuild (it replaces their state)"
                )
        await ensure_topics(settings)
        internal = [settings.topics.claims, settings.topics.decisions]
        tps = [TopicPartition(t, p) for t in internal for p in range(settings.partitions)]
        ends = await _offsets(settings, tps, end=True)
        await admin.delete_records(
            {tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end > 0}
        )
        existing = set(await admin.list_topics())
        doomed = [t for t in changelog_topics(settings) if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
            await _wait_gone(admin.list_topics, doomed)
    finally:
        await admin.close()
    inputs = [TopicPartition(settings.topics.events, p) for p in range(settings.partitions)]
    starts = await _offsets(settings, inputs, end=False)
    # Internal topics resume at their (now empty) ends; the input from its first record.
    await _commit(settings, {**ends, **starts})
    shutil.rmtree(Path(settings.data_dir), ignore_errors=True)
    input_ends = await _offsets(settings, inputs, end=True)
    return sum(input_ends[tp] - starts[tp] for tp in inputs)


async def _offsets(settings: Settings, tps: list[TopicPartition], *, end: bool) -> dict[Any, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        found = await (consumer.end_offsets(tps) if end else consumer.beginning_offsets(tps))
        return dict(found)
    finally:
        await consumer.stop()


async def _commit(settings: Settings, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def _wait_gone(
    list_topics: Callable[[], Any], topics: list[str], timeout: float = 60.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while set(topics) & set(await list_topics()):
        if loop.time() > deadline:
            raise ConfigurationError(f"topics {topics} were not deleted within {timeout} s")
        await asyncio.sleep(0.2)
