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
from typing import Any

import orjson
import pytest

from idstream.domain.messages import OutputTopic
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink
from idstream.simulate import Traffic, TrafficConfig
from tests.support.kafka import committed_offsets, create_topics, end_offsets
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


async def test_two_workers_on_the_same_20k_backlog_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # The history of the one-worker test. Split over two workers, one worker's install
    # partitions run ahead in event time, so most of the other's claims reach the pool late.
    records = history(seed=5, events=20_000)
    expected, _ = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    await topology.start(0)
    await topology.start(1)
    await topology.wait_done(900)
    topology.stop_all()
    assert len(topology.partition_owners()) == 2, "both workers held partitions"
    assert topology.digest() == expected


async def test_two_workers_on_live_traffic_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
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


async def test_a_failing_stage_stops_the_worker_and_its_batch_is_processed_again(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # Faust acks a batch whose processing raised and restarts the agent on the records after
    # it; the worker must instead stop with the failed batch uncommitted.
    records = history(seed=9, events=4_000)
    expected, _ = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    marker = tmp_path / "failed"
    faulty = processes.start_python_module(
        "tests.support.faulty_worker",
        name="faulty",
        env={**topology.env(0), "IDSTREAM_TEST_FAIL_MARKER": str(marker)},
    )
    await wait_for(lambda: not faulty.is_running(), 180, message="the faulty worker to stop")
    assert marker.exists(), faulty.log_tail()
    assert faulty.returncode not in (0, None)
    claims = topology.topics["claims"]
    committed = sum((await committed_offsets(kafka_bootstrap, topology.app_id, claims)).values())
    assert committed < sum((await end_offsets(kafka_bootstrap, claims)).values())
    await topology.start(0)
    await topology.wait_done()
    topology.stop_all()
    assert topology.digest() == expected


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
    # `idstream digest` reads a stopped worker's data dir as the harness does.
    shown = subprocess.run(
        [sys.executable, "-m", "idstream", "digest", "--faust-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert shown.stdout.strip() == topology.digest() == expected


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


def latest_profiles(records: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """Last snapshot per profile id (None: tombstone), without `version`, which counts
    emissions and so may differ between arrival orders."""
    latest: dict[str, Any] = {}
    for key, value in records:
        latest[key] = None if value is None else {k: v for k, v in value.items() if k != "version"}
    return {k: v for k, v in latest.items() if v is not None}


def final_profiles(
    resolved: list[tuple[str, Any]], changes: list[tuple[str, Any]]
) -> set[tuple[str, str, bool]]:
    """(eventId, profile, forgotten?) with each profile followed through the `merged` changes."""
    survivor = {
        v["loser"]: v["survivor"] for _, v in changes if v is not None and v["type"] == "merged"
    }
    forgotten = {k for k, v in changes if v is not None and v["type"] == "forgotten"}

    def follow(pid: str) -> str:
        seen = set()
        while pid in survivor and pid not in seen:
            seen.add(pid)
            pid = survivor[pid]
        return pid

    return {
        (v["eventId"], follow(v["profileId"]), follow(v["profileId"]) in forgotten)
        for _, v in resolved
        if v is not None
    }


async def test_outputs_read_back_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=14, events=3_000, malformed_share=0.02)
    _, sink = local_run(records)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    await topology.send(records)
    await topology.wait_done()
    topology.stop_all()

    def decoded(raw: list[tuple[bytes | None, bytes | None]]) -> list[tuple[str, Any]]:
        return [((k or b"").decode(), None if v is None else orjson.loads(v)) for k, v in raw]

    profiles = decoded(await topology.read(topology.topics["profiles"]))
    expected_profiles = [(o.key, o.value) for o in sink[OutputTopic.PROFILES]]
    assert latest_profiles(profiles) == latest_profiles(expected_profiles)

    # A resolved event names the profile its install had when it was processed; a later merge
    # moves it, and the `merged` change tells consumers where. Followed through the merges,
    # every event ends on the same profile whichever driver ran it.
    changes = decoded(await topology.read(topology.topics["profile_changes"]))
    resolved = decoded(await topology.read(topology.topics["resolved_events"]))
    got = final_profiles(resolved, changes)
    want = final_profiles(
        [(o.key, o.value) for o in sink[OutputTopic.RESOLVED_EVENTS]],
        [(o.key, o.value) for o in sink[OutputTopic.PROFILE_CHANGES]],
    )
    # Left out: events that end on a forgotten profile in either run. A device's event sent
    # after its person was forgotten from elsewhere, processed before the pool's decision
    # reaches the device, goes out under the erased id (known limit, docs/install-stage.md).
    erased = {event for event, _, forgotten in got | want if forgotten}
    assert {p[:2] for p in got if p[0] not in erased} == {p[:2] for p in want if p[0] not in erased}
    assert {v["eventId"] for _, v in resolved} == {
        o.value["eventId"] for o in sink[OutputTopic.RESOLVED_EVENTS]
    }

    dead = decoded(await topology.read(topology.topics["dead_letter"]))
    assert sorted((v["originalBase64"], v["reason"]) for _, v in dead) == sorted(
        (o.value["originalBase64"], o.value["reason"]) for o in sink[OutputTopic.DEAD_LETTER]
    )


async def test_a_worker_refuses_an_input_topic_with_another_partition_count(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await create_topics(kafka_bootstrap, [topology.topics["events"]], partitions=2)
    worker = await topology.start(0, wait_ready=False)
    await wait_for(lambda: not worker.is_running(), 120, message="the worker to refuse")
    assert worker.returncode != 0
    assert "has 2 partitions but IDSTREAM_PARTITIONS is 6" in worker.log_text()
