"""The broker fails, the worker goes on (issue #18): a broker killed (kill -9) mid-stream and
restarted, on one node and on a 3-node cluster; an outage waited out; a longer one halts the
worker with a clear error. After each, every input has exactly one outcome and the state is
the in-process driver's (Topology.check_against_in_process).

Each test starts brokers of its own (the session's is shared and must live).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from idstream.devbroker import LocalKafka
from idstream.drivers.faust.topics import broker_away, changelog_topics, leader_topic
from idstream.drivers.faust.watchdog import EXIT_BROKER_OUTAGE
from idstream.settings import load_settings
from tests.integration.test_topology import LIVE_RATE, history
from tests.support.kafka import committed_offsets, partition_leaders, replication
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The outage the worker must wait out (issue #18): well inside the default broker_outage_s.
OUTAGE_S = 30


async def committed_at_least(topology: Topology, records: int, timeout: float = 180) -> None:
    """Wait until the group has committed `records` input records (mid-stream)."""

    async def reached() -> bool:
        try:
            offsets = await committed_offsets(
                topology.bootstrap, topology.app_id, topology.topics["events"]
            )
        except Exception as exc:
            # The group's coordinator may be on the broker just killed: ask again.
            if not broker_away(exc):
                raise
            return False
        return sum(offsets.values()) >= records

    await wait_for(reached, timeout, interval=0.2, message=f"{records} input records committed")


async def restart(kafka: LocalKafka, node: int = 1) -> None:
    # Launched from this (the test's) thread: the JVM dies with it (PR_SET_PDEATHSIG).
    kafka.start_node(node)
    await asyncio.to_thread(kafka.wait_ready)


async def test_a_broker_killed_and_restarted_under_live_traffic_loses_nothing(
    own_kafka: LocalKafka, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=21, events=3_000)
    topology = Topology(own_kafka.bootstrap_servers, names, processes, tmp_path)
    await topology.create_input()
    worker = await topology.start(0)
    sending = asyncio.create_task(topology.send(records, rate=LIVE_RATE))
    await committed_at_least(topology, len(records) // 3)
    own_kafka.kill()
    await restart(own_kafka)
    await sending
    await topology.wait_done(300)
    assert worker.is_running(), "the worker survives the broker's restart"
    topology.stop_all()
    await topology.check_against_in_process()


async def test_the_broker_leading_most_partitions_killed_mid_stream_on_3_nodes_loses_nothing(
    kafka_cluster: LocalKafka, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=22, events=3_000)
    topology = Topology(kafka_cluster.bootstrap_servers, names, processes, tmp_path)
    await topology.create_input()
    worker = await topology.start(0)
    settings = load_settings(environ=topology.env(0))
    ours = [*topology.topics.values(), *changelog_topics(settings), leader_topic(settings)]
    # Every topic replicated on all three brokers; a write needs two (one may be down).
    assert set((await replication(kafka_cluster.bootstrap_servers, ours)).values()) == {(3, "2")}
    sending = asyncio.create_task(topology.send(records, rate=LIVE_RATE))
    await committed_at_least(topology, len(records) // 3)
    leaders = await partition_leaders(kafka_cluster.bootstrap_servers, ours)
    victim = max(leaders, key=lambda node: leaders[node])
    kafka_cluster.kill(victim)
    # Two brokers of three: every partition has a replica left and min.insync.replicas (2) is
    # met, so the worker goes on while one broker is down.
    await committed_at_least(topology, 2 * len(records) // 3)
    assert worker.is_running(), worker.log_tail()
    await restart(kafka_cluster, victim)
    await sending
    await topology.wait_done(300)
    assert worker.is_running(), "the worker survives the broker's failure"
    topology.stop_all()
    await topology.check_against_in_process()


async def test_a_30_s_outage_of_the_only_broker_is_waited_out(
    own_kafka: LocalKafka, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=23, events=3_000)
    topology = Topology(own_kafka.bootstrap_servers, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records[:1_500])
    worker = await topology.start(0)
    await committed_at_least(topology, 500)
    own_kafka.kill()
    # Its HTTP API (metrics, lookups) does not need Kafka: it answers during the outage.
    await topology.pending_claims()
    # The outage's length is what this test is about: the worker must be there all along.
    gone = time.monotonic()
    while time.monotonic() - gone < OUTAGE_S:
        assert worker.is_running(), worker.log_tail()
        await asyncio.sleep(1)
    await restart(own_kafka)
    await topology.send(records[1_500:])
    await topology.wait_done(300)
    assert worker.is_running(), "the worker waited the outage out"
    topology.stop_all()
    await topology.check_against_in_process()


async def test_an_outage_longer_than_broker_outage_s_halts_the_worker_with_the_reason(
    own_kafka: LocalKafka, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=24, events=3_000)
    topology = Topology(
        own_kafka.bootstrap_servers,
        names,
        processes,
        tmp_path,
        extra_env={"IDSTREAM_BROKER_OUTAGE_S": "10"},
    )
    await topology.create_input()
    await topology.send(records)
    worker = await topology.start(0)
    await committed_at_least(topology, 1_000)
    own_kafka.kill()
    gone = time.monotonic()
    await wait_for(lambda: not worker.is_running(), 60, message="the worker to halt")
    halted_after = time.monotonic() - gone
    assert worker.returncode == EXIT_BROKER_OUTAGE, worker.log_tail()
    # The last answer came at most one probe interval (10 s / 4) before the kill.
    assert halted_after >= 10 - 2.5, halted_after
    assert "has not answered for" in worker.log_text()
    assert "broker_outage_s=10" in worker.log_text()
    # Nothing is lost: the broker back, a new worker goes on from the committed offsets.
    topology.workers.remove(worker)
    await restart(own_kafka)
    await topology.start(0)
    await topology.wait_done(300)
    topology.stop_all()
    await topology.check_against_in_process()
