"""`python -m tests.support.faulty_worker`: `idstream worker` with faults injected.

- Storage: the pool's table write at the end of a batch raises once (a disk error), after
  `IDSTREAM_TEST_FAIL_AT` batches; a marker file (`IDSTREAM_TEST_FAIL_MARKER`) makes it fail
  only once, so a restarted worker goes through. Such errors are not about one record: the
  worker halts and its batch stays uncommitted.
- Poison (tests/support/faults.py): the stages raise on chosen eventIds, as a defect that one
  record triggers would. Those records are dead-lettered and the worker goes on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from idstream.cli import main
from idstream.drivers.faust.tables import FaustTableFactory
from tests.support import faults

marker = Path(os.environ["IDSTREAM_TEST_FAIL_MARKER"])
fail_at = int(os.environ.get("IDSTREAM_TEST_FAIL_AT", "5"))
write = FaustTableFactory.write
batches = 0


async def failing_write(self: FaustTableFactory, sender: Any) -> int:
    global batches
    if self._table.name == "pool-state":
        batches += 1
        if batches == fail_at and not marker.exists():
            marker.write_text("failed")
            raise OSError("injected storage fault")
    return await write(self, sender)


FaustTableFactory.write = failing_write  # type: ignore[method-assign]
faults.inject(setattr)
raise SystemExit(main(["worker"]))
