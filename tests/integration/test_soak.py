"""The short form of `python -m bench soak` (issue #18): 30 s of live traffic on a 3-node
cluster with a worker and a broker killed; the bench itself fails unless the final digest
equals the in-process driver's. The 30-minute run is bench-only (docs/performance.md)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_short_soak_recovers_from_every_fault_and_ends_on_the_in_process_digest() -> None:
    short = ["--minutes", "0.5", "--calibrate-events", "4000", "--faults", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "soak", "--no-save", *short],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-4000:]
    assert "digest equal to the in-process driver's: True" in out
    recovered = re.findall(
        r"(worker|broker) fault at \d+ s .*: caught up \(lag <= [\d,]+\) after [\d.]+ s", out
    )
    assert sorted(recovered) == ["broker", "worker"], out
