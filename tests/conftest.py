"""Shared fixtures: a real Kafka broker per session, unique names, child processes.

The broker comes from, in order: $KAFKA_BOOTSTRAP_SERVERS; a Docker engine (apache/kafka
image via testcontainers); a local JVM (idstream.devbroker.LocalKafka). When none can
be had, tests that need it fail; they never skip.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from idstream.devbroker import KAFKA_VERSION, LocalKafka, broker_answers, free_port
from idstream.errors import BrokerUnavailableError
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool

# No time limit per generated example: on a shared, loaded host a slow example is the host's,
# not a defect (a property test must fail on behaviour only).
hypothesis_settings.register_profile("idstream", deadline=None)
hypothesis_settings.load_profile("idstream")

logger = logging.getLogger(__name__)

# Every worker, rebuild and replay the suite starts shares this key for hashes of personal
# data (they refuse to start without one); a test that checks the refusal removes it.
os.environ.setdefault("IDSTREAM_PERSONAL_DATA_KEY", "idstream-test-suite-key")

KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
DOCKER_PROBE_TIMEOUT = 2
BROKER_READY_TIMEOUT = 90.0


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping within DOCKER_PROBE_TIMEOUT seconds."""
    with warnings.catch_warnings():
        # A failed ping leaves the SDK's socket to the garbage collector; collect it here,
        # where its ResourceWarning is ignored, not later inside some test.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=DOCKER_PROBE_TIMEOUT)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - no SDK, no socket, no daemon: all mean "no Docker"
            return False
        finally:
            gc.collect()


def _wait_ready(bootstrap: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker_answers(bootstrap, timeout=5.0):
            return
        time.sleep(0.5)
    raise BrokerUnavailableError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a Kafka broker that lives for the whole test session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    try:
        if given:
            _wait_ready(given, BROKER_READY_TIMEOUT)
            yield given
        elif _docker_answers():
            yield from _docker_kafka()
        else:
            with LocalKafka(ready_timeout=BROKER_READY_TIMEOUT) as kafka:
                yield kafka.bootstrap_servers
    except BrokerUnavailableError as exc:
        where = "CI" if os.environ.get("CI") == "true" else "this machine"
        pytest.fail(
            f"no Kafka broker on {where}: {exc}\n"
            "Set KAFKA_BOOTSTRAP_SERVERS, start a Docker engine, or install Java 17+ and Maven.",
            pytrace=False,
        )


def _docker_kafka() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    # Same port inside and outside, so the advertised listener is right for the host.
    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", f"PLAINTEXT://:{port},CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_NUM_PARTITIONS", "1")
    )
    with container:
        bootstrap = f"127.0.0.1:{port}"
        _wait_ready(bootstrap, BROKER_READY_TIMEOUT)
        logger.info("Kafka container %s ready at %s", KAFKA_IMAGE, bootstrap)
        yield bootstrap


def _own_kafka(nodes: int) -> Iterator[LocalKafka]:
    kafka = LocalKafka(nodes=nodes, ready_timeout=BROKER_READY_TIMEOUT)
    try:
        kafka.start()
    except BrokerUnavailableError as exc:
        # Never a skip: a fault test that cannot have its broker fails, in CI and here.
        where = "CI" if os.environ.get("CI") == "true" else "this machine"
        pytest.fail(
            f"no Kafka of {nodes} node(s) of its own on {where}: {exc}\n"
            "Install Java 17+ and Maven (the test kills and restarts the brokers it starts).",
            pytrace=False,
        )
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def own_kafka() -> Iterator[LocalKafka]:
    """A single-node Kafka for this test alone, which it may kill (-9) and restart."""
    yield from _own_kafka(1)


@pytest.fixture
def kafka_cluster() -> Iterator[LocalKafka]:
    """A 3-node KRaft cluster (each node broker and controller) for this test alone: nodes
    are killed with `kafka_cluster.kill(n)` and started again with `restart(n)`."""
    yield from _own_kafka(3)


@pytest.fixture
def names(request: pytest.FixtureRequest) -> UniqueNames:
    """Unique topic/group/app names for this test: names.topic("input"), names.group()."""
    return UniqueNames(request.node.name)


@pytest.fixture
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessPool]:
    """Start child processes with processes.start_python_module(...); all stopped at teardown."""
    pool = ProcessPool(log_dir=tmp_path_factory.mktemp("proc-logs"))
    try:
        yield pool
    finally:
        pool.stop_all()
        # Captured teardown output is shown only when the test fails.
        print(pool.report())
