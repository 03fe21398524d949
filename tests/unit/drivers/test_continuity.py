"""Continuity: records past ones faust did not deliver are held back and read again."""

from __future__ import annotations

import asyncio

from idstream.drivers.faust.continuity import Continuity, Gap, Verdict

TP = ("claims", 1)
OTHER = ("claims", 2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def guard(
    start: int = 0, markers: set[int] | None = None, clock: Clock | None = None
) -> tuple[Continuity, list[tuple[object, int, int]]]:
    """Partitions start at `start`; `markers` are offsets that hold no record.

    Also returns the holes the guard reported (offset ranges faust may commit over).
    """
    empty = markers or set()
    holes: list[tuple[object, int, int]] = []

    async def start_offset(tp: object) -> int:
        return start

    async def records_between(tp: object, first: int, end: int) -> bool:
        return any(offset not in empty for offset in range(first, end))

    async def hole(tp: object, first: int, last: int) -> None:
        holes.append((tp, first, last))

    continuity = Continuity(
        start_offset,
        records_between,
        hole,
        reread_after=2.0,
        stall_after=10.0,
        clock=clock or Clock(),
    )
    return continuity, holes


def check(continuity: Continuity, *records: tuple[object, int]) -> Verdict:
    return asyncio.run(continuity.check(records))


def passes(verdict: Verdict) -> bool:
    return all(verdict.keep) and not verdict.gaps


def test_contiguous_batches_pass() -> None:
    continuity, _ = guard()
    assert passes(check(continuity, (TP, 0), (TP, 1), (OTHER, 0)))
    assert passes(check(continuity, (TP, 2), (OTHER, 1)))


def test_records_after_a_skipped_one_are_held_back_and_the_partition_read_again() -> None:
    continuity, _ = guard()
    assert passes(check(continuity, (TP, 0), (TP, 1)))
    verdict = check(continuity, (OTHER, 0), (TP, 3), (OTHER, 1), (TP, 4))
    # The other partition goes on; this one waits for offset 2.
    assert verdict.keep == [True, False, True, False]
    assert verdict.gaps == [Gap(TP, 2, 3)]
    # The re-read arrives: offset 2 first, then 3 and 4 again.
    assert passes(check(continuity, (TP, 2), (TP, 3), (TP, 4)))
    assert passes(check(continuity, (TP, 5)))


def test_a_skipped_prefix_after_assignment_is_a_gap() -> None:
    # Nothing committed: delivery must start at the log start (0), not at 463.
    continuity, _ = guard(start=0)
    assert check(continuity, (TP, 463)) == Verdict([False], [Gap(TP, 0, 463)])
    continuity, _ = guard(start=463)
    assert passes(check(continuity, (TP, 463)))


def test_offsets_without_records_are_not_a_gap_and_may_be_committed_over() -> None:
    # Transaction markers take offsets 2 and 3.
    continuity, holes = guard(markers={2, 3})
    assert passes(check(continuity, (TP, 0), (TP, 1), (TP, 4)))
    assert holes == [(TP, 2, 3)]
    assert check(continuity, (TP, 6)) == Verdict([False], [Gap(TP, 5, 6)])


def test_redelivered_records_are_processed_again() -> None:
    continuity, _ = guard()
    assert passes(check(continuity, (TP, 0), (TP, 1), (TP, 2)))
    assert passes(check(continuity, (TP, 1), (TP, 2), (TP, 3)))
    assert passes(check(continuity, (TP, 4)))


def test_records_still_in_flight_after_the_seek_do_not_seek_again_at_once() -> None:
    clock = Clock()
    continuity, _ = guard(clock=clock)
    assert passes(check(continuity, (TP, 0)))
    assert check(continuity, (TP, 5)).gaps == [Gap(TP, 1, 5)]
    # Fetched before the seek: held back, no second seek yet.
    assert check(continuity, (TP, 6), (TP, 7)) == Verdict([False, False], [])
    clock.now += 2.0
    assert check(continuity, (TP, 8)).gaps == [Gap(TP, 1, 8)]


def test_a_reread_that_does_not_arrive_is_asked_for_again() -> None:
    clock = Clock()
    continuity, _ = guard(clock=clock)
    assert passes(check(continuity, (TP, 0)))
    assert check(continuity, (TP, 5)).gaps == [Gap(TP, 1, 5)]

    def overdue() -> list[Gap]:
        return asyncio.run(continuity.overdue([TP, OTHER], lambda tp: 9))

    assert overdue() == []
    clock.now += 2.0
    assert overdue() == [Gap(TP, 1, -1)]
    assert overdue() == []
    # It arrives: nothing is overdue any more.
    assert passes(check(continuity, (TP, 1), (TP, 2)))
    clock.now += 5.0
    assert overdue() == []


def test_a_partition_that_stops_short_of_its_end_is_read_again() -> None:
    # The last records of a partition were lost: no later record shows the gap.
    clock = Clock()
    continuity, _ = guard(clock=clock)
    assert passes(check(continuity, (TP, 0), (TP, 1)))
    end = {TP: 5, OTHER: 0}

    def overdue() -> list[Gap]:
        return asyncio.run(continuity.overdue([TP, OTHER], end.get))

    clock.now += 9.0
    assert overdue() == []
    clock.now += 1.0
    # OTHER delivered nothing, but it has no records: not stalled.
    assert overdue() == [Gap(TP, 2, -1)]


def test_a_caught_up_partition_is_not_stalled() -> None:
    clock = Clock()
    continuity, _ = guard(clock=clock)
    assert passes(check(continuity, (TP, 0), (TP, 1)))
    clock.now += 60.0
    assert asyncio.run(continuity.overdue([TP], lambda tp: 2)) == []


def test_paused_delivery_is_not_a_stall() -> None:
    clock = Clock()
    continuity, _ = guard(clock=clock)
    assert passes(check(continuity, (TP, 0)))
    clock.now += 30.0
    continuity.paused()  # a rebalance, table recovery
    clock.now += 5.0
    assert asyncio.run(continuity.overdue([TP], lambda tp: 9)) == []


def test_reset_starts_every_partition_again_at_its_start_offset() -> None:
    continuity, _ = guard(start=10)
    assert passes(check(continuity, (TP, 10), (TP, 11)))
    continuity.reset()
    assert passes(check(continuity, (TP, 10)))
    continuity.reset()
    assert check(continuity, (TP, 12)).gaps == [Gap(TP, 10, 12)]
