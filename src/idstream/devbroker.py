"""A throwaway Apache Kafka (KRaft) on 127.0.0.1 for tests, the demo and benchmarks.

Entry-point layer: runs the official Kafka jars (fetched by Maven into a cache outside
the repository), one JVM per node. Standard library and aiokafka only.

    python -m idstream.devbroker run             # one node: print its address, run until Ctrl-C
    python -m idstream.devbroker run --nodes 3   # three brokers (each also a controller)
    python -m idstream.devbroker fetch           # only fetch the jars
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from idstream.errors import BrokerUnavailableError, ConfigurationError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
MARKER = ".complete"
DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 20.0
JVM_HEAP = ("-Xms256m", "-Xmx768m")
# Per node of a cluster: three JVMs share a small machine.
CLUSTER_JVM_HEAP = ("-Xms128m", "-Xmx384m")
BIND_ATTEMPTS = 3
_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "kafka"
_PR_SET_PDEATHSIG = 1


def cache_dir() -> Path:
    """Where the jars live: $IDSTREAM_KAFKA_CACHE or ~/.cache/idstream/kafka-<version>."""
    override = os.environ.get("IDSTREAM_KAFKA_CACHE")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "idstream" / f"kafka-{KAFKA_VERSION}"


def scripts_dir() -> Path:
    """The folder holding pom.xml and log4j2.properties ($IDSTREAM_KAFKA_SCRIPTS overrides)."""
    return Path(os.environ.get("IDSTREAM_KAFKA_SCRIPTS", _SCRIPTS))


def fetch_jars(cache: Path | None = None) -> Path:
    """Fetch the Kafka runtime jars with Maven unless a complete fetch is already cached."""
    cache = cache or cache_dir()
    if (cache / MARKER).exists():
        return cache
    pom = scripts_dir() / "pom.xml"
    if not pom.is_file():
        raise ConfigurationError(
            f"{pom} not found; run from a checkout or set IDSTREAM_KAFKA_SCRIPTS"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigurationError("Maven (mvn) is not on PATH; install it to fetch the Kafka jars")
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Serialize concurrent fetches (parallel test sessions) on a lock file.
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache / MARKER).exists():
            return cache
        partial = cache.parent / f".{cache.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        logger.info("fetching Kafka %s jars into %s", KAFKA_VERSION, cache)
        cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
        cmd += [f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BrokerUnavailableError(f"mvn failed ({done.returncode}):\n{done.stdout[-4000:]}")
        # Swap in atomically so a reader never sees half a jar set.
        shutil.rmtree(cache, ignore_errors=True)
        partial.rename(cache)
        (cache / MARKER).write_text(f"{KAFKA_VERSION}\n")
    return cache


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_cluster_id() -> str:
    """A cluster id in Kafka's Uuid format (22 url-safe base64 chars, not starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def server_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    *,
    node_id: int = 1,
    voters: str | None = None,
    nodes: int = 1,
) -> str:
    """The config of one node that is both broker and controller, tuned for tests.

    `voters` is the controller quorum ("1@127.0.0.1:port,2@..."; this node alone when None),
    `nodes` how many brokers the cluster has: internal topics are replicated min(3, nodes).
    """
    replicas = str(min(3, nodes))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": replicas,
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": replicas,
        # Fewer internal partitions: the first consumer group starts faster.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Small segments and indexes: many short-lived test topics, little disk.
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.index.size.max.bytes": str(1024 * 1024),
        # Retention and compaction soon after a topic allows them: tests check that erasure on
        # the broker completes (docs/operations.md, "Personal data").
        "log.retention.check.interval.ms": "2000",
        "log.cleaner.backoff.ms": "1000",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def die_with_parent() -> None:
    """A Popen preexec_fn: the kernel SIGKILLs the child when the thread that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


async def _broker_answers(bootstrap: str, timeout: float) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout * 1000))
    )
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - any failure here only means "not ready yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when an admin client can list topics at `bootstrap` (safe inside a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_broker_answers(bootstrap, timeout))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _broker_answers(bootstrap, timeout)).result()


async def _registered_brokers(bootstrap: str, timeout: float) -> int:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(1000, int(timeout * 1000))
    )
    try:
        await admin.start()
        return len((await admin.describe_cluster())["brokers"])
    except Exception:  # noqa: BLE001 - any failure here only means "not ready yet"
        return 0
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def registered_brokers(bootstrap: str, timeout: float = 5.0) -> int:
    """How many brokers the cluster at `bootstrap` lists in its metadata (0: no answer)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_registered_brokers(bootstrap, timeout))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _registered_brokers(bootstrap, timeout)).result()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class KafkaNode:
    """One broker-and-controller JVM of a LocalKafka: its ports, files and process."""

    node_id: int
    port: int
    controller_port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no broker log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class LocalKafka:
    """A KRaft Kafka of one or more nodes (each broker and controller, a JVM of its own) on
    127.0.0.1, removed with its data on exit.

    Use as a context manager (`with LocalKafka() as kafka: kafka.bootstrap_servers`) or
    call `start()`/`stop()`. Each JVM runs in its own process group, dies with this
    process (PR_SET_PDEATHSIG on Linux: start and restart nodes from a long-lived thread)
    and is also stopped by an atexit hook. `kill(node)` and `restart(node)` stage broker
    faults: kill -9, then the same node on the same ports and data.
    """

    def __init__(
        self,
        *,
        nodes: int = 1,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        cache: Path | None = None,
        keep_dir: bool = False,
    ) -> None:
        if nodes < 1:
            raise ConfigurationError(f"a Kafka cluster needs at least one node, not {nodes}")
        self.size = nodes
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.cache = cache
        self.keep_dir = keep_dir
        self.workdir: Path | None = None
        self.nodes: list[KafkaNode] = []
        self._jars: Path | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.nodes[0].port if self.nodes else 0

    @property
    def controller_port(self) -> int:
        return self.nodes[0].controller_port if self.nodes else 0

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address, comma-separated (clients find the live ones)."""
        if not self.nodes or self.nodes[0].proc is None:
            raise BrokerUnavailableError("LocalKafka is not started")
        return ",".join(node.address for node in self.nodes)

    @property
    def log_path(self) -> Path | None:
        return self.nodes[0].log_path if self.nodes else None

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid if self.nodes else None

    def is_running(self) -> bool:
        """True while every node's JVM runs."""
        return bool(self.nodes) and all(node.is_running() for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ConfigurationError(f"no Kafka node {node_id} (nodes are 1..{self.size})")

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Format storage, start every JVM and wait until all brokers are registered."""
        jars = self._jars = fetch_jars(self.cache)
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self.workdir = Path(tempfile.mkdtemp(prefix="idstream-kafka-"))
            atexit.register(self.stop)
            try:
                self._configure()
                self._format(jars)
                for node in self.nodes:
                    self._launch(node, jars)
                self.wait_ready()
                break
            except BrokerUnavailableError as exc:
                self.stop()
                # The free ports were picked before the JVM bound them; someone may have won.
                if "Address already in use" not in str(exc) or attempt == BIND_ATTEMPTS:
                    raise
                logger.warning("Kafka port taken meanwhile; retrying with new ports")
            except BaseException:
                self.stop()
                raise
        logger.info(
            "Kafka %s ready at %s (pids %s)",
            KAFKA_VERSION,
            self.bootstrap_servers,
            ", ".join(str(node.pid) for node in self.nodes),
        )
        return self.bootstrap_servers

    def _java(self, jars: Path, *jvm_args: str) -> list[str]:
        java_home = os.environ.get("JAVA_HOME")
        java = (java_home and shutil.which("java", path=f"{java_home}/bin")) or "java"
        log4j = scripts_dir() / "log4j2.properties"
        cmd = [java, *jvm_args, "-Djava.awt.headless=true"]
        if log4j.is_file():
            cmd.append(f"-Dlog4j2.configurationFile={log4j}")
        return [*cmd, "-cp", f"{jars}/*"]

    def _configure(self) -> None:
        assert self.workdir is not None
        ports: set[int] = set()
        while len(ports) < 2 * self.size:
            ports.add(free_port())
        picked = sorted(ports)
        self.nodes = []
        for i in range(self.size):
            # One node keeps the layout of a single broker: its files in the temp dir itself.
            workdir = self.workdir if self.size == 1 else self.workdir / f"node-{i + 1}"
            workdir.mkdir(exist_ok=True)
            self.nodes.append(KafkaNode(i + 1, picked[2 * i], picked[2 * i + 1], workdir))
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        for node in self.nodes:
            node.config.write_text(
                server_properties(
                    node.workdir / "data",
                    node.port,
                    node.controller_port,
                    node_id=node.node_id,
                    voters=voters,
                    nodes=self.size,
                )
            )

    def _format(self, jars: Path) -> None:
        # Short-lived JVMs, run side by side: tiered C1 and serial GC start them fastest.
        cluster_id = random_cluster_id()
        fmt = self._java(jars, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
        fmt += ["kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", cluster_id]
        running = [
            subprocess.Popen(
                [*fmt, "-c", str(node.config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
            for node in self.nodes
        ]
        for proc in running:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise BrokerUnavailableError(
                    f"kafka-storage format failed:\n{out.decode(errors='replace')}"
                )

    def _launch(self, node: KafkaNode, jars: Path) -> None:
        heap = JVM_HEAP if self.size == 1 else CLUSTER_JVM_HEAP
        cmd = self._java(jars, *heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
        cmd += [f"-Dkafka.logs.dir={node.workdir / 'logs'}", "kafka.Kafka", str(node.config)]
        # Appended: a restarted node's log follows the one it had before the kill.
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every running node answers and the cluster lists all of them."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [node for node in self.nodes if node.proc is not None]
            for node in running:
                assert node.proc is not None
                if node.proc.poll() is not None:
                    raise BrokerUnavailableError(
                        f"Kafka node {node.node_id} JVM exited with {node.proc.returncode}:\n"
                        f"{node.log_tail()}"
                    )
            left = max(0.5, min(5.0, deadline - time.monotonic()))
            if all(_port_open(node.port) for node in running):
                if self.size == 1:
                    if broker_answers(self.bootstrap_servers, left):
                        return
                elif registered_brokers(self.bootstrap_servers, left) >= len(running):
                    return
            time.sleep(0.2)
        raise BrokerUnavailableError(
            f"Kafka did not answer within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def kill(self, node_id: int = 1) -> None:
        """SIGKILL one node's JVM (kill -9: no clean shutdown) and wait until it is gone."""
        node = self.node(node_id)
        proc = node.proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        logger.info("Kafka node %d killed", node_id)

    def start_node(self, node_id: int = 1) -> None:
        """Start a stopped node again, same ports and data (not waiting for it: `wait_ready`)."""
        node = self.node(node_id)
        if node.is_running():
            raise BrokerUnavailableError(f"Kafka node {node_id} is running")
        assert self._jars is not None, "start() first"
        self._launch(node, self._jars)

    def restart(self, node_id: int = 1, timeout: float | None = None) -> None:
        """Start a killed node again and wait until the cluster lists it."""
        self.start_node(node_id)
        self.wait_ready(timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of each node's log (stdout and stderr of its JVM)."""
        if not self.nodes:
            return "(no broker log)"
        if self.size == 1:
            return self.nodes[0].log_tail(lines)
        return "\n".join(f"--- node {n.node_id}\n{n.log_tail(lines)}" for n in self.nodes)

    def stop(self) -> None:
        """SIGTERM every JVM's process group, SIGKILL after stop_timeout, remove the temp dir."""
        with self._lock:
            procs = [node.proc for node in self.nodes if node.proc is not None]
            for node in self.nodes:
                node.proc = None
            for proc in procs:
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("Kafka pid %s ignored SIGTERM; killing it", proc.pid)
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
            if self.workdir is not None and not self.keep_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
            if not self.keep_dir:
                self.nodes = []
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The JVM leads its own session, so its group id is its pid.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m idstream.devbroker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the Kafka jars into the cache and exit")
    run = sub.add_parser("run", help="run a broker (or a cluster) until Ctrl-C or SIGTERM")
    run.add_argument("--nodes", type=int, default=1, help="brokers in the cluster (default 1)")
    run.add_argument("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "fetch":
        print(fetch_jars())
        return 0
    with _stop_on_sigterm():
        try:
            with LocalKafka(nodes=args.nodes, ready_timeout=args.ready_timeout) as kafka:
                print(f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}", flush=True)
                for node in kafka.nodes if args.nodes > 1 else ():
                    print(f"node {node.node_id} (pid {node.pid}) log: {node.log_path}", flush=True)
                print(f"broker log: {kafka.log_path}  (Ctrl-C stops)", flush=True)
                while kafka.is_running():
                    time.sleep(0.5)
                print(f"Kafka exited unexpectedly:\n{kafka.log_tail()}", file=sys.stderr)
                return 1
        except KeyboardInterrupt:
            print("stopped", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
