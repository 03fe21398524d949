"""What a worker does with each batch of records its agents take, and the ticks it appends.

Driver layer. `StageWorker` holds the two stages over the worker's Faust tables (drivers/steps.py
has the per-record steps both drivers share) and handles one batch at a time:

- install agent: input records and the pool's decisions. Per record, the install stage; per
  input partition of the batch, heartbeats to every pool and a sweep of the eventIds past the
  dedup window. If a record raises, the batch's work is thrown away and its records are applied
  again one by one, each alone, so the one that raises goes to the dead letter
  (`processing_error`) and the others are kept.
- pool agent: claims and heartbeats, in the pool stage; afterwards, for every pool, its
  progress to every input partition's worker.
- ticks: a pool that waits for an input partition says so (`Progress`); the worker that owns
  that partition appends a tick record to it when it has been silent for `tick_ms`.
- alignment: from the same `Progress`, the lowest watermark of the pools holding claims back;
  an owned input partition more than `align_ms` ahead of it is paused (`alignment`).

Every batch ends the same way: outputs, claims, decisions and heartbeats are delivered, then
the table changelog, then RocksDB (tables.py); only then does the agent ack its records.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.streams import _current_event

from idstream.domain import install as install_stage
from idstream.domain import pool_order
from idstream.domain.events import RecordMeta
from idstream.domain.messages import Claim, Heartbeat, LinkDecision, Output, StageResult
from idstream.drivers.faust.metrics import Metrics
from idstream.drivers.faust.outbox import Outbox
from idstream.drivers.faust.serde import (
    Progress,
    decode_decision_message,
    decode_pool_message,
    encode_decision,
    encode_pool_message,
    encode_progress,
)
from idstream.drivers.faust.tables import FaustTableFactory
from idstream.drivers.steps import TICK_HEADER, Steps
from idstream.settings import Settings

logger = logging.getLogger(__name__)

# A pool's word that it waits for a partition is acted on for this long, then forgotten.
WAITING_FRESH_S = 5.0


def record_meta(message: Any) -> RecordMeta:
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    return RecordMeta(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        record_timestamp=int(message.timestamp * 1000),
        key=message.key,
        headers=tuple((str(k), bytes(v or b"")) for k, v in items),
    )


def _on(event: Any) -> None:
    # Table writes land in the partition of Faust's current event.
    _current_event.set(weakref.ref(event))


@dataclass
class _Sources:
    """What the install side knows of its input partitions, in memory (wall clock)."""

    assigned_at: float = field(default_factory=time.monotonic)
    last_record_at: dict[int, float] = field(default_factory=dict)
    last_offset: dict[int, int] = field(default_factory=dict)
    waited_on_since: dict[int, float] = field(default_factory=dict)
    ticked_at: dict[int, float] = field(default_factory=dict)
    # Effective time of each partition's last applied record, and the partitions paused.
    times: dict[int, int] = field(default_factory=dict)
    paused: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Mark:
    """A pool's last word: its watermark, whether it holds claims back, when it came."""

    watermark: int
    holds: bool
    at: float


class StageWorker:
    """The install and pool stages of one worker and their batch handlers."""

    def __init__(
        self,
        settings: Settings,
        steps: Steps,
        install_store: FaustTableFactory,
        pool_store: FaustTableFactory,
        install_outbox: Outbox,
        pool_outbox: Outbox,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.steps = steps
        self.install_store = install_store
        self.pool_store = pool_store
        self.install_outbox = install_outbox
        self.pool_outbox = pool_outbox
        self.metrics = metrics
        t = settings.topics
        self.topics = t
        self.outputs = {
            "resolved-events": t.resolved_events,
            "profile-changes": t.profile_changes,
            "profiles": t.profiles,
            "dead-letter": t.dead_letter,
            "forget-register": t.forget_register,
        }
        self.sources = _Sources()
        self.marks: dict[str, _Mark] = {}
        self._broadcast: dict[str, tuple[int, tuple[int, ...]]] = {}

    # --- sending ----------------------------------------------------------------------------

    def _send(self, outbox: Outbox, result: StageResult) -> None:
        self.metrics.observe_result(result)
        for message in result.messages:
            if isinstance(message, LinkDecision):
                key = message.push_registration_id.encode()
                outbox.add(self.topics.decisions, key, encode_decision(message))
            else:
                outbox.add(self.topics.claims, message.pool.encode(), encode_pool_message(message))
        self._send_outputs(outbox, result.outputs)

    def _send_outputs(self, outbox: Outbox, records: Iterable[Output]) -> None:
        dumps = orjson.dumps
        for out in records:
            value = None if out.value is None else dumps(out.value)
            outbox.add(self.outputs[out.topic.value], out.key.encode(), value)

    # --- install agent ----------------------------------------------------------------------

    async def install_batch(self, events: list[Any]) -> None:
        """Input records and decisions of one batch, in order."""
        try:
            self._install_records(events, isolated=False)
        except Exception:  # noqa: BLE001 - a record raised: find it, alone
            logger.warning("a record of a batch raised; applying the batch record by record")
            self.install_outbox.discard()
            self.install_store.discard()
            self._install_records(events, isolated=True)
        await self.install_store.write(self.install_outbox)

    def _install_records(self, events: list[Any], *, isolated: bool) -> None:
        steps = self.steps
        last: dict[int, tuple[Any, int, int]] = {}  # partition -> (event, offset, time)
        now = time.monotonic()
        for event in events:
            _on(event)
            message = event.message
            raw: bytes = message.value or b""
            if message.topic == self.topics.decisions:
                decision = decode_decision_message(raw)
                if isinstance(decision, Progress):
                    self._progress(message.partition, decision, now)
                else:
                    self._send(self.install_outbox, steps.decision(decision))
                continue
            meta = record_meta(message)
            applied = steps.input_isolated(raw, meta) if isolated else steps.input(raw, meta)
            if applied is None:
                continue
            self.metrics.observe_input(applied.kind)
            self._send(self.install_outbox, applied.result)
            last[meta.partition] = (event, meta.offset, applied.time)
            self.sources.last_record_at[meta.partition] = now
            self.sources.last_offset[meta.partition] = meta.offset
            self.sources.times[meta.partition] = applied.time
        for partition, (event, offset, at) in last.items():
            _on(event)
            for beat in install_stage.heartbeats(
                steps.rules.all_pools, partition, offset, at, frozenset()
            ):
                self._heartbeat(beat)
            install_stage.sweep_seen(steps.install, partition, at, steps.rules.dedup_window_ms)

    def _heartbeat(self, beat: Heartbeat) -> None:
        self.install_outbox.add(self.topics.claims, beat.pool.encode(), encode_pool_message(beat))

    def _progress(self, partition: int, progress: Progress, now: float) -> None:
        if partition in progress.waiting_on:
            self.sources.waited_on_since.setdefault(partition, now)
        # A pool that waits for nothing holds no claim back (waiting_on is empty only then).
        self.marks[progress.pool] = _Mark(progress.watermark, bool(progress.waiting_on), now)

    def alignment(self, owned: Iterable[int]) -> tuple[list[int], list[int]]:
        """(partitions to pause, partitions to resume) of the owned input partitions now, by
        their lead over the lowest watermark of the pools holding claims back (a pool not
        heard from for WAITING_FRESH_S holds nothing: a stale word must not pause anyone)."""
        now = time.monotonic()
        mine = set(owned)
        marks = self.marks.values()
        fresh = ((m.watermark, m.holds) for m in marks if now - m.at <= WAITING_FRESH_S)
        mark = pool_order.holding_watermark(fresh)
        times = {p: t for p, t in self.sources.times.items() if p in mine}
        paused = self.sources.paused & mine
        pause, resume = pool_order.align(times, mark, self.settings.align_ms, paused)
        self.sources.paused = (paused | pause) - resume
        leads = {p: pool_order.lead(t, mark) for p, t in times.items()}
        self.metrics.set_sources(leads, self.sources.paused, pause)
        return sorted(pause), sorted(resume)

    def paused(self) -> frozenset[int]:
        """The input partitions this worker has paused."""
        return frozenset(self.sources.paused)

    def assigned(self) -> None:
        """Partitions were (re)assigned: what was known of them is the previous owner's."""
        self.sources = _Sources()

    def assigned_for(self) -> float:
        return time.monotonic() - self.sources.assigned_at

    def ticks_due(self, owned: Iterable[int], caught_up: Any) -> list[int]:
        """The owned input partitions to append a tick to now: a pool waits for them, they
        have been silent for `tick_ms`, and nothing of them is left to read."""
        now = time.monotonic()
        tick_s = self.settings.tick_ms / 1000
        due: list[int] = []
        for partition in owned:
            since = self.sources.waited_on_since.get(partition)
            if since is None:
                continue
            if partition in self.sources.paused:
                # Ahead of the watermark already, and a tick would not be read before resuming.
                continue
            if now - since > WAITING_FRESH_S:
                del self.sources.waited_on_since[partition]
                continue
            quiet = now - self.sources.last_record_at.get(partition, 0.0) >= tick_s
            rested = now - self.sources.ticked_at.get(partition, 0.0) >= tick_s
            if quiet and rested and caught_up(partition, self.sources.last_offset.get(partition)):
                due.append(partition)
                self.sources.ticked_at[partition] = now
                del self.sources.waited_on_since[partition]
        return due

    # --- pool agent -------------------------------------------------------------------------

    async def pool_batch(self, events: list[Any]) -> None:
        """Claims and heartbeats of one batch; then each pool's progress to every partition."""
        pools: dict[str, Any] = {}
        for event in events:
            _on(event)
            message: Claim | Heartbeat = decode_pool_message(event.message.value or b"")
            self._send(self.pool_outbox, self.steps.pool_message(message))
            pools[message.pool] = event
        for pool, event in pools.items():
            _on(event)
            self._tell_progress(pool)
        await self.pool_store.write(self.pool_outbox)

    def _tell_progress(self, pool: str) -> None:
        cursor = self.steps.cursor(pool)
        if cursor is None:
            return
        self.metrics.set_pending(pool, cursor.pending)
        waiting = pool_order.waiting_on(cursor)
        mark = pool_order.watermark(cursor)
        if not waiting and self._broadcast.get(pool, (mark, ()))[1] == ():
            # Nothing waits, and the partitions were told so.
            self._broadcast[pool] = (mark, ())
            return
        self._broadcast[pool] = (mark, waiting)
        value = encode_progress(Progress(pool, mark, waiting))
        for partition in range(self.settings.partitions):
            self.pool_outbox.add(self.topics.decisions, pool.encode(), value, partition)


def tick_headers() -> list[tuple[str, bytes]]:
    return [(TICK_HEADER, b"")]
