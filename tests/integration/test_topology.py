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
from idstream.simulate import Traffic, TrafficConfig
from tests.contract.test_emitted_outputs import invalid
from tests.support import faults
from tests.support.kafka import INPUT_CONFIG, committed_offsets, create_topics, end_offsets
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


async def test_one_worker_on_a_20k_backlog_matches_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=5, events=20_000)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    await topology.start(0)
    await topology.wait_done(600)
    topology.stop_all()
    expected, _ = await topology.replayed()
    assert topology.digest() == expected


async def test_two_workers_on_the_same_20k_backlog_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # The history of the one-worker test, split over two workers: each runs through its input
    # partitions at its own pace, and the pool still applies every claim in log order.
    records = history(seed=5, events=20_000)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    await topology.start(0)
    await topology.start(1)
    await topology.wait_done(900)
    topology.stop_all()
    assert len(topology.partition_owners()) == 2, "both workers held partitions"
    expected, _ = await topology.replayed()
    assert topology.digest() == expected


async def test_two_workers_on_live_traffic_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=6, events=6_000)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    await topology.start(1)
    await topology.send(records, rate=LIVE_RATE)
    await topology.wait_done(600)
    topology.stop_all()
    assert len(topology.partition_owners()) == 2, "both workers held partitions"
    expected, _ = await topology.replayed()
    assert topology.digest() == expected


def resolved_ids(values: list[bytes]) -> set[str]:
    return {orjson.loads(v)["eventId"] for v in values}


async def test_kill_9_at_three_points_loses_nothing(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=8, events=5_000)
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
    expected, sink = await topology.replayed()
    assert topology.digest() == expected
    # At-least-once: every event the in-process driver resolved was published, except the
    # events of a person forgotten later in the log that a restarted worker processed again
    # after it had read that forget in the register: those it must not publish any more.
    published = resolved_ids(
        [v for _, v in await topology.read(topology.topics["resolved_events"]) if v]
    )
    _, knowing = await topology.replayed(register=True)
    wanted = {o.value["eventId"] for o in knowing[OutputTopic.RESOLVED_EVENTS] if o.value}
    assert wanted <= published
    everything = {o.value["eventId"] for o in sink[OutputTopic.RESOLVED_EVENTS] if o.value}
    assert len(everything - wanted) > 0, "the history forgets persons"


async def test_a_storage_fault_halts_the_worker_and_its_batch_is_processed_again(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # A storage error is not about one record: the worker stops with the failed batch
    # uncommitted (faust would ack it), and the next worker processes it again.
    records = history(seed=9, events=4_000)
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
    assert faulty.returncode == 70, faulty.log_tail()
    claims = topology.topics["claims"]
    committed = sum((await committed_offsets(kafka_bootstrap, topology.app_id, claims)).values())
    assert committed < sum((await end_offsets(kafka_bootstrap, claims)).values())
    await topology.start(0)
    await topology.wait_done()
    topology.stop_all()
    expected, _ = await topology.replayed()
    assert topology.digest() == expected


def poison(event_id: str, prid: str, body: dict[str, Any]) -> tuple[bytes, bytes]:
    value = {
        "eventId": event_id,
        "timestamp": 1_767_225_600_000,
        "appCode": "shop",
        "pushRegistrationId": prid,
        **body,
    }
    return prid.encode(), orjson.dumps(value)


async def test_records_whose_processing_raises_are_dead_lettered_and_the_worker_goes_on(
    kafka_bootstrap: str,
    names: UniqueNames,
    processes: ProcessPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = history(seed=15, events=1_500)
    bad = [
        poison("poison-install-1", "poison-device-1", {"type": "appLaunch"}),
        poison("before-1", "poison-device-2", {"type": "install"}),
        poison(
            "poison-pool-1",
            "poison-device-2",
            {"type": "personalize", "userIdentity": {"emails": ["poison@example.com"]}},
        ),
        # Held behind the failing claim until its answer: released, not lost.
        poison("after-1", "poison-device-2", {"type": "custom", "definitionId": "viewed"}),
    ]
    records = (*good[:700], *bad, *good[700:])
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    marker = tmp_path / "failed"
    marker.write_text("no storage fault in this test")
    worker = processes.start_python_module(
        "tests.support.faulty_worker",
        name="worker-0",
        env={**topology.env(0), "IDSTREAM_TEST_FAIL_MARKER": str(marker)},
    )
    topology.workers.append(worker)
    await topology.send(records)
    await topology.wait_done()
    assert worker.is_running(), worker.log_tail()
    topology.stop_all()

    dead = [orjson.loads(v) for _, v in await topology.read(topology.topics["dead_letter"]) if v]
    errors = {
        base64.b64decode(d["originalBase64"]): d["detail"]
        for d in dead
        if d["reason"] == "processing_error"
    }
    assert set(errors) == {bad[0][1], bad[2][1]}
    assert all("RuntimeError at idstream/" in detail for detail in errors.values())
    resolved = {
        orjson.loads(v)["eventId"]
        for _, v in await topology.read(topology.topics["resolved_events"])
        if v
    }
    assert {"before-1", "after-1"} <= resolved
    assert not {"poison-install-1", "poison-pool-1"} & resolved
    # The same defects in process give the same state: nothing else was lost or doubled.
    faults.inject(monkeypatch.setattr)
    expected, _ = await topology.replayed()
    assert topology.digest() == expected


async def test_rebuild_reproduces_the_digest(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=9, events=4_000)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records)
    await topology.start(0)
    await topology.wait_done()
    topology.stop_all()
    expected, _ = await topology.replayed()
    assert topology.digest() == expected
    # The input's records, and the ticks the live worker appended (the rebuild reads them too).
    inputs = sum((await end_offsets(kafka_bootstrap, topology.topics["events"])).values())
    assert inputs >= len(records)

    done = subprocess.run(
        [sys.executable, "-m", "idstream", "rebuild"],
        env={**os.environ, **topology.env(0)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"reprocessing {inputs} input records" in done.stderr
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
    expected, _ = await topology.replayed()
    assert topology.digest() == expected
    # The input holds the records and the ticks the worker appended to silent partitions.
    inputs = await topology.read(topology.topics["events"])
    assert sorted(v for _, v in inputs if v) == sorted(v for _, v in records)


def by_key(records: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    """Each key's records in order (the order a consumer of one key sees)."""
    out: dict[str, list[Any]] = {}
    for key, value in records:
        out.setdefault(key, []).append(value)
    return out


def final_profiles(
    resolved: list[tuple[str, Any]], changes: list[tuple[str, Any]]
) -> set[tuple[str, str]]:
    """(eventId, profile) with each profile followed through the `merged` changes."""
    survivor = {
        v["loser"]: v["survivor"] for _, v in changes if v is not None and v["kind"] == "merged"
    }

    def follow(pid: str) -> str:
        seen = set()
        while pid in survivor and pid not in seen:
            seen.add(pid)
            pid = survivor[pid]
        return pid

    return {(v["eventId"], follow(v["profileId"])) for _, v in resolved if v is not None}


async def test_outputs_read_back_match_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=14, events=3_000, malformed_share=0.02)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    await topology.send(records)
    await topology.wait_done()
    topology.stop_all()
    _, sink = await topology.replayed()

    def decoded(raw: list[tuple[bytes | None, bytes | None]]) -> list[tuple[str, Any]]:
        return [((k or b"").decode(), None if v is None else orjson.loads(v)) for k, v in raw]

    def local(topic: OutputTopic) -> list[tuple[str, Any]]:
        return [(o.key, None if o.value is None else dict(o.value)) for o in sink[topic]]

    # The pool applies claims in the input log's order: per profile, the same changes and
    # snapshots in the same order, versions included.
    for name, topic in (
        ("profile_changes", OutputTopic.PROFILE_CHANGES),
        ("profiles", OutputTopic.PROFILES),
    ):
        got = by_key(decoded(await topology.read(topology.topics[name])))
        assert got == by_key(local(topic)), name

    # A resolved event names the profile its install had when it was processed; a merge that
    # another install's event caused reaches the install in its own time, and the `merged`
    # change tells consumers where. Followed through the merges, every event ends on the same
    # profile whichever driver ran it.
    changes = decoded(await topology.read(topology.topics["profile_changes"]))
    resolved = decoded(await topology.read(topology.topics["resolved_events"]))
    want_changes = local(OutputTopic.PROFILE_CHANGES)
    assert final_profiles(resolved, changes) == final_profiles(
        local(OutputTopic.RESOLVED_EVENTS), want_changes
    )

    dead = decoded(await topology.read(topology.topics["dead_letter"]))
    assert sorted((v["originalBase64"], v["reason"]) for _, v in dead) == sorted(
        (o.value["originalBase64"], o.value["reason"]) for o in sink[OutputTopic.DEAD_LETTER]
    )

    # What the worker published validates against schemas/output, and each input record
    # has one outcome: the same records resolved or dead-lettered as in process, once each.
    read_back = {
        OutputTopic.RESOLVED_EVENTS: resolved,
        OutputTopic.PROFILE_CHANGES: changes,
        OutputTopic.PROFILES: decoded(await topology.read(topology.topics["profiles"])),
        OutputTopic.DEAD_LETTER: dead,
    }
    for topic, records in read_back.items():
        for _, value in records:
            assert not invalid(topic, value), (topic, value, invalid(topic, value)[:3])
    positions = [(v["source"]["partition"], v["source"]["offset"]) for _, v in [*resolved, *dead]]
    assert len(positions) == len(set(positions)), "an input record with two outcomes"
    want = [
        (o.value["source"]["partition"], o.value["source"]["offset"])
        for o in [*sink[OutputTopic.RESOLVED_EVENTS], *sink[OutputTopic.DEAD_LETTER]]
        if o.value is not None
    ]
    assert sorted(positions) == sorted(want)


async def test_a_worker_refuses_an_input_topic_with_another_partition_count(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await create_topics(kafka_bootstrap, [topology.topics["events"]], 2, INPUT_CONFIG)
    worker = await topology.start(0, wait_ready=False)
    await wait_for(lambda: not worker.is_running(), 120, message="the worker to refuse")
    assert worker.returncode != 0
    assert worker.returncode == 2
    assert "has 2 partitions but IDSTREAM_PARTITIONS is 6" in worker.log_text()


async def test_a_worker_refuses_an_input_topic_a_producer_can_stamp_hours_ahead(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # CreateTime with Kafka's default cap (1 h ahead): one producer's clock could hold every
    # claim back for an hour.
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await create_topics(kafka_bootstrap, [topology.topics["events"]], topology.partitions)
    worker = await topology.start(0, wait_ready=False)
    await wait_for(lambda: not worker.is_running(), 120, message="the worker to refuse")
    assert worker.returncode == 2
    assert "message.timestamp.type=LogAppendTime" in worker.log_text()
