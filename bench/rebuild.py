"""Rebuilding state from input events: `idstream replay` (in process, RocksDB) as a subprocess.

The lower bound of a rebuild: `idstream rebuild` reprocesses the input topic through a Kafka
worker, which adds the broker round trips, changelogs and commits; `idstream replay` runs the
same stages over the same events from a JSONL file into RocksDB state, with no Kafka. The input
(default simulated mix) is written to a file before the clock starts; the timed part is the
whole child process (interpreter start-up included), its peak RSS is reported too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Report, Sample
from idstream.simulate import TrafficConfig
from idstream.simulate.traffic import Traffic

DESCRIPTION = "state rebuilt from N input events by `idstream replay` (in process, RocksDB)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="input events (N)")
    parser.add_argument("--users", type=int, default=0, help="simulated people (default N/100)")


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
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"idstream replay exited {proc.returncode}: {err[-2000:]}")
    return wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def run(args: argparse.Namespace) -> Report:
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
