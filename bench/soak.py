"""Soak under faults: one idstream worker on a 3-node cluster for M minutes of live traffic,
with a worker and a broker killed (kill -9) and restarted at seeded random times.

In one invocation, on one cluster it starts itself (`LocalKafka(nodes=3)`): first the 1-worker
rate after start-up on a pre-produced backlog (as `e2e` measures it), then live traffic paced
at `--share` (0.5) of that rate for `--minutes`. Every second: the group's lag (input, claims,
decisions) and the worker's RSS. Faults alternate (seeded order and times, one per slot of
the run): a worker killed and started again at once on its data dir; a broker (seeded choice
of node) killed and started again after 5-30 s. Recovery of a fault: from the kill to the
first lag sample back at the steady lag (90th percentile of the minute before the fault:
committed offsets trail by a commit interval) plus `--caught-up` seconds of traffic. At the
end the traffic stops, the worker commits everything and stops, and its digest is compared
with the in-process driver's over the input log on the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.ceiling import INPUT_CONFIG, _create_topics, fill
from bench.e2e import Deployment, _throughput, wait_committed
from bench.harness import Report, Sample
from idstream.devbroker import LocalKafka
from idstream.digest import RESOLVER_DIGEST_EXCLUDED, RESOLVER_TABLE_TYPES, state_digest
from idstream.drivers.faust.replayed import replayed
from idstream.drivers.faust.topics import ensure_topics, group_lag, pipeline_topics
from idstream.simulate import Traffic, TrafficConfig
from idstream.storage.partitions import STAGE_TABLES, latest_partition_dbs, load_tables

DESCRIPTION = "1 worker on 3 brokers, live traffic, a worker and a broker killed at random"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0, help="live traffic (30)")
    parser.add_argument("--seed", type=int, default=18, help="traffic and fault schedule (18)")
    parser.add_argument("--share", type=float, default=0.5, help="paced / 1-worker rate (0.5)")
    parser.add_argument(
        "--calibrate-events", type=int, default=20_000, help="backlog of the rate run (20,000)"
    )
    parser.add_argument("--faults", type=int, default=0, help="faults (0: 2 per 10 minutes, >=2)")
    parser.add_argument(
        "--caught-up", type=float, default=2.0, help="recovered: lag <= this many s of traffic"
    )
    parser.add_argument("--partitions", type=int, default=6)


@dataclass
class Fault:
    kind: str  # "worker" | "broker"
    at: float  # seconds into the live run
    node: int = 0
    down_s: float = 0.0
    threshold: float = 0.0
    recovered_s: float | None = None


@dataclass
class Run:
    """What the sampler and the fault loop saw."""

    started: float = field(default_factory=time.monotonic)
    lags: list[tuple[float, int | None]] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (t, worker pid, KiB)

    def now(self) -> float:
        return time.monotonic() - self.started


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def schedule(rng: random.Random, count: int, seconds: float) -> list[Fault]:
    """`count` faults, alternating kinds in a seeded order, one at a random time in each of
    `count` equal slots of the middle 80 % of the run (never two at once)."""
    kinds = ["worker", "broker"] * (count // 2) + (["worker"] if count % 2 else [])
    rng.shuffle(kinds)
    slot = 0.8 * seconds / count
    return [
        Fault(kind, 0.1 * seconds + i * slot + rng.uniform(0, 0.5 * slot))
        for i, kind in enumerate(kinds)
    ]


async def _lag(dep: Deployment) -> int | None:
    try:
        return await asyncio.wait_for(
            group_lag(dep.settings, pipeline_topics(dep.settings)), timeout=5
        )
    except Exception:  # noqa: BLE001 - a broker away: no sample this second
        return None


async def _sample(dep: Deployment, run: Run, stop: asyncio.Event) -> None:
    shown = 0.0
    while not stop.is_set():
        at = run.now()
        lag = await _lag(dep)
        run.lags.append((at, lag))
        proc = dep.procs[-1]
        kib = rss_kib(proc.pid) if proc.poll() is None else None
        if kib is not None:
            run.rss.append((at, proc.pid, kib))
        if at - shown >= 30:
            shown = at
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            print(f"  {at:6.0f} s: lag {lag}, RSS {kib} KiB, worker {state}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _send(bootstrap: str, topic: str, traffic: Traffic, rate: float) -> int:
    # One idempotent producer: through a broker failover it retries, losing and doubling nothing.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=180_000,
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    try:
        pending = []
        for sent, record in enumerate(traffic, 1):
            pending.append(await producer.send(topic, record.value, key=record.key))
            ahead = started + sent / rate - loop.time()
            if ahead > 0.01:
                await asyncio.sleep(ahead)
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def _restart_worker(dep: Deployment) -> None:
    """kill -9 the running worker, start another on the same data dir at once."""
    proc = dep.procs.pop()
    proc.kill()
    proc.wait()
    log = dep.logs.pop()
    # The next worker writes the same log file: keep this one's.
    log.rename(log.with_name(f"{log.stem}-killed-{proc.pid}.log"))
    dep.start(1)


def _steady(run: Run, before: float, window: float = 60.0) -> float:
    """The 90th percentile of the lag in the `window` seconds before `before`: what the lag
    is without a fault (committed offsets trail by a commit interval of every topic)."""
    lags = sorted(lag for at, lag in run.lags if before - window <= at < before and lag is not None)
    return float(lags[int(0.9 * (len(lags) - 1))]) if lags else 0.0


async def _recovered(run: Run, since: float, threshold: float, timeout: float) -> float | None:
    """Seconds from the fault to the first lag sample at most `threshold` (None: not within
    `timeout`)."""
    deadline = time.monotonic() + timeout
    seen = len(run.lags)
    while time.monotonic() < deadline:
        for at, lag in run.lags[seen:]:
            if at > since and lag is not None and lag <= threshold:
                return at - since
        seen = len(run.lags)
        await asyncio.sleep(0.5)
    print(f"  not caught up {timeout:.0f} s after the fault at {since:.0f} s", flush=True)
    return None


async def _faults(
    kafka: LocalKafka,
    dep: Deployment,
    run: Run,
    faults: list[Fault],
    rng: random.Random,
    extra: float,
) -> None:
    """Stage each fault at its time; wait until the worker has caught up after it: its lag
    back to the steady lag before the fault plus `extra` records."""
    for fault in faults:
        await asyncio.sleep(max(0.0, fault.at - run.now()))
        fault.at = run.now()
        fault.threshold = _steady(run, fault.at) + extra
        if fault.kind == "worker":
            _restart_worker(dep)
            await dep.wait_ready(1)
        else:
            fault.node = rng.choice([n.node_id for n in kafka.nodes])
            fault.down_s = rng.uniform(5, 30)
            kafka.kill(fault.node)
            await asyncio.sleep(fault.down_s)
            # Started from this thread (the JVM dies with it), waited for in another.
            kafka.start_node(fault.node)
            await asyncio.to_thread(kafka.wait_ready)
        fault.recovered_s = await _recovered(run, fault.at, fault.threshold, 300)
        print(f"  {fault}", flush=True)


async def _calibrate(bootstrap: str, args: argparse.Namespace, root: Path) -> float:
    source = f"bench.soak.cal.{uuid.uuid4().hex[:8]}"
    await _create_topics(bootstrap, [source], args.partitions, {source: INPUT_CONFIG})
    await fill(bootstrap, source, args.calibrate_events)
    ns = argparse.Namespace(
        events=args.calibrate_events, partitions=args.partitions, worker_env=[], profile=None
    )
    sample = await _throughput(bootstrap, source, ns, 1, root, False)
    return float(sample.extra["after start-up /s"])


def _digest(root: Path) -> str:
    tables = load_tables(latest_partition_dbs(root, STAGE_TABLES), RESOLVER_TABLE_TYPES)
    return state_digest(tables, RESOLVER_DIGEST_EXCLUDED)


async def _soak(kafka: LocalKafka, args: argparse.Namespace, report: Report) -> None:
    bootstrap = kafka.bootstrap_servers
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="idstream-bench-soak-"))
    try:
        one_worker = await _calibrate(bootstrap, args, root)
        rate = one_worker * args.share
        seconds = args.minutes * 60
        events = int(rate * seconds)
        print(f"  1 worker: {one_worker:,.0f}/s; live traffic at {rate:,.0f}/s", flush=True)
        source = f"bench.soak.in.{uuid.uuid4().hex[:8]}"
        dep = Deployment(bootstrap, source, args.partitions, root, [])
        await ensure_topics(dep.settings)
        dep.start(1)
        await dep.wait_ready(1)
        traffic = Traffic(
            TrafficConfig(seed=args.seed, users=max(1000, events // 100), events=events)
        )
        faults = schedule(rng, max(2, args.faults or int(args.minutes / 5)), seconds)
        run = Run()
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(dep, run, stop))
        try:
            sending = asyncio.create_task(_send(bootstrap, source, traffic, rate))
            await _faults(kafka, dep, run, faults, rng, max(50.0, rate * args.caught_up))
            sent = await sending
            sent_for = run.now()
            # Every record processed: only the live worker is checked for exits.
            await wait_committed(dep.settings, pipeline_topics(dep.settings), dep.check, 900)
            done = run.now()
        finally:
            stop.set()
            await sampler
            dep.stop()
        expected, _ = await replayed(dep.settings)
        worker_digest = _digest(dep.root)
    except BaseException:
        # Kept for a look: the workers' logs and data dirs.
        print(f"  soak failed; workers' logs and data kept in {root}", flush=True)
        raise
    shutil.rmtree(root, ignore_errors=True)
    report.samples.append(Sample(sent, done, {"sent for s": round(sent_for, 1)}))
    _notes(report, one_worker, rate, faults, run, worker_digest == expected)
    report.params.update(
        {
            "one_worker_rate": round(one_worker),
            "paced_rate": round(rate),
            "faults": [vars(f) for f in faults],
            "digest_equal": worker_digest == expected,
            "digest": worker_digest,
            "expected": expected,
        }
    )
    if worker_digest != expected:
        raise AssertionError(f"digest {worker_digest} != in-process {expected}")


def _notes(
    report: Report, one_worker: float, rate: float, faults: list[Fault], run: Run, equal: bool
) -> None:
    lags = [lag for _, lag in run.lags if lag is not None]
    report.notes.append(
        f"1-worker rate after start-up {one_worker:,.0f}/s; live traffic at {rate:,.0f}/s"
    )
    for f in faults:
        where = f"node {f.node} down {f.down_s:.0f} s" if f.kind == "broker" else "kill -9"
        back = "not within 300 s" if f.recovered_s is None else f"after {f.recovered_s:.1f} s"
        report.notes.append(
            f"{f.kind} fault at {f.at:.0f} s ({where}): caught up (lag <= {f.threshold:,.0f}) "
            f"{back}"
        )
    recoveries = [f.recovered_s for f in faults if f.recovered_s is not None]
    if recoveries:
        report.notes.append(
            f"recovery: median {statistics.median(recoveries):.1f} s, max {max(recoveries):.1f} s"
        )
    missing = sum(1 for _, lag in run.lags if lag is None)
    report.notes.append(
        f"lag: max {max(lags, default=0):,} records, median {statistics.median(lags or [0]):,.0f}"
        f" ({len(lags)} samples, {missing} without an answer)"
    )
    report.notes.append(_rss_note(run))
    report.notes.append(f"digest equal to the in-process driver's: {equal}")


def _rss_note(run: Run) -> str:
    """RSS of each worker process; the drift of the longest-lived one from 60 s after its
    first sample (start-up and restore done) to its last."""
    by_pid: dict[int, list[tuple[float, int]]] = {}
    for at, pid, kib in run.rss:
        by_pid.setdefault(pid, []).append((at, kib))
    if not by_pid:
        return "RSS: no samples"
    peak = max(kib for _, _, kib in run.rss) / 1024
    life = max(by_pid.values(), key=lambda s: s[-1][0] - s[0][0])
    settled = [s for s in life if s[0] >= life[0][0] + 60] or life
    minutes = (settled[-1][0] - settled[0][0]) / 60
    drift = (settled[-1][1] - settled[0][1]) / 1024
    return (
        f"worker RSS: peak {peak:,.0f} MiB; longest-lived worker {settled[0][1] / 1024:,.0f} -> "
        f"{settled[-1][1] / 1024:,.0f} MiB over {minutes:.1f} min ({drift:+.0f} MiB)"
    )


def run(args: argparse.Namespace) -> Report:
    report = Report(
        "soak",
        DESCRIPTION,
        params={
            "minutes": args.minutes,
            "seed": args.seed,
            "share": args.share,
            "calibrate_events": args.calibrate_events,
            "partitions": args.partitions,
            "brokers": 3,
        },
    )
    # aiokafka logs every refused connection while a broker is down: thousands of lines.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with LocalKafka(nodes=3, ready_timeout=180) as kafka:
        asyncio.run(_soak(kafka, args, report))
    return report
