"""`idstream demo` (`make demo`): the main job, end to end, then a summary.

Entry point. Chooses a broker (the one configured; else Docker compose when a Docker engine
answers; else a local Kafka from the official jars), starts a worker, publishes seeded
simulated SDK traffic for about `--seconds`, waits until every record is processed, reads the
output topics back and prints what came out, ending with the profile explorer's URL for the
sample person. Stops everything it started; with `--keep`, only once interrupted (Ctrl-C), so
the explorer can be clicked through meanwhile. With no broker at all (no Docker, no Java), it
runs the same traffic through the in-process driver instead, and `--keep` serves the explorer
from that driver's state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from idstream.demo.summary import Record, render, sample_person, summarize
from idstream.domain.messages import OutputTopic
from idstream.errors import BrokerUnavailableError, IdstreamError
from idstream.settings import Settings, Topics, load_settings
from idstream.simulate import SimRecord, Traffic, TrafficConfig

READY_LINE = "[^Worker]: Ready"
COMPOSE_FILE = "docker-compose.kafka.yml"
COMPOSE_BOOTSTRAP = "localhost:9092"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send traffic")
    parser.add_argument("--rate", type=int, default=300, help="events per second to send")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--in-process", action="store_true", help="skip Kafka; use the in-process driver"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep serving the profile explorer (and the worker, the broker) until Ctrl-C",
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _configured_bootstrap() -> str | None:
    return os.environ.get("IDSTREAM_BOOTSTRAP_SERVERS") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextlib.contextmanager
def broker() -> Iterator[str | None]:
    """A bootstrap address for the run, or None when no broker can be had."""
    from idstream.devbroker import LocalKafka, broker_answers, scripts_dir

    configured = _configured_bootstrap()
    if configured:
        say(f"using the configured broker at {configured}")
        yield configured
        return
    compose = scripts_dir().parents[1] / COMPOSE_FILE
    if compose.is_file() and _docker_answers():
        say("starting Kafka with docker compose …")
        subprocess.run(["docker", "compose", "-f", str(compose), "up", "-d"], check=True)
        try:
            deadline = time.monotonic() + 120
            while not broker_answers(COMPOSE_BOOTSTRAP):
                if time.monotonic() > deadline:
                    raise BrokerUnavailableError("the compose broker did not answer in 120 s")
            yield COMPOSE_BOOTSTRAP
        finally:
            subprocess.run(["docker", "compose", "-f", str(compose), "down"], check=False)
        return
    if shutil.which("java") and shutil.which("mvn"):
        say("starting a local Kafka 4.1 from the official jars (first run fetches them) …")
        with LocalKafka() as kafka:
            say(f"Kafka ready at {kafka.bootstrap_servers}")
            yield kafka.bootstrap_servers
        return
    say("no broker: none configured, no Docker engine, no Java and Maven")
    yield None


# Logins that also claim an email another user logged in with (a shared or mistyped address):
# more than the simulator's default, so the demo has persons merged by a shared identity, and
# identity conflicts, for the explorer to explain.
DEMO_CONFLICT_SHARE = 0.2


def traffic(args: argparse.Namespace) -> Traffic:
    events = max(1, int(args.seconds * args.rate))
    return Traffic(
        TrafficConfig(
            seed=args.seed,
            users=args.users,
            events=events,
            malformed_share=0.01,
            conflict_share=DEMO_CONFLICT_SHARE,
        )
    )


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        if args.in_process:
            return run_in_process(args, "in-process driver (--in-process)")
        with broker() as bootstrap:
            if bootstrap is None:
                return run_in_process(args, "in-process driver (no Kafka broker available)")
            return run_on_kafka(args, bootstrap)
    except (IdstreamError, subprocess.CalledProcessError) as exc:
        say(f"idstream demo: {exc}")
        return 1
    finally:
        say(f"done in {time.monotonic() - started:.1f} s")


def run_in_process(args: argparse.Namespace, where: str) -> int:
    from idstream.drivers.local.driver import LocalDriver
    from idstream.drivers.local.sinks import MemorySink

    sim = traffic(args)
    sink = MemorySink()
    driver = LocalDriver(sink=sink, partitions=args.partitions)
    try:
        for record in sim:
            driver.submit(record.value, key=record.key)
        driver.run()
        records: list[Record] = [
            (out.topic, out.key, out.value) for topic in OutputTopic for out in sink[topic]
        ]
        summary = summarize(sim.stats.labels, records)
        print(render(summary, where=where))
        if args.keep:
            with _until_interrupted():
                asyncio.run(_serve_in_process(driver, sample_person(summary)))
        else:
            _explorer_hint(None, sample_person(summary))
    finally:
        driver.close()
    return 0


def _explorer_url(port: int, profile_id: str | None) -> str:
    return f"http://127.0.0.1:{port}/explorer" + (f"#{profile_id}" if profile_id else "")


def _explorer_hint(port: int | None, profile_id: str | None) -> None:
    """The demo's last lines: where to click through the sample person."""
    if port is None:
        print(
            "\nsee the sample person in the profile explorer: `make demo KEEP=1` "
            "(`idstream demo --keep`) keeps serving it at http://127.0.0.1:<port>/explorer"
        )
        return
    print(f"\nprofile explorer: {_explorer_url(port, profile_id)}")
    print("serving until Ctrl-C", flush=True)


@contextlib.contextmanager
def _until_interrupted() -> Iterator[None]:
    """Wait inside for Ctrl-C (or SIGTERM), then leave normally, so everything is stopped."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        say("stopping …")
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _serve_in_process(driver: Any, profile_id: str | None) -> None:
    from idstream.drivers.local import web as local_web

    settings = _keep_settings()
    tables = (driver.pool_tables, driver.install_tables)
    runner, port = await local_web.start(settings, *tables, driver.rules)
    try:
        _explorer_hint(port, profile_id)
        await asyncio.Event().wait()  # until Ctrl-C cancels it
    finally:
        await runner.cleanup()


def _keep_settings() -> Settings:
    """The HTTP settings of the environment (tokens, allowed hosts); any free port unless
    IDSTREAM_HTTP_PORT names one."""
    settings = load_settings()
    if not os.environ.get("IDSTREAM_HTTP_PORT"):
        settings = replace(settings, http_port=0)
    return settings


def demo_settings(bootstrap: str, partitions: int, data_dir: Path) -> Settings:
    from idstream.devbroker import free_port

    # A fresh namespace per run, so a reused broker never mixes runs.
    run_id = f"idstream-demo-{uuid.uuid4().hex[:8]}"
    return Settings(
        bootstrap_servers=bootstrap,
        app_id=run_id,
        partitions=partitions,
        data_dir=str(data_dir),
        # The worker's HTTP server (lookups, metrics, the explorer) on a port nothing else uses.
        http_port=int(os.environ.get("IDSTREAM_HTTP_PORT") or free_port()),
        # Sample traffic only: the public dev key for hashes of personal data.
        dev_mode=True,
        topics=Topics(
            events=f"{run_id}.events",
            resolved_events=f"{run_id}.resolved-events",
            profile_changes=f"{run_id}.profile-changes",
            profiles=f"{run_id}.profiles",
            dead_letter=f"{run_id}.dead-letter",
            claims=f"{run_id}.internal.claims",
            decisions=f"{run_id}.internal.decisions",
            forget_register=f"{run_id}.forget-register",
        ),
    )


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "IDSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "IDSTREAM_APP_ID": settings.app_id,
            "IDSTREAM_PARTITIONS": str(settings.partitions),
            "IDSTREAM_DATA_DIR": settings.data_dir,
            "IDSTREAM_HTTP_PORT": str(settings.http_port),
            "IDSTREAM_DEV_MODE": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    t = settings.topics
    for name in ("events", "resolved_events", "profile_changes", "profiles", "dead_letter"):
        env[f"IDSTREAM_TOPICS__{name.upper()}"] = getattr(t, name)
    env["IDSTREAM_TOPICS__CLAIMS"] = t.claims
    env["IDSTREAM_TOPICS__DECISIONS"] = t.decisions
    env["IDSTREAM_TOPICS__FORGET_REGISTER"] = t.forget_register
    return env


@contextlib.contextmanager
def worker(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    from idstream.devbroker import die_with_parent

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "idstream", "worker"],
            env=worker_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while READY_LINE not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise BrokerUnavailableError(f"the worker exited ({proc.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"the worker was not ready in {timeout} s: {log_path}")
        time.sleep(0.3)


def run_on_kafka(args: argparse.Namespace, bootstrap: str) -> int:
    with tempfile.TemporaryDirectory(prefix="idstream-demo-") as tmp:
        tmp_path = Path(tmp)
        settings = demo_settings(bootstrap, args.partitions, tmp_path / "state")
        log_path = tmp_path / "worker.log"
        asyncio.run(_create_topics(settings))
        say(f"starting a worker (app {settings.app_id}) …")
        with worker(settings, log_path) as proc:
            _wait_ready(proc, log_path)
            sim = traffic(args)
            say(f"sending ~{args.seconds:.0f} s of simulated SDK traffic at {args.rate}/s …")
            asyncio.run(_send(sim, settings, args.rate))
            say("waiting until the worker has processed every record …")
            asyncio.run(_wait_processed(settings, proc, log_path))
            records = asyncio.run(_read_outputs(settings))
            where = f"Kafka at {bootstrap}, 1 worker, {args.partitions} partitions"
            summary = summarize(sim.stats.labels, records)
            print(render(summary, where=where))
            sample = sample_person(summary)
            if not args.keep:
                _explorer_hint(None, sample)
                return 0
            _explorer_hint(settings.http_port, sample)
            with _until_interrupted():
                while proc.poll() is None:
                    time.sleep(0.5)
                say(f"the worker exited ({proc.returncode}); see {log_path}")
    return 0


async def _create_topics(settings: Settings) -> None:
    from idstream.drivers.faust.topics import ensure_topics

    await ensure_topics(settings)


async def _send(sim: Traffic, settings: Settings, rate: int) -> None:
    from idstream.simulate.cli import paced, produce

    def counted(records: Iterator[SimRecord]) -> Iterator[SimRecord]:
        last = time.monotonic()
        for n, record in enumerate(records, 1):
            if time.monotonic() - last >= 5:
                say(f"  sent {n}")
                last = time.monotonic()
            yield record

    await produce(
        counted(paced(iter(sim), rate)), settings.bootstrap_servers, settings.topics.events
    )


async def _wait_processed(
    settings: Settings, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 600
) -> None:
    from idstream.drivers.faust.topics import group_lag, pending_claims, pipeline_topics

    deadline = time.monotonic() + timeout
    caught_up = 0
    while caught_up < 2:  # twice: a decision can make the install stage send more
        if proc.poll() is not None:
            raise BrokerUnavailableError(f"the worker exited ({proc.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"the worker did not catch up in {timeout} s")
        lag = await group_lag(settings, pipeline_topics(settings))
        # Done when everything is read and no claim waits for a tick.
        quiet = lag == 0 and await pending_claims(settings) == 0
        caught_up = caught_up + 1 if quiet else 0
        await asyncio.sleep(0.5)


async def _read_outputs(settings: Settings) -> list[Record]:
    """Every record now in the four output topics, topic by topic, partition order kept."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    names = {
        OutputTopic.RESOLVED_EVENTS: settings.topics.resolved_events,
        OutputTopic.PROFILE_CHANGES: settings.topics.profile_changes,
        OutputTopic.PROFILES: settings.topics.profiles,
        OutputTopic.DEAD_LETTER: settings.topics.dead_letter,
    }
    records: list[Record] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await consumer.start()
    try:
        for topic, name in names.items():
            tps = [TopicPartition(name, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, messages in batch.items():
                    for m in messages:
                        key = m.key.decode() if m.key else ""
                        value = None if m.value is None else orjson.loads(m.value)
                        records.append((topic, key, value))
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return records
