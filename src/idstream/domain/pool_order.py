"""The pool's place in the input log: claims are applied in log order, behind a watermark.

Domain layer, standard library only. Every claim carries its position (effective time, input
partition, offset); every input partition ("source") tells each pool how far it has come,
with its claims and with heartbeats, in order. A claim at (T, p, o) is applied once every
other source q has passed it: T_q > T, or T_q = T and q > p. Until then it waits in
`pool_pending`. So claims are applied in (T, p, o) order whatever order they arrive in, and no
decision is ever made again (SPEC §5). A source the pool has not heard from is before all.

A source far ahead of a pool's watermark only fills `pool_pending`: `align` says which input
partitions a worker pauses (more than `align_ms` ahead) and resumes (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

from idstream.domain.messages import LogPosition
from idstream.domain.pool_state import BEFORE_ALL, Cursor


def start(sources: int) -> Cursor:
    """The cursor of a pool that has heard from no source yet."""
    return Cursor(times=(BEFORE_ALL,) * sources, offsets=(-1,) * sources)


def advance(cursor: Cursor, source: int, time: int, offset: int) -> Cursor | None:
    """The cursor once `source` says it is at (time, offset); None for a redelivery (a
    position it has passed already)."""
    if offset <= cursor.offsets[source]:
        return None
    times = list(cursor.times)
    offsets = list(cursor.offsets)
    # A source's effective time never goes back (it is a running maximum).
    if time > times[source]:
        times[source] = time
    offsets[source] = offset
    # Built field by field: dataclasses.replace costs five times as much, once per message.
    return Cursor(tuple(times), tuple(offsets), cursor.pending, cursor.head, cursor.decisions)


def with_pending(cursor: Cursor, position: LogPosition) -> Cursor:
    """One more pending claim."""
    head = cursor.head if cursor.head is not None and cursor.head < position else position
    return Cursor(cursor.times, cursor.offsets, cursor.pending + 1, head, cursor.decisions)


def releasable(cursor: Cursor, position: LogPosition) -> bool:
    """Whether every source other than the claim's own has passed `position`."""
    time, source, _ = position
    return not any(
        q != source and (q_time, q) <= (time, source) for q, q_time in enumerate(cursor.times)
    )


def waiting_on(cursor: Cursor) -> tuple[int, ...]:
    """The sources the oldest pending claim waits for (a driver appends ticks to them)."""
    if cursor.head is None:
        return ()
    time, source, _ = cursor.head
    return tuple(
        q for q, q_time in enumerate(cursor.times) if q != source and (q_time, q) <= (time, source)
    )


def watermark(cursor: Cursor) -> int:
    """The effective time every source has reached (BEFORE_ALL until all have spoken)."""
    return min(cursor.times)


def holding_watermark(marks: Iterable[tuple[int, bool]]) -> int | None:
    """The lowest watermark of the pools that hold claims back, from (watermark, holds) per
    pool; None when no pool holds any (then no source is ahead of anything that costs)."""
    held = [mark for mark, holds in marks if holds]
    return min(held) if held else None


def lead(time: int, watermark: int | None) -> int:
    """How far a source at effective `time` is ahead of `watermark` (0 when none holds)."""
    return 0 if watermark is None else max(0, time - watermark)


def align(
    times: Mapping[int, int], watermark: int | None, align_ms: int, paused: AbstractSet[int]
) -> tuple[frozenset[int], frozenset[int]]:
    """(sources to pause, sources to resume) of a worker's input partitions.

    `times` are the effective times of the sources it reads (a source it has read nothing of
    since its assignment is absent), `paused` the ones paused now. A source is paused once it
    is more than `align_ms` ahead of `watermark` and resumed when it is at most `align_ms / 2`
    ahead (hysteresis: no pause and resume per batch at the boundary), when the watermark is
    None (no pool holds a claim back), or when its time is unknown. The sources at the
    watermark itself are never paused: they are the ones the others wait for.
    """
    pause: set[int] = set()
    resume: set[int] = set()
    for source in paused:
        time = times.get(source)
        if time is None or lead(time, watermark) <= align_ms // 2:
            resume.add(source)
    for source, time in times.items():
        if source not in paused and lead(time, watermark) > align_ms:
            pause.add(source)
    return frozenset(pause), frozenset(resume)
