"""The Kafka topology does what the in-process driver does (SPEC §5), on a real broker:
any number of workers, crashes (kill -9), a rebuild, bad records."""

from __future__ import annotations

import base64
import functools
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from idstream.domain.messages import OutputTopic
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink
from idstream.simulate import Traffic, TrafficConfig
from tests.support.kafka import committed_offsets, end_offsets
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Events per second for "live" traffic: the input arrives while the workers run.
LIVE_RATE = 300

Records = tuple[tuple[bytes, bytes], ...]


@functools.cache
def history(seed: int, events: int, malformed_share: float = 0.0) -> Records:
    config = TrafficConfig(
        seed=seed,
        users=max(20, events // 40),
        events=events,
        malformed_share=malformed_share,
    )
    return tuple((r.key, r.value) for r in Traffic(config))


@functools.cache
def local_run(records: Records) -> tuple[str, MemorySink]:
    sink = MemorySink()
    driver = LocalDriver(partitions=6, sink=sink)
    try:
        for key, value in records:
            driver.submit(value, key=key)
        driver.run()
        return driver.digest(), sink
    finally:
        driver.close()


async def test_one_worker_on_a_20k_backlog_matches_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=5, events=20_000)
    expected, _ = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    await topology.start(0)
    await topology.wait_done(600)
    topology.stop_all()
    assert topology.digest() == expected


async def test_two_workers_on_live_traffic_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # Smaller than the backlog test: see "Known limits" in docs/architecture.md (a late claim
    # re-applies its pool's later claims, and two workers drift apart in event time).
    records = history(seed=6, events=6_000)
    expected, _ = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    await topology.start(1)
    await topology.send(records, rate=LIVE_RATE)
    await topology.wait_done(600)
    topology.stop_all()
    assert len(topology.partition_owners()) == 2, "both workers held partitions"
    assert topology.digest() == expected


def resolved_ids(values: list[bytes]) -> set[str]:
    return {orjson.loads(v)["eventId"] for v in values}


async def test_kill_9_at_three_points_loses_nothing(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=8, events=5_000)
    expected, sink = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    events = topology.topics["events"]
    rng = random.Random(8)
    for point in sorted(rng.uniform(0.1, 0.9) for _ in range(3)):
        worker = await topology.start(0)
        target = int(point * len(records))

        async def reached(target: int = target) -> bool:
            offsets = await committed_offsets(kafka_bootstrap, topology.app_id, events)
            return sum(offsets.values()) >= target

        await wait_for(reached, 300, interval=0.05, message=f"{target} records committed")
        worker.kill()  # kill -9, mid-stream
    await topology.start(0)
    await topology.wait_done(600)
    topology.stop_all()
    assert topology.digest() == expected
    # At-least-once: every event the in-process driver resolved was published.
    published = await topology.read(topology.topics["resolved_events"])
    wanted = {o.value["eventId"] for o in sink[OutputTopic.RESOLVED_EVENTS] if o.value}
    assert wanted <= resolved_ids([v for _, v in published if v is not None])


async def test_rebuild_reproduces_the_digest(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=9, events=4_000)
    expected, _ = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    await topology.start(0)
    await topology.wait_done()
    topology.stop_all()
    assert topology.digest() == expected

    done = subprocess.run(
        [sys.executable, "-m", "idstream", "rebuild"],
        env={**os.environ, **topology.env(0)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"rebuilt from {len(records)} events" in done.stderr
    assert not list(tmp_path.rglob("*.db-backup*"))
    assert topology.digest() == expected


async def test_rebuild_refuses_while_a_worker_runs(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    done = subprocess.run(
        [sys.executable, "-m", "idstream", "rebuild"],
        env={**os.environ, **topology.env(1)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "stop every worker" in done.stderr


async def test_bad_records_go_to_the_dead_letter_and_the_rest_is_processed(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    good = history(seed=12, events=1_500)
    junk_only = orjson.dumps(
        {
            "eventId": "junk-1",
            "type": "personalize",
            "timestamp": 1_767_225_600_000,
            "appCode": "shop",
            "pushRegistrationId": "junk-device",
            "userIdentity": {"emails": ["test@test.com"], "externalUserId": "null"},
        }
    )
    bad = [
        (b"k1", b"{not json"),
        (b"k2", b'{"type": "teleport"}'),
        (b"k3", b'{"eventId": "x", "type": "appLaunch"' + b" " * 70_000 + b"}"),
        (b"junk-device", junk_only),
    ]
    records = (*good[:500], *bad, *good[500:])
    expected, _ = local_run(tuple(records))
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    await topology.send(records)
    await topology.wait_done()
    topology.stop_all()
    dead = [orjson.loads(v) for _, v in await topology.read(topology.topics["dead_letter"]) if v]
    reasons = {base64.b64decode(d["originalBase64"]): d["reason"] for d in dead}
    assert reasons[b"{not json"] == "malformed_json"
    assert reasons[b'{"type": "teleport"}'] in {"unknown_type", "schema_violation"}
    assert reasons[bad[2][1]] == "oversize"
    assert reasons[junk_only] == "blocked_identity"
    # Everything after the bad records was processed: same state as the in-process driver.
    assert topology.digest() == expected
    assert sum((await end_offsets(kafka_bootstrap, topology.topics["events"])).values()) == len(
        records
    )
