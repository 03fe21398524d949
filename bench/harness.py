"""Shared benchmark plumbing: timed runs, median and spread, machine facts, result files.

A benchmark module `bench/<name>.py` exposes

    DESCRIPTION = "one line"
    def add_arguments(parser: argparse.ArgumentParser) -> None   # optional, its own options
    def run(args: argparse.Namespace) -> Report                   # args.runs: how many runs

and builds its `Report` from `Sample`s (one per timed run). `python -m bench` prints the
summary and writes bench/results/<name>-<UTC timestamp>.json (git-ignored).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sample:
    """One timed run: how many events it handled in how many seconds."""

    events: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class Report:
    """All runs of one benchmark, with what was measured and under which parameters."""

    name: str
    description: str
    samples: list[Sample] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unit: str = "events/s"

    @property
    def rates(self) -> list[float]:
        return [s.rate for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.samples else 0.0

    def to_json(self, machine: dict[str, Any]) -> dict[str, Any]:
        rates = self.rates
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "median": self.median,
            "min": min(rates, default=0.0),
            "max": max(rates, default=0.0),
            "runs": [{**asdict(s), "rate": s.rate} for s in self.samples],
            "params": self.params,
            "notes": self.notes,
            "machine": machine,
        }


def timed(action: Callable[[], int]) -> Sample:
    """Run `action` (which returns how many events it handled) and time it."""
    started = time.perf_counter()
    events = action()
    return Sample(events, time.perf_counter() - started)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Facts that make a figure comparable: cores, CPU, memory, load, versions."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": cores,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "shared": f"{cores} cores shared with the broker",
    }


def write_result(report: Report, machine: dict[str, Any]) -> Path:
    """Write the report as JSON under bench/results/ and return the path."""
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{report.name}-{stamp}.json"
    path.write_bytes(orjson.dumps(report.to_json(machine), option=orjson.OPT_INDENT_2))
    return path


def summary(report: Report, machine: dict[str, Any]) -> str:
    """A few readable lines: median, spread, runs, parameters, machine."""
    rates = report.rates
    lines = [f"{report.name}: {report.description}"]
    if rates:
        lines.append(
            f"  median {report.median:,.0f} {report.unit} "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rates)} runs; "
            f"{machine['shared']})"
        )
        for i, s in enumerate(report.samples, 1):
            extra = "".join(f", {k} {v}" for k, v in s.extra.items())
            lines.append(
                f"  run {i}: {s.events:,} events in {s.seconds:.2f} s = {s.rate:,.0f}/s{extra}"
            )
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    if params:
        lines.append(f"  params: {params}")
    lines.extend(f"  note: {note}" for note in report.notes)
    lines.append(
        f"  machine: {machine['nproc']} cores ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, load {machine['load_average']}, Python {machine['python']}"
    )
    return "\n".join(lines)
