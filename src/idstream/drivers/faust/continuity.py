"""Never go past a record that Faust failed to hand to an agent.

Driver layer. faust-streaming 0.15 can lose records between its fetcher and an agent: a
partition paused (recovery) or marked "buffer full" while records of it are in flight, or a
fetch loop that stops early, and those records are simply not delivered (upstream
faust-streaming/faust#88 and relatives). Nothing acks them, so the group's committed offset
stops in front of them, but the agent goes on with the records after them: the state misses
them until a restart, and the offsets stall for good. Seen here as a claim missing from the
pool after a restart under load.

`Continuity` follows the next expected offset of every partition an agent reads and looks at
each batch before it is processed. A batch that starts past the expected offset is a gap,
unless Kafka holds no record in between (transaction markers take offsets too), which a
second look at the partition settles. A real gap is logged as an error (the skipped records
stay uncommitted, so the group's lag stays above 0 and a restart processes them); the worker
goes on. Stopping the worker on a gap was tried and dropped: a worker joining a group saw
gaps right after its first assignment, and halting there failed the two-worker test.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# (topic, partition) as Faust's TP or aiokafka's TopicPartition: anything hashable.
Partition = Any
StartOffset = Callable[[Partition], Awaitable[int]]
RecordsBetween = Callable[[Partition, int, int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Gap:
    partition: Partition
    expected: int  # the first offset not delivered
    got: int  # the offset delivered instead


class RestartRequested(RuntimeError):
    """Records were not delivered: restart the worker from the committed offsets."""

    def __init__(self, gap: Gap) -> None:
        super().__init__(
            f"records {gap.expected}..{gap.got - 1} of {gap.partition} were not delivered "
            "to the agent; they stay uncommitted until the worker restarts"
        )
        self.gap = gap


class Continuity:
    """Expected next offset per partition, over the batches of one agent.

    `start_offset(tp)` gives where delivery of a partition must begin once it is assigned
    (its committed offset, or the log start when there is none or retention passed it);
    `records_between(tp, a, b)` tells whether Kafka holds any record at offsets a..b-1.
    """

    def __init__(self, start_offset: StartOffset, records_between: RecordsBetween) -> None:
        self._start_offset = start_offset
        self._records_between = records_between
        self._next: dict[Partition, int] = {}

    def reset(self) -> None:
        """Forget every partition: after a rebalance, delivery restarts at committed offsets."""
        self._next.clear()

    async def check(self, records: Iterable[tuple[Partition, int]]) -> Gap | None:
        """The first gap in these (partition, offset) pairs, in arrival order, or None.

        An offset below the expected one is a redelivery (the stages are idempotent), not a
        gap. Every offset is taken as seen, so a gap is reported once.
        """
        seen = dict(self._next)
        gap: Gap | None = None
        for tp, offset in records:
            expected = seen.get(tp)
            if expected is None:
                expected = await self._start_offset(tp)
            missing = gap is None and offset > expected
            if missing and await self._records_between(tp, expected, offset):
                gap = Gap(tp, expected, offset)
            seen[tp] = max(expected, offset + 1)
        self._next = seen
        return gap
