"""The worker's side of alignment (drivers/faust/worker.py): what it learns from the pools'
Progress messages, which of its input partitions it pauses, and what /metrics shows."""

from __future__ import annotations

from typing import Any, cast

import pytest

from idstream.drivers.faust import worker as worker_module
from idstream.drivers.faust.metrics import Metrics
from idstream.drivers.faust.serde import Progress
from idstream.drivers.faust.worker import WAITING_FRESH_S, StageWorker
from idstream.settings import Settings

ALIGN = 60_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(worker_module.time, "monotonic", clock)
    return clock


def make_worker() -> tuple[StageWorker, Metrics]:
    settings = Settings(partitions=3, align_ms=ALIGN)
    metrics = Metrics.for_settings(settings)
    none = cast(Any, None)  # the stages, tables and outboxes are not used here
    return StageWorker(settings, none, none, none, none, none, metrics), metrics


def _metric(metrics: Metrics, line_start: str) -> float:
    for line in metrics.render().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in /metrics")


def test_pauses_the_partition_ahead_of_a_pool_that_holds_claims(clock: Clock) -> None:
    worker, metrics = make_worker()
    worker.sources.times = {0: 5_000, 1: 5_000 + ALIGN + 1, 2: 6_000}
    # Pool "a" holds claims (it waits on partition 0), pool "b" holds none.
    worker._progress(0, Progress("a", 5_000, (0,)), clock.now)
    worker._progress(0, Progress("b", 1_000, ()), clock.now)
    assert worker.alignment([0, 1, 2]) == ([1], [])
    assert worker.paused() == {1}
    assert _metric(metrics, 'idstream_source_paused{partition="1"}') == 1
    assert _metric(metrics, 'idstream_source_paused{partition="0"}') == 0
    assert _metric(metrics, 'idstream_source_lead_seconds{partition="1"}') == ALIGN / 1000 + 0.001
    assert _metric(metrics, 'idstream_source_pauses_total{partition="1"}') == 1
    # Asked again, nothing changes (and nothing is counted twice).
    assert worker.alignment([0, 1, 2]) == ([], [])
    assert _metric(metrics, 'idstream_source_pauses_total{partition="1"}') == 1


def test_resumes_when_the_pool_holds_nothing_or_falls_silent(clock: Clock) -> None:
    worker, _ = make_worker()
    worker.sources.times = {0: 5_000, 1: 5_000 + 2 * ALIGN}
    worker._progress(0, Progress("a", 5_000, (0,)), clock.now)
    assert worker.alignment([0, 1]) == ([1], [])
    # The pool released everything: it holds nobody back.
    worker._progress(0, Progress("a", 5_000, ()), clock.now)
    assert worker.alignment([0, 1]) == ([], [1])
    # Holding again, then not heard from for longer than WAITING_FRESH_S: a stale word.
    worker._progress(0, Progress("a", 5_000, (0,)), clock.now)
    assert worker.alignment([0, 1]) == ([1], [])
    clock.now += WAITING_FRESH_S + 0.1
    assert worker.alignment([0, 1]) == ([], [1])


def test_a_partition_no_longer_owned_is_forgotten_and_a_paused_one_gets_no_tick(
    clock: Clock,
) -> None:
    worker, _ = make_worker()
    worker.sources.times = {0: 5_000, 1: 5_000 + 2 * ALIGN}
    for partition in (0, 1):  # broadcast to every decisions partition
        worker._progress(partition, Progress("a", 5_000, (0, 1)), clock.now)
    assert worker.alignment([0, 1]) == ([1], [])
    clock.now += 1.0  # silent for longer than tick_ms
    assert worker.ticks_due([0, 1], lambda partition, last: True) == [0]
    # Partition 1 went to another worker: not paused here any more.
    assert worker.alignment([0]) == ([], [])
    assert worker.paused() == frozenset()
