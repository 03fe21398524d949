"""Rebuilding state from input events: `idstream rebuild` on Kafka, or its lower bound.

With `--kafka`: N simulated events are produced to an input topic with P partitions (6) of a
real broker before any clock starts; each run gives a fresh deployment (app id, group, topics,
data dir) and times `idstream rebuild` as a subprocess, from its start to its exit (reset,
then one worker until the group has committed every record), interpreter start-up included.
The raw-aiokafka ceiling (`bench.ceiling.pipe`) runs on the same input in the same invocation.

Without it, the lower bound of a rebuild: `idstream replay` runs the same stages over the same
events from a JSONL file into RocksDB state, with no Kafka (no broker round trips, changelogs
or commits). The input (default simulated mix) is written to a file before the clock starts;
the timed part is the whole child process (interpreter start-up included), its peak RSS is
reported too.
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
import uuid
from pathlib import Path
from typing import Any

from bench.harness import Report, Sample
from idstream.simulate import TrafficConfig
from idstream.simulate.traffic import Traffic

DESCRIPTION = "state rebuilt from N input events by `idstream replay` (in process, RocksDB)"
DESCRIPTION_KAFKA = "state rebuilt from N input events by `idstream rebuild` on a real broker"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="input events (N)")
    parser.add_argument("--users", type=int, default=0, help="simulated people (default N/100)")
    parser.add_argument(
        "--kafka", action="store_true", help="time `idstream rebuild` on a real broker"
    )
    parser.add_argument("--partitions", type=int, default=6, help="with --kafka: partitions")


def write_input(path: Path, config: TrafficConfig) -> dict[str, Any]:
    """The simulated record values, one a line; returns the simulator's counts."""
    traffic = Traffic(config)
    with path.open("wb") as out:
        for record in traffic:
            out.write(record.value)
            out.write(b"\n")
    return {"installs": traffic.stats.installs}


def replay(input_path: Path, work: Path) -> tuple[float, int, float]:
    """Run `idstream replay` on the file: (wall seconds, peak RSS in KiB, CPU seconds)."""
    state, output = work / "state", work / "out"
    command = [sys.executable, "-m", "idstream", "replay", "--input", str(input_path)]
    command += ["--state", str(state), "--output", str(output)]
    started = time.perf_counter()
    # Benchmark data: the public dev key for hashes of personal data.
    env = {**os.environ, "IDSTREAM_DEV_MODE": "true"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"idstream replay exited {proc.returncode}: {err[-2000:]}")
    return wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def _rebuild(dep: Any) -> tuple[float, float]:
    """Run `idstream rebuild` for a deployment: (wall seconds, CPU seconds with its worker)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IDSTREAM_")}
    env = {**base, **dep.env, "IDSTREAM_DATA_DIR": str(dep.root / "state")}
    log = dep.root / "rebuild.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "idstream", "rebuild"], env=env, stdout=out, stderr=out
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"idstream rebuild exited {code}:\n{tail}")
    # Linux's wait4 counts the child's reaped children too: the worker `idstream rebuild` ran.
    return wall, usage.ru_utime + usage.ru_stime


async def _kafka_runs(bootstrap: str, args: argparse.Namespace, report: Report) -> None:
    from bench.ceiling import INPUT_CONFIG, _create_topics, _delete_topics, fill, pipe
    from bench.e2e import Deployment

    tag = uuid.uuid4().hex[:8]
    source = f"bench.rebuild.in.{tag}"
    sinks = [f"bench.rebuild.ceiling.{tag}.{i}" for i in range(args.runs)]
    await _create_topics(bootstrap, [source, *sinks], args.partitions, {source: INPUT_CONFIG})
    ceiling: list[Sample] = []
    try:
        produced = await fill(bootstrap, source, args.events)
        report.notes.append(f"pre-producing the input ran at {produced.rate:,.0f}/s")
        with tempfile.TemporaryDirectory(prefix="idstream-bench-rebuild-") as tmp:
            for i in range(args.runs):
                dep = Deployment(bootstrap, source, args.partitions, Path(tmp), [])
                try:
                    await dep.create_topics()
                    wall, cpu = _rebuild(dep)
                finally:
                    with contextlib.suppress(Exception):
                        await _delete_topics(bootstrap, dep.topics())
                sample = Sample(args.events, wall, {"CPU s (rebuild + worker)": round(cpu, 1)})
                report.samples.append(sample)
                print(f"  run {i + 1}: {wall:.1f} s {sample.extra}", flush=True)
                c = await pipe(bootstrap, source, sinks[i], args.partitions, args.events)
                ceiling.append(c)
                print(f"  ceiling: {c.rate:,.0f}/s", flush=True)
    finally:
        with contextlib.suppress(Exception):
            await _delete_topics(bootstrap, [source, *sinks])
    top = statistics.median(c.rate for c in ceiling)
    report.params["ceiling_runs"] = [round(c.rate) for c in ceiling]
    report.notes.append(
        f"ceiling (raw aiokafka, same input): median {top:,.0f}/s; "
        f"rebuild / ceiling = {report.median / top:.3f} (medians)"
    )


def run(args: argparse.Namespace) -> Report:
    if args.kafka:
        from bench.ceiling import broker

        report = Report(
            "rebuild",
            DESCRIPTION_KAFKA,
            params={"events": args.events, "partitions": args.partitions, "driver": "kafka"},
        )
        with broker() as bootstrap:
            asyncio.run(_kafka_runs(bootstrap, args, report))
        report.notes.append("`idstream rebuild`: reset, then 1 worker until all is committed")
        return report
    users = args.users or max(1000, args.events // 100)
    config = TrafficConfig(events=args.events, users=users)
    report = Report(
        "rebuild",
        DESCRIPTION,
        params={"events": args.events, "users": users, "seed": config.seed, "driver": "replay"},
    )
    with tempfile.TemporaryDirectory(prefix="idstream-bench-rebuild-") as tmp:
        input_path = Path(tmp) / "input.jsonl"
        write_input(input_path, config)
        for i in range(args.runs):
            work = Path(tmp) / f"run-{i}"
            wall, rss_kib, cpu = replay(input_path, work)
            extra = {
                "peak RSS MiB": round(rss_kib / 1024),
                "per CPU-second": round(args.events / cpu),
            }
            report.samples.append(Sample(args.events, wall, extra))
            print(f"  run {i + 1}: {wall:.1f} s {extra}", flush=True)
            subprocess.run(["rm", "-rf", str(work)], check=False)
    report.notes.append("lower bound of `idstream rebuild`: no Kafka, one process, RocksDB state")
    return report
