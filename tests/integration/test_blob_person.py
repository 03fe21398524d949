"""One shared address personalized on hundreds of installs: the worker keeps going (SPEC §5,
"bad input never stops the processor") and no `profiles` record outgrows its topic.

The profiles topic's max.message.bytes is lowered to 384 KiB to stand in for the broker's 1 MB
(it must stay above the worker's 256 KiB record batches), and each install carries ~2 KB of
system data: before the installs cap (SPEC §4.6), ~170 installs on one person made a snapshot
the broker refused, and the worker halted (exit 70) on that batch after every restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from idstream.domain.config import PersonLimits
from tests.support.kafka import create_topics
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC_MAX_BYTES = 384 * 1024
INSTALLS = 300
STANDARD = {
    "applicationVersion": "1",
    "deviceManufacturer": "A" * 1_000,
    "deviceModel": "M" * 1_000,
    "osLanguage": "en",
    "osVersion": "1",
    "platform": "iOS",
    "sdkVersion": "1",
}


def blob_records(now: int) -> list[tuple[bytes, bytes]]:
    records = []
    for i in range(INSTALLS):
        prid = f"blob-{i}"
        head = {"appCode": "shop", "pushRegistrationId": prid, **STANDARD}
        install = {"eventId": f"i{i}", "type": "install", "timestamp": now - 10_000, **head}
        login = {
            "eventId": f"p{i}",
            "type": "personalize",
            "timestamp": now - 9_000,
            **head,
            "userIdentity": {"emails": ["shared.blob@example.com"]},
        }
        records.append((prid.encode(), orjson.dumps(install)))
        records.append((prid.encode(), orjson.dumps(login)))
    return records


async def test_a_blob_person_does_not_stop_the_worker(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await create_topics(
        kafka_bootstrap,
        [topology.topics["profiles"]],
        topology.partitions,
        {"cleanup.policy": "compact", "max.message.bytes": str(TOPIC_MAX_BYTES)},
    )
    worker = await topology.start(0)
    try:
        await topology.send(blob_records(int(time.time() * 1000)))
        await topology.wait_done(timeout=120)
        assert worker.is_running()
        snapshots = [v for _, v in await topology.read(topology.topics["profiles"]) if v]
        # 100 installs of ~2.3 KB: a third of the 300 would not have fitted.
        assert 200_000 < max(len(v) for v in snapshots) < TOPIC_MAX_BYTES
        persons = [s for s in map(orjson.loads, snapshots) if s["kind"] == "person"]
        assert {s["profileId"] for s in persons} == {persons[0]["profileId"]}
        assert max(len(s["installs"]) for s in persons) == PersonLimits().installs
        records = await topology.read(topology.topics["profile_changes"])
        changes = [orjson.loads(v) for _, v in records if v]
        refused = {c["eventId"] for c in changes if c.get("limit") == "installs"}
        assert len(refused) == INSTALLS - PersonLimits().installs
    finally:
        topology.stop_all()
