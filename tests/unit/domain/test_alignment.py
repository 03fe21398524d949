"""Alignment of input partitions (docs/architecture.md, "Alignment"): a source more than
`align_ms` ahead of the lowest watermark of the pools holding claims back is paused, and
resumed once it is at most `align_ms / 2` ahead; the sources the others wait for never are.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idstream.domain.pool_order import align, holding_watermark, lead
from idstream.domain.pool_state import BEFORE_ALL

MIN = 60_000
ALIGN = 5 * MIN


@pytest.mark.parametrize(
    ("times", "watermark", "paused", "to_pause", "to_resume"),
    [
        # Live: every source within ticks of the others; nothing moves.
        ({0: 1_000, 1: 1_050, 2: 1_100}, 1_000, set(), set(), set()),
        # A rebuild: source 1 ran 10 minutes ahead of the watermark; 2 is just inside.
        ({0: 0, 1: 10 * MIN, 2: ALIGN}, 0, set(), {1}, set()),
        # Still more than half of align_ms ahead: stays paused (no flapping at the boundary).
        ({0: 2 * MIN, 1: 10 * MIN}, 2 * MIN, {1}, set(), set()),
        # The others caught up to within half of align_ms: resumed.
        ({0: 8 * MIN, 1: 10 * MIN}, 8 * MIN, {1}, set(), {1}),
        # No pool holds a claim back: nothing ahead costs anything; resume everyone.
        ({0: 0, 1: 10 * MIN}, None, {1}, set(), {1}),
        ({0: 0, 1: 10 * MIN}, None, set(), set(), set()),
        # A paused source whose time is no longer known (reassigned meanwhile): resumed.
        ({0: 0}, 0, {3}, set(), {3}),
        # A pool that has not heard from every source yet: all the sources it has heard
        # from are ahead; the silent one, unknown here, is read (and ticked).
        ({0: 1_000, 1: 2_000}, BEFORE_ALL, set(), {0, 1}, set()),
    ],
)
def test_pause_and_resume(
    times: dict[int, int],
    watermark: int | None,
    paused: set[int],
    to_pause: set[int],
    to_resume: set[int],
) -> None:
    assert align(times, watermark, ALIGN, paused) == (frozenset(to_pause), frozenset(to_resume))


def test_only_pools_holding_claims_set_the_watermark() -> None:
    # A pool with nothing pending holds nobody back: its idle sources get no ticks, so its
    # watermark may stay behind for ever without costing anything.
    assert holding_watermark([(5, True), (1, False), (9, True)]) == 5
    assert holding_watermark([(1, False)]) is None
    assert holding_watermark([]) is None


def test_lead() -> None:
    assert lead(7_000, 2_000) == 5_000
    assert lead(7_000, None) == 0
    assert lead(1_000, 2_000) == 0  # the pool heard of a later time than this worker read


times_st = st.dictionaries(st.integers(0, 11), st.integers(0, 100 * MIN), max_size=12)


@given(times_st, st.integers(0, 100 * MIN), st.sets(st.integers(0, 11)), st.integers(1, 20 * MIN))
def test_never_pauses_the_sources_the_others_wait_for(
    times: dict[int, int], watermark: int, paused: set[int], align_ms: int
) -> None:
    pause, resume = align(times, watermark, align_ms, paused)
    assert not pause & resume
    assert pause.isdisjoint(paused) and resume <= paused
    after = (paused | pause) - resume
    for source in after:
        # Paused only while known and more than half of align_ms ahead.
        assert source in times and times[source] - watermark > align_ms // 2
    for source, time in times.items():
        if time - watermark > align_ms:
            assert source in after
        if time <= watermark:
            assert source not in after


@given(times_st, st.integers(0, 100 * MIN), st.integers(1, 20 * MIN))
def test_a_decision_is_stable(times: dict[int, int], watermark: int, align_ms: int) -> None:
    # Asked again with nothing changed, it changes nothing.
    pause, _ = align(times, watermark, align_ms, set())
    assert align(times, watermark, align_ms, set(pause)) == (frozenset(), frozenset())
