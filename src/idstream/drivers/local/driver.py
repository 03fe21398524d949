"""The in-process driver: runs the install and pool stages over local state with simulated
partitions, for replays from files, deterministic simulation and tests.

Drivers layer. An input record is placed in its partition as Kafka's producer would (murmur2
of its key) unless it says where it was read (an exported Kafka record). Messages between
stages travel in FIFO queues, one per (sender, destination key), as Kafka keeps per-partition
order. With `shuffle_seed`, every step delivers the head of a randomly chosen queue (seeded),
which simulates any interleaving of partitions and workers; without it, each input record is
followed by everything it causes. The pool applies claims in input-log order whatever the
interleaving (domain/pool_order.py); `drain` appends tick records to the partitions a pool
still waits for, as a worker does for silent partitions.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from idstream.codecs import DEFAULT_LIMITS, Limits, Rejection, decode
from idstream.codecs.envelope import Envelope
from idstream.digest import REPLAY_TICKS, RESOLVER_DIGEST_EXCLUDED, state_digest
from idstream.domain import install as install_stage
from idstream.domain import pool as pool_stage
from idstream.domain import pool_order
from idstream.domain.config import DEFAULT_RULES, RuleConfig
from idstream.domain.erasure import NOTHING_ERASED, Erased
from idstream.domain.events import RecordMeta
from idstream.domain.install_state import source_key
from idstream.domain.keys import key, number
from idstream.domain.messages import (
    DEAD_LETTER_MAX_BYTES,
    SKIP_REASONS,
    Claim,
    Heartbeat,
    LinkDecision,
    Message,
    OutputTopic,
    StageResult,
)
from idstream.domain.ports import StateTable, TableFactory
from idstream.drivers.local.sinks import MemorySink, Sink
from idstream.drivers.partitioner import kafka_partition
from idstream.drivers.steps import TICK_HEADER, Steps
from idstream.errors import OffsetTakenError
from idstream.storage.memory import DictStore

logger = logging.getLogger(__name__)

INPUT_TOPIC = "idstream.events"
# Keys whose partition is remembered before the cache starts over.
_PARTITION_CACHE = 200_000
DIGEST_EXCLUDED = RESOLVER_DIGEST_EXCLUDED


class Store(TableFactory, Protocol):
    """A TableFactory that lists its open tables and can commit pending writes."""

    @property
    def tables(self) -> Mapping[str, StateTable[Any]]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Stats:
    records: int = 0  # input records applied (redeliveries not counted)
    redelivered: int = 0  # records at or before their partition's applied offset
    rejected: int = 0  # records the decoder rejected
    claims: int = 0
    decisions: int = 0
    outputs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OutputTopic, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))


@dataclass(frozen=True, slots=True)
class TickSpan:
    """Offsets of an input partition that `drain` gave to tick records of its own
    (``replay_ticks``, key: ``key(number(partition))``): after `real`, the offset of the last
    input record, up to `last`. A later run whose records carry offsets of their own (an
    exported history) must not reuse them."""

    real: int
    last: int


@dataclass(frozen=True, slots=True)
class _Input:
    value: bytes
    meta: RecordMeta


# Queue keys: ("in", partition) | ("pool", source partition, pool) | ("link", pool, prid).
_QueueKey = tuple[Hashable, ...]


class LocalDriver:
    """Install and pool stages in one process, over one store (dict or RocksDB).

    `partitions` is the number of input partitions (the pool waits for each). All stage
    instances share the store, since their keys never overlap. `register` is a forget register
    from an earlier run of the same log: nothing of a person it names is published again.

    Input records take `record_timestamp` as their Kafka record time. A record submitted
    without one (a plain file line) gets its line number in the log, counted from the
    store's last record: the log's order is then the file's order. The future-skew rule
    (SPEC §4.3) is off for such records, since no broker stamped them.
    """

    def __init__(
        self,
        rules: RuleConfig = DEFAULT_RULES,
        *,
        store: Store | None = None,
        sink: Sink | None = None,
        partitions: int = 1,
        shuffle_seed: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        flush_every: int = 2000,
        topic: str = INPUT_TOPIC,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        register: Erased = NOTHING_ERASED,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.rules = rules
        self.store: Store = store if store is not None else DictStore()
        self.sink: Sink = sink if sink is not None else MemorySink()
        self.partitions = partitions
        self.limits = limits
        self.topic = topic
        self.flush_every = flush_every
        self.steps = Steps(
            rules,
            limits,
            partitions,
            install_stage.open_install_tables(self.store),
            pool_stage.open_pool_tables(self.store),
            dead_letter_max_bytes=dead_letter_max_bytes,
            erased=register,
        )
        self.install_tables = self.steps.install
        self.pool_tables = self.steps.pool
        self.stats = Stats()
        self._random = None if shuffle_seed is None else random.Random(shuffle_seed)
        self._queues: dict[_QueueKey, deque[Any]] = {}
        self._ready: list[_QueueKey] = []
        self._ready_at: dict[_QueueKey, int] = {}
        self._since_flush = 0
        # Per input partition: next offset, and the (time, offset) of its last applied record.
        self._offsets = [0] * partitions
        self._positions: dict[int, tuple[int, int]] = {}
        self._clock = 0  # the log time of a record without a timestamp: its line number
        self._warned_untimed = False
        self._partition_of: dict[bytes, int] = {}
        # Per pool: the input partitions its oldest pending claim waits for.
        self._waiting: dict[str, tuple[int, ...]] = {}
        self._tick_table = self.store(REPLAY_TICKS, TickSpan)
        self._ticks: dict[int, TickSpan] = {}
        self._resume()

    def _resume(self) -> None:
        """Continue the log of existing state: offsets and log time after its last record."""
        for partition in range(self.partitions):
            known = self.install_tables.sources.get(source_key(partition))
            if known is not None:
                self._offsets[partition] = known.offset + 1
                self._positions[partition] = (known.time, known.offset)
                self._clock = max(self._clock, known.time + 1)
            span = self._tick_table.get(key(number(partition)))
            if span is not None:
                self._ticks[partition] = span

    def check_offsets(self, first: Mapping[int, int]) -> None:
        """Raise OffsetTakenError if an input partition's first record (`first`: partition ->
        offset) would land on an offset an earlier run gave to its own tick records; such a
        record would be taken for one applied already, and lost."""
        for partition, offset in sorted(first.items()):
            span = self._ticks.get(partition)
            if span is not None and span.real < offset <= span.last:
                raise OffsetTakenError(
                    f"input partition {partition}: the state's last run ended with tick records "
                    f"of its own at offsets {span.real + 1}..{span.last} (to apply the claims "
                    f"waiting at its end), and this input has a record at offset {offset}. "
                    "Replay the whole history into empty state, or end every run but the last "
                    "with --no-drain"
                )

    @property
    def resumed(self) -> bool:
        """The store held state from an earlier run, which this run continues."""
        return bool(self._positions)

    # -- input ---------------------------------------------------------------------------

    def submit(
        self,
        value: bytes,
        *,
        key: bytes | None = None,
        record_timestamp: int | None = None,
        partition: int | None = None,
        offset: int | None = None,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Queue one input record. Without `partition`, Kafka's default partitioner places it
        by `key` (else by its pushRegistrationId); without `offset`, it goes after the
        partition's last record."""
        if partition is None:
            if key is None:
                decoded = decode(value, None, self.limits)
                key = (
                    b"" if isinstance(decoded, Rejection) else decoded.push_registration_id.encode()
                )
            partition = self._partition_of.get(key)
            if partition is None:
                # murmur2 in pure Python: installs send many records, each key is hashed once.
                if len(self._partition_of) >= _PARTITION_CACHE:
                    self._partition_of.clear()
                partition = self._partition_of[key] = kafka_partition(key, self.partitions)
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} outside 0..{self.partitions - 1}")
        if offset is None:
            offset = self._offsets[partition]
        else:
            self.check_offsets({partition: offset})
        self._offsets[partition] = max(self._offsets[partition], offset + 1)
        if record_timestamp is None:
            record_timestamp = self._untimed()
        else:
            self._clock = max(self._clock, record_timestamp + 1)
        meta = RecordMeta(self.topic, partition, offset, record_timestamp, key, headers)
        self._push(("in", partition), _Input(value, meta))
        if self._random is None:
            self.run()

    def submit_record(self, record: Envelope) -> None:
        """Queue a record read from Kafka (or an export of it), where Kafka put it."""
        self.submit(
            record.value,
            key=record.key,
            record_timestamp=record.timestamp,
            partition=record.partition,
            offset=record.offset,
            headers=record.headers,
        )

    def _untimed(self) -> int:
        if not self._warned_untimed:
            self._warned_untimed = True
            logger.warning(
                "input records without a Kafka record time: each gets its line number as its "
                "log time, and the future-skew rule (timestamp_out_of_range) is off"
            )
            self.limits = replace(self.limits, max_future_skew_ms=2**62)
            self.steps.limits = self.limits
        self._clock += 1
        return self._clock - 1

    def replay(self, values: Iterable[bytes]) -> Stats:
        """Submit every record value, run until all queues are empty, then drain."""
        for value in values:
            self.submit(value)
        self.drain()
        return self.stats

    def drain(self, *, ticks: bool = True) -> None:
        """Run until nothing is left: tick records go to every partition a pool still waits
        for (as a worker appends them to silent partitions), until no claim is pending.
        Without `ticks`, the claims that wait stay pending, for a later run that continues the
        log (its own records then advance those partitions)."""
        self.run()
        while ticks and self._waiting:
            silent = sorted({q for sources in self._waiting.values() for q in sources})
            for partition in silent:
                # Remembered, so a later run's records cannot take the tick's offset.
                offset = self._offsets[partition]
                span = self._ticks.get(partition)
                real = span.real if span is not None and span.last == offset - 1 else offset - 1
                self._ticks[partition] = span = TickSpan(real, offset)
                self._tick_table.put(key(number(partition)), span)
                self.submit(
                    b"",
                    record_timestamp=self._clock,
                    partition=partition,
                    headers=((TICK_HEADER, b""),),
                )
            self.run()
        self._sweep()
        self.store.flush()

    # -- scheduling ----------------------------------------------------------------------

    def _push(self, queue_key: _QueueKey, item: Any) -> None:
        queue = self._queues.get(queue_key)
        if queue is None:
            queue = self._queues[queue_key] = deque()
        if not queue:
            self._ready_at[queue_key] = len(self._ready)
            self._ready.append(queue_key)
        queue.append(item)

    def _pop(self) -> tuple[_QueueKey, Any]:
        if self._random is None:
            # Depth first: the newest ready queue, so each record's consequences finish
            # before the next record starts.
            index = len(self._ready) - 1
        else:
            index = self._random.randrange(len(self._ready))
        queue_key = self._ready[index]
        queue = self._queues[queue_key]
        item = queue.popleft()
        if not queue:
            last = self._ready.pop()
            if last != queue_key:
                self._ready[index] = last
                self._ready_at[last] = index
            del self._ready_at[queue_key]
            # One queue per pool and per install link: keep only live ones, or memory grows
            # with every install ever seen.
            del self._queues[queue_key]
        return queue_key, item

    def run(self) -> None:
        """Deliver queued records and messages until every queue is empty."""
        while self._ready:
            queue_key, item = self._pop()
            kind = queue_key[0]
            if kind == "in":
                self._input(item)
            elif kind == "pool":
                if isinstance(item, Claim):
                    self.stats.claims += 1
                self._deliver(("pool", item.pool), self.steps.pool_message(item))
                self._note_waiting(item.pool)
            else:
                self.stats.decisions += 1
                result = self.steps.decision(item)
                self._deliver(("install", 0), result)

    def _input(self, item: _Input) -> None:
        meta = item.meta
        applied = self.steps.input_isolated(item.value, meta)
        if applied is None:
            self.stats.redelivered += 1
            return
        self.stats.records += 1
        result = applied.result
        if (
            not result.messages
            and not result.skipped
            and any(o.topic is OutputTopic.DEAD_LETTER for o in result.outputs)
        ):
            self.stats.rejected += 1
        self._positions[meta.partition] = (applied.time, meta.offset)
        self._deliver(("install", meta.partition), result)
        # The pools waiting for this partition hear how far it has come.
        for pool, sources in list(self._waiting.items()):
            if meta.partition in sources and not any(
                isinstance(m, Claim) and m.pool == pool for m in result.messages
            ):
                self._push(
                    ("pool", meta.partition, pool),
                    Heartbeat(pool, meta.partition, applied.time, meta.offset),
                )
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self._since_flush = 0
            self._sweep()
            self.store.flush()

    def _sweep(self) -> None:
        """Forget the eventIds past the dedup window, as a worker does after each batch."""
        window = self.rules.dedup_window_ms
        for partition, (time, _) in self._positions.items():
            install_stage.sweep_seen(self.install_tables, partition, time, window)

    def _note_waiting(self, pool: str) -> None:
        """Remember which partitions the pool waits for, and tell it where those are now."""
        cursor = self.steps.cursor(pool)
        waiting = pool_order.waiting_on(cursor) if cursor is not None else ()
        if not waiting:
            self._waiting.pop(pool, None)
            return
        self._waiting[pool] = waiting
        assert cursor is not None
        for source in waiting:
            known = self._positions.get(source)
            if known is not None and known[1] > cursor.offsets[source]:
                time, offset = known
                self._push(("pool", source, pool), Heartbeat(pool, source, time, offset))

    def _deliver(self, sender: tuple[str, Hashable], result: StageResult) -> None:
        for message in result.messages:
            self._route(sender, message)
        for reason in result.notes:
            if reason in self.stats.skipped:
                self.stats.skipped[reason] += 1
        for reason, partition, offset in result.skipped:
            self.sink.skip(reason, self.topic, partition, offset)
        for output in result.outputs:
            self.stats.outputs[output.topic] += 1
            self.sink.emit(output)

    def _route(self, sender: tuple[str, Hashable], message: Message) -> None:
        if isinstance(message, Claim):
            self._push(("pool", message.position[1], message.pool), message)
        elif isinstance(message, LinkDecision):
            self._push(("link", sender, message.push_registration_id), message)

    # -- state -----------------------------------------------------------------------------

    def digest(self) -> str:
        self.store.flush()
        return state_digest(self.store.tables, DIGEST_EXCLUDED)

    def close(self) -> None:
        self.store.close()
        self.sink.close()
