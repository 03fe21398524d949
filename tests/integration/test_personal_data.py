"""Personal data on a real broker (SPEC §4.10, issue #14): after a forget, no trace of the
person is left in any table or any topic but the input and the append-only outputs, once the
broker's compaction and retention have run; and a rebuild publishes nothing of the person again
while it rebuilds the same state."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from rocksdict import AccessType, Options, Rdict

from idstream.drivers.faust.topics import topic_configs
from idstream.settings import load_settings
from idstream.storage.partitions import STAGE_TABLES, partition_dbs
from tests.integration.test_topology import history
from tests.support.kafka import alter_topic_configs, create_topics, end_offsets, read_from
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology
from tests.support.waiting import wait_for
from tests.unit.scenarios.sdk import personalize, record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The person's values: unusual enough that nothing else in the traffic holds them.
EMAIL = "Zelda.Quixote@Example.com"
PHONE = "+385 91 777 4321"
EXTERNAL = "cust-zq-771"
FIRST, LAST = "Zeldaqx", "Quixotezz"
SECRETS = [
    EMAIL,
    EMAIL.lower(),
    PHONE,
    "+385917774321",
    EXTERNAL,
    FIRST,
    LAST,
]
PHONE_1, TABLET, OPS = "zq-phone", "zq-tablet", "zq-ops"


def forgotten_person() -> list[tuple[bytes, bytes]]:
    """A person on two devices, with identities and names, forgotten by identity; then more
    traffic on both devices."""
    s = 0.0

    def at() -> float:
        nonlocal s
        s += 7
        return s

    person = [
        (PHONE_1, record("install", "zq-1", at(), PHONE_1)),
        (TABLET, record("install", "zq-2", at(), TABLET)),
        (
            PHONE_1,
            personalize(
                "zq-3", at(), PHONE_1, emails=[EMAIL], phones=[PHONE], externalUserId=EXTERNAL
            ),
        ),
        (TABLET, personalize("zq-4", at(), TABLET, emails=[EMAIL.lower()])),
        (
            PHONE_1,
            record(
                "personUpdate",
                "zq-5",
                at(),
                PHONE_1,
                attributes={"firstName": FIRST, "lastName": LAST},
                tagsAdded=["zq-vip"],
            ),
        ),
        (TABLET, record("custom", "zq-6", at(), TABLET, definitionId="viewed")),
        (OPS, record("install", "zq-7", at(), OPS)),
        (OPS, record("forget", "zq-8", at(), OPS, userIdentity={"emails": [EMAIL]})),
        (PHONE_1, record("custom", "zq-9", at(), PHONE_1, definitionId="after")),
        (TABLET, record("appLaunch", "zq-10", at(), TABLET)),
    ]
    return [(k.encode(), v) for k, v in person]


def records() -> tuple[tuple[bytes, bytes], ...]:
    noise = history(seed=21, events=1_500)
    person = forgotten_person()
    # The person's records among other people's traffic.
    return (*noise[:500], *person[:6], *noise[500:1000], *person[6:], *noise[1000:])


def leaks(data: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in data]


def table_leaks(root: Path) -> dict[str, list[str]]:
    """Every key and value of every stage table of the stopped workers, read raw."""
    found: dict[str, list[str]] = {}
    for path in partition_dbs(root, STAGE_TABLES):
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if hit := leaks(bytes(key) + b"\x00" + bytes(value)):
                    found.setdefault(path.name, []).extend(hit)
        finally:
            db.close()
    return found


async def roll(bootstrap: str, topic: str, partitions: int) -> None:
    """One record to every partition, so the segment holding older records closes (a broker
    compacts and deletes closed segments only)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(partitions):
            await producer.send_and_wait(topic, b"roll", key=b"zz-roll", partition=partition)
    finally:
        await producer.stop()


async def test_after_a_forget_no_table_and_no_internal_or_compacted_topic_holds_the_person(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=3)
    # Erasure with deadlines of seconds, so the test sees it done (defaults: 24 h, 7 days).
    topology.extra_env = {
        "IDSTREAM_ERASURE_DEADLINE_MS": "1000",
        "IDSTREAM_INTERNAL_RETENTION_MS": "3000",
    }
    settings = load_settings(environ=topology.env(0))
    configs = topic_configs(settings)
    compacted = [t for t, c in configs.items() if c.get("cleanup.policy") == "compact"]
    internal = [settings.topics.claims, settings.topics.decisions]
    # Every topic as the worker would make it; but until the person has been seen on the
    # broker, nothing is compacted or deleted: no segment closes (no segment.ms, and no
    # compaction lag to force a roll; the active segment is never cleaned). Afterwards, the
    # worker's configs with segments that close after a second and a cleaner that compacts
    # any dirty segment. (With those from the start, the cleaner could erase the person
    # before the test looked, on a slow run: it failed so in CI.)
    final = dict(configs)
    for name in compacted:
        final[name] = {**configs[name], "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01"}
        configs[name] = {**configs[name], "max.compaction.lag.ms": str(2**63 - 1)}
    for name in internal:
        final[name] = {**configs[name], "segment.ms": "1000"}
    for name, config in configs.items():
        await create_topics(kafka_bootstrap, [name], topology.partitions, config)
    scanned = [*compacted, *internal]
    worker = await topology.start(0)
    await topology.send(records())
    await topology.wait_done()
    assert worker.is_running()
    topology.stop_all()

    assert table_leaks(tmp_path) == {}

    async def erased_on_the_broker() -> bool:
        found = []
        for topic in scanned:
            await roll(kafka_bootstrap, topic, topology.partitions)
            for key, value in await topology.read(topic):
                found.extend(leaks((key or b"") + b"\x00" + (value or b"")))
        return not found

    # Before compaction, the person is still on the broker (the test must be able to fail).
    assert not await erased_on_the_broker()
    for topic in scanned:
        await alter_topic_configs(kafka_bootstrap, topic, final[topic])
    await wait_for(erased_on_the_broker, 180, interval=2, message="erasure on the broker")


async def test_a_rebuild_publishes_nothing_of_a_forgotten_person_and_rebuilds_the_state(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=3)
    await topology.create_input()
    await topology.start(0)
    await topology.send(records())
    await topology.wait_done()
    topology.stop_all()
    live = topology.digest()
    expected, _ = await topology.replayed()
    assert live == expected
    outputs = ["resolved_events", "profile_changes", "profiles", "dead_letter"]
    before = {role: await end_offsets(kafka_bootstrap, topology.topics[role]) for role in outputs}
    published = [v for role in outputs for _, v in await topology.read(topology.topics[role])]
    # The live run published the person (before the forget).
    assert any(leaks(v or b"") for v in published)

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "idstream", "rebuild"],
        env={**os.environ, **topology.env(0)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert topology.digest() == live
    for role in outputs:
        again = await read_from(kafka_bootstrap, topology.topics[role], before[role])
        assert again or role == "dead_letter", f"the rebuild published nothing to {role}"
        leaked = [v for _, v in again if leaks(v or b"")]
        assert not leaked, f"the rebuild published the forgotten person to {role}: {leaked[:2]}"
