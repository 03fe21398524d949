"""Never go past a record that Faust failed to hand to an agent: read it again.

Driver layer. faust-streaming 0.15 can lose records between its fetcher and an agent
(upstream faust-streaming/faust#88 and relatives), mostly around a rebalance: a fetch loop
that stops early, a partition paused while records of it are in flight, records fetched
before the seek to the committed offsets that arrive after it (faust then takes the
offsets in between as a "gap" it may commit over, and drops the re-read records as
already seen). Left alone, the state misses those records, and their offsets are either
committed unprocessed or never committed at all (the group never catches up).

`Continuity` follows the next expected offset of every partition an agent reads and looks at
each batch before it is processed. A record past the expected offset is a gap, unless Kafka
holds no record in between (transaction markers take offsets too), which a second look at
the partition settles. On a gap, the records of that partition are held back (not processed,
not acked) until the missing ones arrive, and the agent seeks the partition back to the
expected offset (`Gap`). A seek can be undone by records still in flight, so a partition
whose re-read has not arrived within `reread_after` seconds is sought again (`overdue`), and
so is one that has records on the broker but delivered none for `stall_after` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# (topic, partition) as Faust's TP or aiokafka's TopicPartition: anything hashable.
Partition = Any
StartOffset = Callable[[Partition], Awaitable[int]]
RecordsBetween = Callable[[Partition, int, int], Awaitable[bool]]
Hole = Callable[[Partition, int, int], Awaitable[None]]
Highwater = Callable[[Partition], "int | None"]


@dataclass(frozen=True, slots=True)
class Gap:
    partition: Partition
    expected: int  # the first offset not delivered: read again from here
    got: int  # the offset delivered instead (-1: nothing delivered)

    def __str__(self) -> str:
        missing = f"{self.expected}..{self.got - 1}" if self.got > 0 else f"from {self.expected}"
        return f"records {missing} of {self.partition} were not delivered to the agent"


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: list[bool]  # per record, in order: process it (True) or hold it back
    gaps: list[Gap]  # partitions to seek back to `expected`


async def _no_hole(tp: Partition, first: int, last: int) -> None:
    return None


class Continuity:
    """Expected next offset per partition, over the batches of one agent.

    `start_offset(tp)` gives where delivery of a partition must begin once it is assigned
    (its committed offset, or the log start when there is none or retention passed it);
    `records_between(tp, a, b)` tells whether Kafka holds any record at offsets a..b-1;
    `hole(tp, a, b)` is told of offsets a..b without records, which can be committed over.
    """

    def __init__(
        self,
        start_offset: StartOffset,
        records_between: RecordsBetween,
        hole: Hole = _no_hole,
        *,
        reread_after: float = 2.0,
        stall_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._start_offset = start_offset
        self._records_between = records_between
        self._hole = hole
        self._reread_after = reread_after
        self._stall_after = stall_after
        self._clock = clock
        self._next: dict[Partition, int] = {}
        self._seen_at: dict[Partition, float] = {}  # last record delivered in order
        self._rereading: dict[Partition, float] = {}  # partition -> when it was sought
        self._confirmed: dict[Partition, tuple[int, int]] = {}  # a gap Kafka confirmed
        self._assigned_at = clock()

    def reset(self) -> None:
        """Forget every partition: after a rebalance, delivery restarts at committed offsets."""
        self._next.clear()
        self._seen_at.clear()
        self._rereading.clear()
        self._confirmed.clear()
        self._assigned_at = self._clock()

    @property
    def rereading(self) -> frozenset[Partition]:
        return frozenset(self._rereading)

    async def check(self, records: Iterable[tuple[Partition, int]]) -> Verdict:
        """Which of these (partition, offset) pairs, in arrival order, may be processed now.

        An offset below the expected one is a redelivery (the stages are idempotent), and is
        processed. From a gap on, the partition's records are held back, and the gap is
        reported for a seek unless one was asked for within `reread_after` seconds.
        """
        now = self._clock()
        keep: list[bool] = []
        gaps: list[Gap] = []
        blocked: set[Partition] = set()
        for tp, offset in records:
            if tp in blocked:
                keep.append(False)
                continue
            expected = self._next.get(tp)
            if expected is None:
                expected = await self._start_offset(tp)
                self._next[tp] = expected
            if offset > expected:
                if await self._missing(tp, expected, offset):
                    blocked.add(tp)
                    keep.append(False)
                    since = self._rereading.get(tp)
                    if since is None or now - since >= self._reread_after:
                        self._rereading[tp] = now
                        gaps.append(Gap(tp, expected, offset))
                    continue
                await self._hole(tp, expected, offset - 1)
            keep.append(True)
            if offset >= expected:
                self._next[tp] = offset + 1
                self._seen_at[tp] = now
                self._rereading.pop(tp, None)
                self._confirmed.pop(tp, None)
        return Verdict(keep, gaps)

    async def _missing(self, tp: Partition, expected: int, offset: int) -> bool:
        confirmed = self._confirmed.get(tp)
        if confirmed is not None and confirmed[0] == expected and offset >= confirmed[1]:
            return True
        if await self._records_between(tp, expected, offset):
            self._confirmed[tp] = (expected, offset)
            return True
        return False

    def paused(self) -> None:
        """The agent is not being fed (rebalance, table recovery): restart the stall clocks."""
        now = self._clock()
        self._assigned_at = now
        for tp in self._seen_at:
            self._seen_at[tp] = now
        for tp in self._rereading:
            self._rereading[tp] = now

    def rested(self, partitions: Iterable[Partition]) -> None:
        """These partitions were paused on purpose and resume now: restart their stall clocks."""
        now = self._clock()
        for tp in partitions:
            self._seen_at[tp] = now

    async def overdue(self, assigned: Iterable[Partition], highwater: Highwater) -> list[Gap]:
        """Partitions to seek again: a re-read that has not arrived, or delivery that stalled.

        `assigned` are the partitions this agent reads now; `highwater(tp)` is the offset after
        the partition's last record on the broker, when known.
        """
        now = self._clock()
        gaps: list[Gap] = []
        for tp in assigned:
            since = self._rereading.get(tp)
            if since is not None:
                due = now - since >= self._reread_after
            else:
                end = highwater(tp)
                seen = self._seen_at.get(tp, self._assigned_at)
                due = end is not None and now - seen >= self._stall_after
                if due:
                    expected = self._next.get(tp)
                    if expected is None:
                        expected = self._next[tp] = await self._start_offset(tp)
                    due = end is not None and end > expected
                    if not due:
                        self._seen_at[tp] = now
            if due:
                self._rereading[tp] = now
                gaps.append(Gap(tp, self._next[tp], -1))
        return gaps
