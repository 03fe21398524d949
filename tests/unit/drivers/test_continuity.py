"""Continuity: a batch that skips records faust did not deliver is caught before processing."""

from __future__ import annotations

import asyncio

from idstream.drivers.faust.continuity import Continuity, Gap

TP = ("claims", 1)
OTHER = ("claims", 2)


def guard(start: int = 0, markers: set[int] | None = None) -> Continuity:
    """Partitions start at `start`; `markers` are offsets that hold no record."""
    empty = markers or set()

    async def start_offset(tp: object) -> int:
        return start

    async def records_between(tp: object, first: int, end: int) -> bool:
        return any(offset not in empty for offset in range(first, end))

    return Continuity(start_offset, records_between)


def check(continuity: Continuity, *records: tuple[object, int]) -> Gap | None:
    return asyncio.run(continuity.check(records))


def test_contiguous_batches_pass() -> None:
    continuity = guard()
    assert check(continuity, (TP, 0), (TP, 1), (OTHER, 0)) is None
    assert check(continuity, (TP, 2), (OTHER, 1)) is None


def test_a_skipped_record_is_a_gap() -> None:
    continuity = guard()
    assert check(continuity, (TP, 0), (TP, 1)) is None
    assert check(continuity, (OTHER, 0), (TP, 3)) == Gap(TP, 2, 3)


def test_a_skipped_prefix_after_assignment_is_a_gap() -> None:
    # Nothing committed: delivery must start at the log start (0), not at 463.
    assert check(guard(start=0), (TP, 463)) == Gap(TP, 0, 463)
    assert check(guard(start=463), (TP, 463)) is None


def test_offsets_without_records_are_not_a_gap() -> None:
    # Transaction markers take offsets 2 and 3.
    continuity = guard(markers={2, 3})
    assert check(continuity, (TP, 0), (TP, 1), (TP, 4)) is None
    assert check(continuity, (TP, 6)) == Gap(TP, 5, 6)


def test_redelivered_records_are_not_a_gap() -> None:
    continuity = guard()
    assert check(continuity, (TP, 0), (TP, 1), (TP, 2)) is None
    assert check(continuity, (TP, 1), (TP, 2), (TP, 3)) is None
    assert check(continuity, (TP, 4)) is None


def test_a_gap_is_reported_once() -> None:
    continuity = guard()
    assert check(continuity, (TP, 0)) is None
    assert check(continuity, (TP, 1), (TP, 5)) == Gap(TP, 2, 5)
    assert check(continuity, (TP, 6), (TP, 7)) is None


def test_reset_starts_every_partition_again_at_its_start_offset() -> None:
    continuity = guard(start=10)
    assert check(continuity, (TP, 10), (TP, 11)) is None
    continuity.reset()
    assert check(continuity, (TP, 10)) is None
    continuity.reset()
    assert check(continuity, (TP, 12)) == Gap(TP, 10, 12)
