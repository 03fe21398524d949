"""Side by side with a peer: the raw aiokafka ceiling, a Quix Streams app and idstream's worker.

N simulated records are produced once to an input topic with P partitions of one real broker.
Each run then spawns, one after the other and each with its own group, outputs and state:

- ceiling: `python -m bench.ceiling` (bench/ceiling.py's loop: orjson decode, one output per
  input, no state; partitions assigned by hand); done when it exits, all read and flushed;
- quix: `python -m bench.quix_dedup`, a Quix Streams app doing the launch dedup (RocksDB state
  per pushRegistrationId, one JSON output per accepted event); done when its group has
  committed the whole input;
- idstream: `python -m idstream worker` (bench/e2e.py's `Deployment`); done when its group
  has committed every input, claim and decision. It reads a copy of the input made for the
  run (the same N records, produced before its clock starts), because a worker appends tick
  records to an input partition a pool waits for (SPEC §5), and the other systems must read
  exactly the N records.

Rate after start-up, the same for all three: N / (time of the last output record - time of
the first), both stamped by the broker (every output topic has
`message.timestamp.type=LogAppendTime`); idstream's outputs are the four topics a downstream
consumer reads. Also per run: spawn to done, start-up (spawn to the first output), CPU seconds
of the process at done. Checks, or the run fails: the ceiling wrote N records, Quix wrote
exactly as many as the dedup accepts (counted here from the same simulated input), idstream's
group lag is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.ceiling import (
    _PRODUCER,
    INPUT_CONFIG,
    _create_topics,
    _delete_topics,
    broker,
    fill,
    traffic_config,
)
from bench.e2e import Deployment, cpu_seconds, wait_committed
from bench.harness import Report, Sample
from idstream.devbroker import die_with_parent
from idstream.drivers.faust.topics import changelog_topics, topic_configs
from idstream.settings import load_settings
from idstream.simulate.traffic import Traffic

DESCRIPTION = (
    "idstream's worker, a Quix Streams app (launch dedup) and the raw ceiling on one input, "
    "rate after start-up (first to last output record)"
)
SYSTEMS = ("ceiling", "quix", "idstream")
ROOT = Path(__file__).resolve().parents[1]
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
DEDUP_MS = 30_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=100_000, help="input records (N)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of every topic")
    parser.add_argument("--no-idstream", action="store_true", help="skip idstream's worker")
    parser.add_argument("--no-quix", action="store_true", help="skip the Quix Streams app")


@dataclass(frozen=True)
class PeerRun:
    """One system's run: when it was spawned and done, its output span, CPU and outputs."""

    system: str
    events: int
    spawned_at: float  # wall clock (s), to compare with the broker's stamps
    spawn_to_done: float
    first_ms: int
    last_ms: int
    cpu: float
    outputs: int
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def rate(self) -> float:
        """Events per second after start-up: N over the first-to-last output span."""
        return self.events / max(self.last_ms - self.first_ms, 1) * 1000

    def sample(self) -> Sample:
        return Sample(
            self.events,
            (self.last_ms - self.first_ms) / 1000,
            {
                "system": self.system,
                "spawn to done s": round(self.spawn_to_done, 1),
                "start-up s": round(self.first_ms / 1000 - self.spawned_at, 1),
                "CPU s": round(self.cpu, 1),
                "per CPU-second": round(self.events / self.cpu) if self.cpu else None,
                "outputs": self.outputs,
                "load 1 min": round(self.load, 2),
            },
        )


def accepted_by_dedup(events: int) -> int:
    """How many of the simulated input events the launch dedup lets through."""
    last: dict[bytes, int] = {}
    accepted = 0
    for record in Traffic(traffic_config(events)):
        event = orjson.loads(record.value)
        if event.get("type") == "appLaunch":
            stamp = event["timestamp"]
            if isinstance(stamp, str):
                stamp = round(datetime.fromisoformat(stamp).timestamp() * 1000)
            before = last.get(record.key)
            if before is not None and abs(stamp - before) <= DEDUP_MS:
                continue
            last[record.key] = stamp if before is None else max(before, stamp)
        accepted += 1
    return accepted


async def output_span(bootstrap: str, topics: list[str], partitions: int) -> tuple[int, int, int]:
    """(first record's timestamp, last record's timestamp, records) over `topics`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        filled = [tp for tp in tps if ends[tp] > starts[tp]]
        if not filled:
            raise RuntimeError(f"no output records in {', '.join(topics)}")
        consumer.assign(filled)
        stamps = []
        # LogAppendTime grows with the offset: a partition's first and last record suffice.
        for tp in filled:
            for offset in (starts[tp], ends[tp] - 1):
                consumer.seek(tp, offset)
                stamps.append((await consumer.getone(tp)).timestamp)
        return min(stamps), max(stamps), sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _died(proc: subprocess.Popen[bytes], log: Path, name: str) -> RuntimeError:
    tail = log.read_text(errors="replace")[-3000:]
    return RuntimeError(f"{name} exited {proc.returncode}:\n{tail}")


class Bench:
    """The shared input and what each system's run needs: broker, sizes, a scratch folder."""

    def __init__(self, bootstrap: str, args: argparse.Namespace, root: Path) -> None:
        self.bootstrap = bootstrap
        self.events: int = args.events
        self.partitions: int = args.partitions
        self.root = root
        self.source = f"bench.peers.in.{uuid.uuid4().hex[:8]}"

    async def ceiling(self) -> PeerRun:
        sink = f"bench.peers.ceiling.{uuid.uuid4().hex[:8]}"
        await _create_topics(self.bootstrap, [sink], self.partitions, {sink: APPEND_TIME})
        log = self.root / f"{sink}.log"
        try:
            command = [sys.executable, "-m", "bench.ceiling", self.bootstrap, self.source, sink]
            spawned_at, started = time.time(), time.perf_counter()
            proc = _spawn([*command, str(self.partitions), str(self.events)], log)
            # wait4 for the child's own CPU time (all its threads); polled, to keep a deadline.
            deadline = started + 900
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    _stop(proc)
                    raise TimeoutError("the ceiling loop did not finish in 900 s")
                await asyncio.sleep(0.02)
            done = time.perf_counter()
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                raise _died(proc, log, "the ceiling loop")
            first, last, outputs = await output_span(self.bootstrap, [sink], self.partitions)
            if outputs != self.events:
                raise RuntimeError(f"ceiling wrote {outputs:,} records for {self.events:,} inputs")
            cpu = usage.ru_utime + usage.ru_stime
            return PeerRun(
                "ceiling", self.events, spawned_at, done - started, first, last, cpu, outputs
            )
        finally:
            with contextlib.suppress(Exception):
                await _delete_topics(self.bootstrap, [sink])

    async def quix(self, expected: int) -> PeerRun:
        tag = uuid.uuid4().hex[:8]
        group, sink = f"bench-peers-quix-{tag}", f"bench.peers.quix.{tag}"
        await _create_topics(self.bootstrap, [sink], self.partitions, {sink: APPEND_TIME})
        log = self.root / f"quix-{tag}.log"
        command = [sys.executable, "-m", "bench.quix_dedup", "--bootstrap", self.bootstrap]
        command += ["--input", self.source, "--output", sink, "--group", group]
        command += ["--state-dir", str(self.root / f"quix-{tag}")]
        settings = load_settings(
            environ={
                "IDSTREAM_BOOTSTRAP_SERVERS": self.bootstrap,
                "IDSTREAM_APP_ID": group,
                "IDSTREAM_PARTITIONS": str(self.partitions),
            }
        )
        try:
            spawned_at, started = time.time(), time.perf_counter()
            proc = _spawn(command, log)

            def check() -> None:
                if proc.poll() is not None:
                    raise _died(proc, log, "the Quix Streams app")

            try:
                done = await wait_committed(settings, [self.source], check)
                cpu = cpu_seconds([proc.pid])
                first, last, outputs = await output_span(self.bootstrap, [sink], self.partitions)
            finally:
                _stop(proc)
            if outputs != expected:
                raise RuntimeError(
                    f"Quix wrote {outputs:,} records, the dedup accepts {expected:,}"
                )
            return PeerRun(
                "quix", self.events, spawned_at, done - started, first, last, cpu, outputs
            )
        finally:
            with contextlib.suppress(Exception):
                await _delete_topics(
                    self.bootstrap, [sink, *await self._topics(f"changelog__{group}--")]
                )

    async def idstream(self) -> PeerRun:
        source = f"bench.peers.in-idstream.{uuid.uuid4().hex[:8]}"
        await _create_topics(self.bootstrap, [source], self.partitions, {source: INPUT_CONFIG})
        dep = Deployment(self.bootstrap, source, self.partitions, self.root, [])
        t = dep.settings.topics
        outputs = [t.resolved_events, t.profile_changes, t.profiles, t.dead_letter]
        configs = topic_configs(dep.settings)
        try:
            await fill(self.bootstrap, source, self.events)
            await dep.create_topics(
                {
                    n: {**configs[n], **APPEND_TIME} if n in outputs else configs[n]
                    for n in dep.topics()
                }
            )
            spawned_at, started = time.time(), time.perf_counter()
            dep.start(1)
            try:
                done = await dep.wait_committed()
                cpu = dep.cpu_seconds()
                first, last, written = await output_span(self.bootstrap, outputs, self.partitions)
            finally:
                dep.stop()
            return PeerRun(
                "idstream", self.events, spawned_at, done - started, first, last, cpu, written
            )
        finally:
            with contextlib.suppress(Exception):
                await _delete_topics(
                    self.bootstrap, [source, *dep.topics(), *changelog_topics(dep.settings)]
                )

    async def _topics(self, prefix: str) -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            return [t for t in await admin.list_topics() if t.startswith(prefix)]
        finally:
            await admin.close()


async def _measure(bootstrap: str, args: argparse.Namespace, report: Report) -> None:
    systems = [s for s in SYSTEMS if not getattr(args, f"no_{s}", False)]
    runs: dict[str, list[PeerRun]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory(prefix="idstream-bench-peers-") as tmp:
        bench = Bench(bootstrap, args, Path(tmp))
        await _create_topics(
            bootstrap, [bench.source], args.partitions, {bench.source: INPUT_CONFIG}
        )
        try:
            produced = await fill(bootstrap, bench.source, args.events)
            report.notes.append(f"pre-producing the input ran at {produced.rate:,.0f}/s")
            expected = accepted_by_dedup(args.events) if "quix" in systems else 0
            report.params["accepted_by_dedup"] = expected
            for i in range(args.runs):
                # Interleaved, so a change in the host's load hits every system alike.
                for system in systems:
                    if system == "ceiling":
                        run = await bench.ceiling()
                    elif system == "quix":
                        run = await bench.quix(expected)
                    else:
                        run = await bench.idstream()
                    runs[system].append(run)
                    print(
                        f"  run {i + 1} {system}: {run.rate:,.0f}/s {run.sample().extra}",
                        flush=True,
                    )
        finally:
            with contextlib.suppress(Exception):
                await _delete_topics(bootstrap, [bench.source])
    _summarize(report, runs)


def _summarize(report: Report, runs: dict[str, list[PeerRun]]) -> None:
    """The report's samples are idstream's runs (else Quix's, else the ceiling's); notes
    give every system's medians and the ratios."""
    primary = next(s for s in ("idstream", "quix", "ceiling") if s in runs)
    report.params["samples_are"] = primary
    report.samples = [r.sample() for r in runs[primary]]
    report.params["runs"] = {
        s: [{"rate": round(r.rate), **r.sample().extra} for r in rs] for s, rs in runs.items()
    }
    medians: dict[str, float] = {}
    for system, rs in runs.items():
        rates = [r.rate for r in rs]
        medians[system] = statistics.median(rates)
        samples = [r.sample().extra for r in rs]

        def med(key: str, samples: list[dict[str, Any]] = samples) -> float:
            return float(statistics.median(float(x[key]) for x in samples))

        report.notes.append(
            f"{system}: after start-up median {medians[system]:,.0f}/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rs)} runs); medians: "
            f"spawn to done {med('spawn to done s'):.1f} s, start-up {med('start-up s'):.1f} s, "
            f"CPU {med('CPU s'):.1f} s ({med('per CPU-second'):,.0f} events per CPU-second), "
            f"outputs {med('outputs'):,.0f}"
        )
    for a, b in (("idstream", "quix"), ("idstream", "ceiling"), ("quix", "ceiling")):
        if a in medians and b in medians:
            report.notes.append(f"{a} / {b} = {medians[a] / medians[b]:.3f} (medians)")


def run(args: argparse.Namespace) -> Report:
    if not args.no_quix and importlib.util.find_spec("quixstreams") is None:
        raise SystemExit(
            "bench peers needs Quix Streams: pip install -c constraints.txt -e '.[bench]' "
            "(or --no-quix)"
        )
    report = Report(
        "peers",
        DESCRIPTION,
        params={
            "events": args.events,
            "partitions": args.partitions,
            "ceiling_producer": _PRODUCER,
            "rate": "N / (last - first output record, broker LogAppendTime)",
            "quixstreams": None if args.no_quix else importlib.metadata.version("quixstreams"),
        },
    )
    with broker() as bootstrap:
        report.params["broker"] = (
            "KAFKA_BOOTSTRAP_SERVERS" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "LocalKafka"
        )
        asyncio.run(_measure(bootstrap, args, report))
    return report
