"""End to end on a real broker: idstream workers (1, then 2) against the raw-aiokafka ceiling.

N simulated records are produced to an input topic with P partitions before any clock starts.
Each run starts `python -m idstream worker` subprocesses with their own IDSTREAM_* settings
(fresh app id, consumer group, internal and output topics, data dirs; the input is shared) and
times from spawning them to the group having committed every input, claim and decision record
(`idstream.drivers.faust.topics.group_lag` = 0 twice in a row). The ceiling
(`bench.ceiling.pipe`) runs on the same input in the same invocation. Latency: one more
worker, fed at a fraction (default 50 %) of the measured 1-worker rate; per input record, the
first resolved-event record's timestamp (the worker's producer) minus the time the input
record was sent (same host clock), and for a personalize also its first profile change. With
`--idle-partitions N` the paced traffic avoids the last N input partitions (the pool waits for
their ticks); the run also counts the tick records the worker appended to the input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bench.ceiling import (
    _PRODUCER,
    INPUT_CONFIG,
    _create_topics,
    _delete_topics,
    broker,
    fill,
    pipe,
)
from bench.harness import Report, Sample
from idstream.devbroker import die_with_parent, free_port
from idstream.drivers.faust.topics import group_lag, pipeline_topics
from idstream.drivers.partitioner import kafka_partition
from idstream.drivers.steps import TICK_HEADER
from idstream.settings import Settings, load_settings
from idstream.simulate import TrafficConfig
from idstream.simulate.traffic import Traffic
from idstream.storage.partitions import STAGE_TABLES

DESCRIPTION = "idstream workers on Kafka, spawn to all committed, vs the raw aiokafka ceiling"
READY_LINE = "[^Worker]: Ready"
_ROLES = (
    "resolved_events",
    "profile_changes",
    "profiles",
    "dead_letter",
    "claims",
    "decisions",
    "forget_register",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=50_000, help="input records (N)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of every topic")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to run, comma-separated (1,2)"
    )
    parser.add_argument(
        "--latency-share", type=float, default=0.5, help="paced rate / 1-worker rate (0.5)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="paced producing per run (20 s)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the workers, e.g. PRODUCER_LINGER=0.02 (Faust settings)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=None,
        help="latency only, paced at this rate/s (skips the throughput and ceiling runs)",
    )
    parser.add_argument(
        "--idle-partitions",
        type=int,
        default=0,
        help="latency traffic avoids the last N input partitions (0)",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency part")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling runs")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the first 1-worker run into this file (.txt: collapsed, else speedscope)",
    )


async def wait_committed(
    settings: Settings, topics: list[str], check: Callable[[], None], timeout: float = 900
) -> float:
    """Time of the first of two consecutive readings of group `settings.app_id` having
    committed everything in `topics` (a decision can add work); `check` raises if a
    process died."""
    deadline = time.perf_counter() + timeout
    first_zero: float | None = None
    while True:
        check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"group not caught up after {timeout} s")
        at = time.perf_counter()
        try:
            lag = await group_lag(settings, topics)
        except (KafkaError, OSError):  # coordinator moving, metadata not there yet
            lag = -1
        if lag == 0:
            if first_zero is not None:
                return first_zero
            first_zero = at
        else:
            first_zero = None
        await asyncio.sleep(0.25)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the live processes `pids` so far (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Deployment:
    """One idstream deployment: settings, worker processes and their logs."""

    def __init__(
        self, bootstrap: str, source: str, partitions: int, root: Path, extra: list[str]
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.root = root / tag
        self.root.mkdir(parents=True)
        self.partitions = partitions
        self.env: dict[str, str] = {
            "IDSTREAM_BOOTSTRAP_SERVERS": bootstrap,
            "IDSTREAM_APP_ID": f"bench-e2e-{tag}",
            "IDSTREAM_PARTITIONS": str(partitions),
            "IDSTREAM_TOPICS__EVENTS": source,
            # Benchmark data: the public dev key for hashes of personal data.
            "IDSTREAM_DEV_MODE": "true",
        }
        self.extra = dict(item.split("=", 1) for item in extra)
        for role in _ROLES:
            name = role.replace("_", "-")
            self.env[f"IDSTREAM_TOPICS__{role.upper()}"] = f"bench.e2e.{tag}.{name}"
        self.settings: Settings = load_settings(environ=self.env)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.ports: list[int] = []

    async def create_topics(self, configs: dict[str, dict[str, str]] | None = None) -> None:
        # Made here, not by the worker: right after creating, a describe can still show no
        # partitions, which `ensure_topics` takes for a partition-count mismatch.
        await _create_topics(
            self.env["IDSTREAM_BOOTSTRAP_SERVERS"], self.topics(), self.partitions, configs
        )

    def start(self, count: int) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("IDSTREAM_")}
        for i in range(count):
            self.ports.append(free_port())
            env = {
                **base,
                **self.env,
                **self.extra,
                "IDSTREAM_DATA_DIR": str(self.root / f"worker-{i}"),
                "IDSTREAM_HTTP_PORT": str(self.ports[-1]),
            }
            log = self.root / f"worker-{i}.log"
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "idstream", "worker"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=die_with_parent,
                    )
                )
            self.logs.append(log)

    def check(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker exited {proc.returncode}:\n{tail}")

    def ready(self) -> int:
        return sum(READY_LINE in log.read_text(errors="replace") for log in self.logs)

    async def wait_ready(self, count: int, timeout: float = 180) -> float:
        deadline = time.perf_counter() + timeout
        while self.ready() < count:
            self.check()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"workers not ready after {timeout} s")
            await asyncio.sleep(0.1)
        return time.perf_counter()

    async def wait_committed(self, timeout: float = 900) -> float:
        """Time of the first of two consecutive lag-0 readings (a decision can add work)."""
        return await wait_committed(
            self.settings, pipeline_topics(self.settings), self.check, timeout
        )

    async def produced(self) -> dict[str, int]:
        """Records the workers wrote: outputs, internal topics, table changelogs."""
        app_id = self.env["IDSTREAM_APP_ID"]
        changelogs = [f"{app_id}-{t}-changelog" for t in STAGE_TABLES]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.env["IDSTREAM_BOOTSTRAP_SERVERS"])
        await consumer.start()
        try:
            tps = [
                TopicPartition(t, p)
                for t in [*self.topics(), *changelogs]
                for p in range(self.partitions)
            ]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        counts: dict[str, int] = {}
        for tp, end in ends.items():
            kind = "changelog" if tp.topic in changelogs else tp.topic.rsplit(".", 1)[1]
            counts[kind] = counts.get(kind, 0) + end
        return counts

    def cpu_seconds(self) -> float:
        """User + system CPU time of the live workers so far (all their threads)."""
        return cpu_seconds([proc.pid for proc in self.procs])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def topics(self) -> list[str]:
        return [self.env[f"IDSTREAM_TOPICS__{role.upper()}"] for role in _ROLES]


async def _throughput(
    bootstrap: str, source: str, args: argparse.Namespace, workers: int, root: Path, profile: bool
) -> Sample:
    dep = Deployment(bootstrap, source, args.partitions, root, args.worker_env)
    spy: subprocess.Popen[bytes] | None = None
    try:
        await dep.create_topics()
        started = time.perf_counter()
        dep.start(workers)
        if profile and args.profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "--pid",
                    str(dep.procs[0].pid),
                    "--rate",
                    "200",
                    "--format",
                    "raw" if args.profile.suffix == ".txt" else "speedscope",
                    "--output",
                    str(args.profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ready = await dep.wait_ready(1)
        done = await dep.wait_committed()
        cpu = dep.cpu_seconds()
        produced = await dep.produced()
        return Sample(
            args.events,
            done - started,
            {
                "workers": workers,
                "start-up s": round(ready - started, 1),
                "after start-up /s": round(args.events / (done - ready)),
                "worker CPU s": round(cpu, 1),
                "records written per input": round(sum(produced.values()) / args.events, 1),
                "changelog records per input": round(produced["changelog"] / args.events, 1),
            },
        )
    finally:
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its file
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(60)
        dep.stop()
        with contextlib.suppress(Exception):
            await _delete_topics(bootstrap, dep.topics())


async def _latency(
    bootstrap: str, args: argparse.Namespace, rate: float, root: Path
) -> dict[str, Any]:
    """Paced producing at `rate`/s to a fresh input; latency per resolved event, in ms."""
    tag = uuid.uuid4().hex[:8]
    source = f"bench.e2e.lat.{tag}"
    await _create_topics(bootstrap, [source], args.partitions, {source: INPUT_CONFIG})
    dep = Deployment(bootstrap, source, args.partitions, root, args.worker_env)
    paced = max(100, int(rate * args.latency_seconds))
    warm = 50
    busy = args.partitions - args.idle_partitions
    records = [
        r
        for r in Traffic(TrafficConfig(events=2 * (warm + paced), users=max(1000, paced // 100)))
        if kafka_partition(r.key, args.partitions) < busy
    ][: warm + paced]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **_PRODUCER)
    sent: dict[str, tuple[int, str]] = {}
    try:
        await dep.create_topics()
        dep.start(1)
        await dep.wait_ready(1)
        await producer.start()
        for record in records[:warm]:
            await producer.send(source, record.value, key=record.key)
        await producer.flush()
        # Warm-up consumed and committed: partitions are assigned, tables open.
        await dep.wait_committed()
        ticks_before = await _ticks(bootstrap, source, args.partitions)
        tick = 0.01
        per_tick = rate * tick
        started = time.perf_counter()
        due = 0.0
        for i, record in enumerate(records[warm:]):
            due = i / per_tick * tick
            wait = started + due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            stamp = int(time.time() * 1000)
            await producer.send(source, record.value, key=record.key, timestamp_ms=stamp)
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
                sent[orjson.loads(record.value)["eventId"]] = (stamp, record.label)
        await producer.flush()
        produced_for = time.perf_counter() - started
        ticks = await _ticks(bootstrap, source, args.partitions) - ticks_before
        await dep.wait_committed()
        hops = await asyncio.to_thread(_hop_latencies, dep.ports[0])
        resolved = await _output_latencies(
            bootstrap, dep.env["IDSTREAM_TOPICS__RESOLVED_EVENTS"], args.partitions, sent
        )
        changes = await _output_latencies(
            bootstrap, dep.env["IDSTREAM_TOPICS__PROFILE_CHANGES"], args.partitions, sent
        )
    finally:
        await producer.stop()
        dep.stop()
        with contextlib.suppress(Exception):
            await _delete_topics(bootstrap, [source, *dep.topics()])
    lat = sorted(resolved.values())
    personalized = sorted(v for k, v in resolved.items() if sent[k][1] == "personalize")
    changed = sorted(v for k, v in changes.items() if sent[k][1] == "personalize")
    return {
        "paced_rate": round(paced / produced_for),
        "inputs": paced,
        "idle_partitions": args.idle_partitions,
        "matched": len(lat),
        "p50_ms": _pct(lat, 0.50),
        "p99_ms": _pct(lat, 0.99),
        "max_ms": lat[-1] if lat else None,
        "personalize_resolved": len(personalized),
        "personalize_resolved_p50_ms": _pct(personalized, 0.50),
        "personalize_resolved_p99_ms": _pct(personalized, 0.99),
        "personalize_change_p50_ms": _pct(changed, 0.50),
        "personalize_change_p99_ms": _pct(changed, 0.99),
        "ticks": ticks,
        "ticks_per_day": round(ticks / produced_for * 86_400),
        **hops,
    }


def _hop_latencies(port: int) -> dict[str, str]:
    """Per stage hop, the histogram bucket that holds the median and the 99th percentile of
    `idstream_processing_latency_seconds` (record timestamp to outputs sent: for the pool,
    from the claim record, so waiting for the watermark included), from the worker's
    /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        if not line.startswith("idstream_processing_latency_seconds_bucket{"):
            continue
        labels, value = line.rsplit(" ", 1)
        stage = labels.split('stage="', 1)[1].split('"', 1)[0]
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        buckets.setdefault(stage, []).append((float(le), float(value)))
    out: dict[str, str] = {}
    for stage, counts in buckets.items():
        total = counts[-1][1]
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            bound = next(le for le, n in counts if n >= q * total)
            out[f"{stage}_hop_{name}_s_le"] = "+Inf" if bound == float("inf") else f"{bound:g}"
    return out


async def _ticks(bootstrap: str, topic: str, partitions: int) -> int:
    """Tick records in the input topic now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                count += sum(
                    1 for rec in records if any(k == TICK_HEADER for k, _ in rec.headers or ())
                )
        return count
    finally:
        await consumer.stop()


def _pct(values: list[int], q: float) -> int | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


async def _output_latencies(
    bootstrap: str, topic: str, partitions: int, sent: dict[str, tuple[int, str]]
) -> dict[str, int]:
    """First output record per input event id: output timestamp - input send time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        seen: dict[str, int] = {}
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for rec in records:
                    if rec.value is None:  # a tombstone
                        continue
                    event_id = orjson.loads(rec.value).get("eventId")
                    if event_id in sent and event_id not in seen:
                        seen[event_id] = rec.timestamp - sent[event_id][0]
        return seen
    finally:
        await consumer.stop()


async def _measure(bootstrap: str, args: argparse.Namespace, report: Report) -> None:
    tag = uuid.uuid4().hex[:8]
    source = f"bench.e2e.in.{tag}"
    sinks = [f"bench.e2e.ceiling.{tag}.{i}" for i in range(args.runs)]
    counts = [int(w) for w in args.workers.split(",")]
    await _create_topics(bootstrap, [source, *sinks], args.partitions, {source: INPUT_CONFIG})
    by_workers: dict[int, list[Sample]] = {w: [] for w in counts}
    ceiling: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="idstream-bench-e2e-") as tmp:
        root = Path(tmp)
        try:
            if args.latency_rate is None:
                produced = await fill(bootstrap, source, args.events)
                report.notes.append(f"pre-producing the input ran at {produced.rate:,.0f}/s")
            for run in range(0 if args.latency_rate is not None else args.runs):
                # Interleaved, so a change in the host's load hits every variant alike.
                for w in counts:
                    sample = await _throughput(bootstrap, source, args, w, root, run == 0)
                    by_workers[w].append(sample)
                    report.samples.append(sample)
                    print(f"  {w} worker(s): {sample.rate:,.0f}/s {sample.extra}", flush=True)
                if not args.no_ceiling:
                    c = await pipe(bootstrap, source, sinks[run], args.partitions, args.events)
                    ceiling.append(c)
                    print(f"  ceiling: {c.rate:,.0f}/s", flush=True)
            if args.latency_rate is not None or (not args.no_latency and 1 in by_workers):
                steady = (
                    args.latency_rate / args.latency_share
                    if args.latency_rate is not None
                    else statistics.median(
                        float(s.extra["after start-up /s"]) for s in by_workers[1]
                    )
                )
                rate = steady * args.latency_share
                lats = []
                for _ in range(args.runs):
                    lat = await _latency(bootstrap, args, rate, root)
                    print(f"  latency: {lat}", flush=True)
                    lats.append(lat)
                report.params["latency_runs"] = lats
                report.notes.append(_latency_note(lats, args.latency_share, steady))
        finally:
            with contextlib.suppress(Exception):
                await _delete_topics(bootstrap, [source, *sinks])
    for w, samples in by_workers.items():
        if not samples:
            continue
        report.notes.append(_rate_note(f"{w} worker(s), spawn to all committed", samples))
        after = [float(s.extra["after start-up /s"]) for s in samples]
        report.notes.append(
            f"{w} worker(s), after start-up: median {statistics.median(after):,.0f}/s "
            f"(min {min(after):,.0f}, max {max(after):,.0f})"
        )
    if ceiling:
        report.params["ceiling_runs"] = [round(c.rate) for c in ceiling]
        report.notes.append(_rate_note("ceiling (raw aiokafka, same input)", ceiling))
        top = statistics.median(c.rate for c in ceiling)
        for w, samples in by_workers.items():
            if not samples:
                continue
            ratio = statistics.median(s.rate for s in samples) / top
            report.notes.append(f"{w} worker(s) / ceiling = {ratio:.3f} (medians)")


def _rate_note(label: str, samples: list[Sample]) -> str:
    rates = [s.rate for s in samples]
    return (
        f"{label}: median {statistics.median(rates):,.0f}/s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rates)} runs)"
    )


def _latency_note(lats: list[dict[str, Any]], share: float, steady: float) -> str:
    def med(key: str) -> str:
        values = [x[key] for x in lats if x[key] is not None]
        if not values:
            return "-"
        return f"{statistics.median(values):,.0f} ({min(values)}-{max(values)})"

    paced = statistics.median(x["paced_rate"] for x in lats)
    if not any(x["p50_ms"] is not None for x in lats):
        return "latency: no resolved events matched"
    idle = lats[0]["idle_partitions"]
    return (
        f"latency at {paced:,.0f}/s ({share:.0%} of the 1-worker after-start-up median "
        f"{steady:,.0f}/s), {idle} idle input partition(s), medians (min-max) of {len(lats)} "
        f"runs, ms: resolved p50 {med('p50_ms')}, p99 {med('p99_ms')}; personalize to its "
        f"resolved event p50 {med('personalize_resolved_p50_ms')}, p99 "
        f"{med('personalize_resolved_p99_ms')}; personalize to its profile change p50 "
        f"{med('personalize_change_p50_ms')}, p99 {med('personalize_change_p99_ms')}; ticks "
        f"per day at this rate {med('ticks_per_day')}"
    )


def run(args: argparse.Namespace) -> Report:
    report = Report(
        "e2e",
        DESCRIPTION,
        params={
            "events": args.events,
            "partitions": args.partitions,
            "workers": args.workers,
            "producer": _PRODUCER,
            "worker_env": args.worker_env,
            "idle_partitions": args.idle_partitions,
        },
    )
    with broker() as bootstrap:
        report.params["broker"] = (
            "KAFKA_BOOTSTRAP_SERVERS" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "LocalKafka"
        )
        asyncio.run(_measure(bootstrap, args, report))
    return report
