"""Peak RSS of the in-process driver (`idstream replay`, RocksDB state) holding N installs.

Every input event is an `install` (a new push registration), so N events leave N install
records in RocksDB. Measured: the child process's peak RSS (`ru_maxrss`) for each N; with
state in RocksDB it must not grow in proportion to N. The input file is written before.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from bench.harness import Report, Sample
from bench.rebuild import replay, write_input
from idstream.simulate import TrafficConfig

DESCRIPTION = "peak RSS of `idstream replay` (in-process driver, RocksDB state) per installs held"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--installs", default="100000,1000000", help="install counts, comma-separated"
    )


def run(args: argparse.Namespace) -> Report:
    counts = [int(n) for n in args.installs.split(",")]
    report = Report("memory", DESCRIPTION, params={"installs": counts}, unit="installs/s")
    peaks: dict[int, list[int]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="idstream-bench-memory-") as tmp:
        for n in counts:
            config = TrafficConfig(events=n, users=max(1000, n // 2), mix={"install": 1.0})
            input_path = Path(tmp) / f"installs-{n}.jsonl"
            made = write_input(input_path, config)
            for i in range(args.runs):
                work = Path(tmp) / f"run-{n}-{i}"
                wall, rss_kib, _ = replay(input_path, work)
                peaks[n].append(rss_kib)
                extra = {"installs": made["installs"], "peak RSS MiB": round(rss_kib / 1024)}
                report.samples.append(Sample(n, wall, extra))
                print(f"  {n:,} installs, run {i + 1}: {extra}, {wall:.1f} s", flush=True)
                subprocess.run(["rm", "-rf", str(work)], check=False)
            input_path.unlink()
    medians = {n: sorted(v)[len(v) // 2] / 1024 for n, v in peaks.items()}
    for n, v in peaks.items():
        report.notes.append(
            f"{n:,} installs: peak RSS median {medians[n]:,.0f} MiB "
            f"(min {min(v) / 1024:,.0f}, max {max(v) / 1024:,.0f}, {len(v)} runs)"
        )
    if len(counts) >= 2:
        low, high = counts[0], counts[-1]
        report.notes.append(
            f"peak RSS {high:,} / {low:,} installs = {medians[high] / medians[low]:.2f} "
            f"(installs x{high / low:.0f})"
        )
    return report
