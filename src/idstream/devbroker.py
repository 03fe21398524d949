"""A throwaway single-node Apache Kafka (KRaft) on 127.0.0.1 for tests and the demo.

Entry-point layer: runs the official Kafka jars (fetched by Maven into a cache outside
the repository) in a JVM of its own. Standard library and aiokafka only.

    python -m idstream.devbroker run     # print the bootstrap address, run until Ctrl-C
    python -m idstream.devbroker fetch   # only fetch the jars
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


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """The broker config: one node that is both broker and controller, tuned for tests."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        # Fewer internal partitions: the first consumer group starts faster.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
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


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalKafka:
    """A single-node KRaft Kafka in a JVM of its own, removed with its data on exit.

    Use as a context manager (`with LocalKafka() as kafka: kafka.bootstrap_servers`) or
    call `start()`/`stop()`. The JVM runs in its own process group, dies with this
    process (PR_SET_PDEATHSIG on Linux; start it from a long-lived thread) and is
    also stopped by an atexit hook.
    """

    def __init__(
        self,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        cache: Path | None = None,
        keep_dir: bool = False,
    ) -> None:
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.cache = cache
        self.keep_dir = keep_dir
        self.port = 0
        self.controller_port = 0
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap_servers(self) -> str:
        if self._proc is None:
            raise BrokerUnavailableError("LocalKafka is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "broker.log" if self.workdir else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

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
        """Format storage, start the JVM and wait until the broker lists topics."""
        jars = fetch_jars(self.cache)
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self.workdir = Path(tempfile.mkdtemp(prefix="idstream-kafka-"))
            atexit.register(self.stop)
            try:
                self._launch(jars)
                self._wait_ready()
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
            "Kafka %s ready at %s (pid %s)", KAFKA_VERSION, self.bootstrap_servers, self.pid
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

    def _launch(self, jars: Path) -> None:
        assert self.workdir is not None
        self.port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        config = self.workdir / "server.properties"
        data_dir = self.workdir / "data"
        config.write_text(server_properties(data_dir, self.port, self.controller_port))
        # A short-lived JVM: tiered C1 and serial GC start it fastest.
        fmt = self._java(jars, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
        fmt += ["kafka.tools.StorageTool", "format", "--ignore-formatted"]
        fmt += ["-t", random_cluster_id(), "-c", str(config)]
        done = subprocess.run(fmt, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise BrokerUnavailableError(
                f"kafka-storage format failed:\n{done.stdout}{done.stderr}"
            )
        cmd = self._java(jars, *JVM_HEAP, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20")
        cmd += [f"-Dkafka.logs.dir={self.workdir / 'logs'}", "kafka.Kafka", str(config)]
        assert self.log_path is not None
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerUnavailableError(
                    f"Kafka JVM exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            left = deadline - time.monotonic()
            if _port_open(self.port) and broker_answers(self.bootstrap_servers, min(5.0, left)):
                return
            time.sleep(0.2)
        raise BrokerUnavailableError(
            f"Kafka did not answer within {self.ready_timeout:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker log (stdout and stderr of the JVM)."""
        path = self.log_path
        if path is None or not path.exists():
            return "(no broker log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the JVM's process group, SIGKILL after stop_timeout, remove the temp dir."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    logger.warning("Kafka pid %s ignored SIGTERM; killing it", proc.pid)
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
            if self.workdir is not None and not self.keep_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
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
    run = sub.add_parser("run", help="run a broker until Ctrl-C or SIGTERM")
    run.add_argument("--ready-timeout", type=float, default=DEFAULT_READY_TIMEOUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "fetch":
        print(fetch_jars())
        return 0
    with _stop_on_sigterm():
        try:
            with LocalKafka(ready_timeout=args.ready_timeout) as kafka:
                print(f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}", flush=True)
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
