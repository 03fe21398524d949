"""idstream.devbroker: the local Kafka starts, answers, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from idstream import devbroker
from idstream.devbroker import LocalKafka, broker_answers, registered_brokers
from idstream.errors import BrokerUnavailableError
from tests.support.processes import ProcessPool
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def test_local_kafka_answers_then_leaves_no_process_or_files() -> None:
    with LocalKafka() as kafka:
        pid, workdir = kafka.pid, kafka.workdir
        assert pid is not None and workdir is not None
        assert broker_answers(kafka.bootstrap_servers)
        assert "Kafka Server started" in kafka.log_tail(200)
    assert not pid_alive(pid)
    assert not workdir.exists()


def test_jvm_that_exits_raises_with_the_broker_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # Storage formatting passes; the broker JVM refuses its heap settings and exits.
    monkeypatch.setattr(devbroker, "JVM_HEAP", ("-Xms256m", "-Xmx8m"))
    kafka = LocalKafka(ready_timeout=60)
    with pytest.raises(BrokerUnavailableError, match="exited with") as caught:
        kafka.start()
    assert "heap" in str(caught.value).lower()
    assert kafka.pid is None and kafka.workdir is None


def test_ready_deadline_raises_and_kills_the_jvm() -> None:
    kafka = LocalKafka(ready_timeout=0.01)
    with pytest.raises(BrokerUnavailableError, match="did not answer"):
        kafka.start()
    assert kafka.pid is None and kafka.workdir is None


async def test_cli_run_prints_bootstrap_and_stops_on_sigterm(processes: ProcessPool) -> None:
    proc = processes.start_python_module("idstream.devbroker", "run", name="devbroker")
    line = re.compile(r"KAFKA_BOOTSTRAP_SERVERS=(\S+)\nbroker log: (\S+)/broker.log")
    found = await wait_for(
        lambda: line.search(proc.log_text()) or not proc.is_running(), 90, message="bootstrap"
    )
    assert proc.is_running() and isinstance(found, re.Match), proc.log_tail()
    assert broker_answers(found.group(1))
    assert proc.stop() == 0, proc.log_tail()
    assert not Path(found.group(2)).exists()


def test_a_three_node_cluster_survives_a_node_killed_and_restarted() -> None:
    with LocalKafka(nodes=3, ready_timeout=120) as kafka:
        pids = [node.pid for node in kafka.nodes]
        workdir = kafka.workdir
        assert workdir is not None and None not in pids
        addresses = kafka.bootstrap_servers.split(",")
        assert len(set(addresses)) == 3
        assert registered_brokers(kafka.bootstrap_servers) == 3
        kafka.kill(2)
        assert not kafka.node(2).is_running() and kafka.node(1).is_running()
        # The others still answer (a quorum of two controllers is left). A client may first
        # try the dead node its metadata names, so one attempt is not enough: a deadline.
        deadline = time.monotonic() + 60
        while not broker_answers(addresses[0]):
            assert time.monotonic() < deadline, "the two nodes left did not answer in 60 s"
        kafka.restart(2)
        assert kafka.node(2).pid != pids[1]
        assert registered_brokers(kafka.bootstrap_servers) == 3
        pids.append(kafka.node(2).pid)
    assert not any(pid_alive(pid) for pid in pids if pid is not None)
    assert not workdir.exists()


async def test_cli_run_nodes_3_prints_three_addresses_and_stops_every_jvm(
    processes: ProcessPool,
) -> None:
    proc = processes.start_python_module(
        "idstream.devbroker", "run", "--nodes", "3", name="devbroker"
    )
    line = re.compile(r"KAFKA_BOOTSTRAP_SERVERS=(\S+)\n")
    found = await wait_for(
        lambda: (
            ("broker log:" in proc.log_text() and line.search(proc.log_text()))
            or not proc.is_running()
        ),
        120,
        message="bootstrap",
    )
    assert proc.is_running() and isinstance(found, re.Match), proc.log_tail()
    assert len(found.group(1).split(",")) == 3
    assert registered_brokers(found.group(1)) == 3
    pids = [int(p) for p in re.findall(r"node \d \(pid (\d+)\)", proc.log_text())]
    assert len(pids) == 3
    assert proc.stop() == 0, proc.log_tail()
    assert not any(pid_alive(pid) for pid in pids)
