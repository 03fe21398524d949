"""Peak RSS of a process holding N installs: a Kafka worker (`--kafka`) or `idstream replay`.

Every input event is an `install` (a new push registration), so N events leave N install
records in RocksDB. With state in RocksDB the peak RSS must not grow in proportion to N.
With `--kafka`: the N events are produced to an input topic of a real broker first, then one
`idstream worker` (fresh deployment) runs until its group has committed everything; measured
is the worker's peak RSS (`VmHWM` of /proc/<pid>/status, read before it is stopped). Without:
the in-process driver (`idstream replay`) on the same events from a file written before,
measured as the child's `ru_maxrss`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench.harness import Report, Sample
from bench.rebuild import replay, write_input
from idstream.simulate import TrafficConfig

DESCRIPTION = "peak RSS of `idstream replay` (in-process driver, RocksDB state) per installs held"
DESCRIPTION_KAFKA = "peak RSS of one `idstream worker` on a real broker per installs held"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--installs", default="100000,1000000", help="install counts, comma-separated"
    )
    parser.add_argument("--kafka", action="store_true", help="measure a Kafka worker")
    parser.add_argument("--partitions", type=int, default=6, help="with --kafka: partitions")


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


async def _worker_peak(
    bootstrap: str, config: TrafficConfig, partitions: int, root: Path
) -> tuple[float, int]:
    """(seconds from spawn to all committed, peak RSS KiB) of one worker on `config`'s events."""
    from bench.ceiling import INPUT_CONFIG, _create_topics, _delete_topics
    from bench.e2e import Deployment
    from idstream.simulate.cli import produce
    from idstream.simulate.traffic import Traffic

    source = f"bench.memory.in.{uuid.uuid4().hex[:8]}"
    await _create_topics(bootstrap, [source], partitions, {source: INPUT_CONFIG})
    dep = Deployment(bootstrap, source, partitions, root, [])
    try:
        await produce(iter(Traffic(config)), bootstrap, source)
        await dep.create_topics()
        started = time.perf_counter()
        dep.start(1)
        done = await dep.wait_committed(timeout=4 * 3600)
        return done - started, _peak_kib(dep.procs[0].pid)
    finally:
        dep.stop()
        with contextlib.suppress(Exception):
            await _delete_topics(bootstrap, [source, *dep.topics()])


def run(args: argparse.Namespace) -> Report:
    counts = [int(n) for n in args.installs.split(",")]
    if args.kafka:
        from bench.ceiling import broker

        report = Report(
            "memory",
            DESCRIPTION_KAFKA,
            params={"installs": counts, "partitions": args.partitions, "driver": "kafka"},
            unit="installs/s",
        )
        with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="idstream-mem-") as tmp:
            for n in counts:
                config = TrafficConfig(events=n, users=max(1000, n // 2), mix={"install": 1.0})
                for i in range(args.runs):
                    wall, kib = asyncio.run(
                        _worker_peak(bootstrap, config, args.partitions, Path(tmp))
                    )
                    extra = {"peak RSS MiB": round(kib / 1024)}
                    report.samples.append(Sample(n, wall, extra))
                    print(f"  {n:,} installs, run {i + 1}: {extra}, {wall:.1f} s", flush=True)
        _notes(
            report,
            counts,
            {
                n: [s.extra["peak RSS MiB"] * 1024 for s in report.samples if s.events == n]
                for n in counts
            },
        )
        return report
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
    _notes(report, counts, peaks)
    return report


def _notes(report: Report, counts: list[int], peaks: dict[int, list[int]]) -> None:
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
