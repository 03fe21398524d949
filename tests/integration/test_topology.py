"""The Kafka topology does what the in-process driver does (SPEC §5), on a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from idstream.drivers.local.driver import LocalDriver
from idstream.simulate import Traffic, TrafficConfig
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def history(seed: int, events: int) -> list[tuple[bytes, bytes]]:
    config = TrafficConfig(seed=seed, users=max(20, events // 40), events=events)
    return [(r.key, r.value) for r in Traffic(config)]


def local_digest(records: list[tuple[bytes, bytes]]) -> str:
    driver = LocalDriver(partitions=6)
    try:
        for key, value in records:
            driver.submit(value, key=key)
        driver.run()
        return driver.digest()
    finally:
        driver.close()


async def test_one_worker_matches_the_in_process_driver(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = history(seed=5, events=2000)
    topology = Topology(kafka_bootstrap, names, processes, tmp_path)
    await topology.create_input()
    await topology.start(0)
    await topology.send(records)
    await topology.wait_done()
    topology.stop_all()
    assert topology.digest() == local_digest(records)
