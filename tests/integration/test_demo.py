"""The main job (`idstream demo`): runs, reports what the simulator sent, agrees with the
in-process fallback on what came out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from idstream.demo.main import DEMO_CONFLICT_SHARE
from idstream.simulate import Traffic, TrafficConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARGS = ["--seconds", "4", "--rate", "250", "--seed", "3", "--users", "80"]


def demo(*extra: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "idstream", "demo", *ARGS, *extra],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def section(output: str, title: str) -> dict[str, int]:
    lines = output.splitlines()
    start = lines.index(title) + 1
    counts: dict[str, int] = {}
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        label, n = line.split()
        counts[label] = int(n)
    return counts


def summary_lines(output: str) -> list[str]:
    keep = ("profiles:", "launches dropped", "dead letters by reason")
    return [line for line in output.splitlines() if line.startswith(keep)]


def test_demo_reports_what_was_sent_and_matches_the_in_process_driver(
    kafka_bootstrap: str,
) -> None:
    on_kafka = demo(env={"IDSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap})
    in_process = demo("--in-process", env={})

    expected = Traffic(
        TrafficConfig(
            seed=3, users=80, events=1000, malformed_share=0.01, conflict_share=DEMO_CONFLICT_SHARE
        )
    )
    for _ in expected:  # the stats fill as the generator runs
        pass
    sent = dict(expected.stats.labels)
    assert section(on_kafka, "events sent per type:") == sent
    resolved = section(on_kafka, "resolved events per type:")
    assert all(resolved[t] <= sent[t] for t in resolved)
    assert resolved.get("custom", 0) > 0 and "persons" in on_kafka
    # Same input, same final state and outputs whichever driver ran it.
    assert resolved == section(in_process, "resolved events per type:")
    assert summary_lines(on_kafka) == summary_lines(in_process)
    assert "Kafka at" in on_kafka and "in-process driver" in in_process
