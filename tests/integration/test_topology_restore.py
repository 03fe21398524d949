"""The Kafka topology's state survives a lost data dir: a worker restarted on an empty one
restores its tables from the changelogs alone (Faust's recovery from the persisted offset),
then goes on to the same state digest as the in-process driver (SPEC §5)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.test_topology import history
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_worker_on_an_empty_data_dir_restores_from_the_changelogs(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=11, events=4_000)
    half = len(records) // 2
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.send(records[:half])
    await topology.start(0)
    await topology.wait_done(600)
    topology.stop_all()
    # Only the changelogs hold the first half's state now.
    shutil.rmtree(topology.data_dir(0))
    await topology.start(0)
    await topology.send(records[half:])
    await topology.wait_done(600)
    topology.stop_all()
    expected, _ = await topology.replayed()
    assert topology.digest() == expected
