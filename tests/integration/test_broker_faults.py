"""The broker fails, the worker goes on (issue #18): a broker killed (kill -9) mid-stream and
restarted, on one node and on a 3-node cluster; an outage waited out; a longer one halts the
worker with a clear error. After each, every input has exactly one outcome and the state is
the in-process driver's (Topology.check_against_in_process).

Each test starts brokers of its own (the session's is shared and must live).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from idstream.devbroker import LocalKafka
from tests.integration.test_topology import LIVE_RATE, history
from tests.support.kafka import committed_offsets
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
        offsets = await committed_offsets(
            topology.bootstrap, topology.app_id, topology.topics["events"]
        )
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
