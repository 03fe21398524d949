"""`python -m tests.support.faulty_worker`: `idstream worker` whose pool stage raises once.

The fault stands for any bug or broker error inside a stage. The claim it fails on is the
`IDSTREAM_TEST_FAIL_AT`-th the pool sees; a marker file (`IDSTREAM_TEST_FAIL_MARKER`) makes
it fail only once, so a restarted worker goes through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import idstream.drivers.faust.app as topology
from idstream.cli import main

marker = Path(os.environ["IDSTREAM_TEST_FAIL_MARKER"])
fail_at = int(os.environ.get("IDSTREAM_TEST_FAIL_AT", "50"))
apply_claim = topology.apply_claim
seen = 0


def failing_apply_claim(tables: Any, claim: Any, rules: Any) -> Any:
    global seen
    seen += 1
    if seen == fail_at and not marker.exists():
        marker.write_text(claim.push_registration_id)
        raise RuntimeError("injected stage fault")
    return apply_claim(tables, claim, rules)


topology.apply_claim = failing_apply_claim  # type: ignore[assignment]
raise SystemExit(main(["worker"]))
