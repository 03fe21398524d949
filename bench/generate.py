"""Simulator throughput: seeded SDK traffic written to a JSONL file, as `idstream simulate` does."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.harness import Report, Sample, timed
from idstream.simulate import TrafficConfig
from idstream.simulate.cli import write_file
from idstream.simulate.traffic import Traffic

DESCRIPTION = "simulated SDK traffic generated to a file (default mix)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="records per run")
    parser.add_argument("--users", type=int, default=10_000)


def run(args: argparse.Namespace) -> Report:
    config = TrafficConfig(events=args.events, users=args.users)
    report = Report(
        "generate",
        DESCRIPTION,
        params={"events": args.events, "users": args.users, "seed": config.seed},
    )
    with tempfile.TemporaryDirectory(prefix="idstream-bench-") as tmp:
        path = Path(tmp) / "events.jsonl"
        for _ in range(args.runs):

            def once() -> int:
                write_file(path, Traffic(config))
                return config.events

            sample = timed(once)
            size = path.stat().st_size
            report.samples.append(
                Sample(
                    sample.events, sample.seconds, {"MB/s": round(size / sample.seconds / 1e6, 1)}
                )
            )
    return report
