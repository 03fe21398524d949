"""The in-process driver: runs the install and pool stages over local state with simulated
partitions, for replays from files, deterministic simulation and tests.

Drivers layer. Messages between stages travel in FIFO queues, one per (sender stage instance,
destination key), as Kafka keeps per-partition order. With `shuffle_seed`, every step delivers
the head of a randomly chosen queue (seeded), which simulates any partition interleaving;
without it, each input record is followed by all the messages it causes.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from idstream.codecs import DEFAULT_LIMITS, Limits, Rejection, decode
from idstream.digest import RESOLVER_DIGEST_EXCLUDED, state_digest
from idstream.domain import install as install_stage
from idstream.domain import pool as pool_stage
from idstream.domain.config import DEFAULT_RULES, RuleConfig
from idstream.domain.events import AnyEvent, RecordMeta
from idstream.domain.messages import (
    DEAD_LETTER_MAX_BYTES,
    Claim,
    LinkDecision,
    Message,
    OutputTopic,
    StageResult,
    dead_letter,
)
from idstream.domain.ports import StateTable, TableFactory
from idstream.drivers.local.sinks import MemorySink, Sink
from idstream.storage.memory import DictStore

INPUT_TOPIC = "idstream.events"
DIGEST_EXCLUDED = RESOLVER_DIGEST_EXCLUDED


class Store(TableFactory, Protocol):
    """A TableFactory that lists its open tables and can commit pending writes."""

    @property
    def tables(self) -> Mapping[str, StateTable[Any]]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def partition_of(key: bytes, partitions: int) -> int:
    """Stable key -> partition (crc32; any stable hash will do for a simulation)."""
    return zlib.crc32(key) % partitions if partitions > 1 else 0


@dataclass(slots=True)
class Stats:
    records: int = 0
    rejected: int = 0  # records the decoder rejected
    claims: int = 0
    decisions: int = 0
    outputs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OutputTopic, 0))


@dataclass(frozen=True, slots=True)
class _Input:
    value: bytes
    meta: RecordMeta
    decoded: AnyEvent | Rejection | None = None  # decoded already (to find its partition)


# Queue keys: ("in", partition) | ("claim", sender partition, pool) | ("link", pool, prid).
_QueueKey = tuple[Hashable, ...]


class LocalDriver:
    """Install and pool stages in one process, over one store (dict or RocksDB).

    `partitions` install-stage partitions only change how queues interleave; all stage
    instances share the store, since their keys never overlap. Each pool is its own
    pool-stage sender, the finest split Kafka could give.
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
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.rules = rules
        self.store: Store = store if store is not None else DictStore()
        self.sink: Sink = sink if sink is not None else MemorySink()
        self.partitions = partitions
        self.limits = limits
        self.topic = topic
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.flush_every = flush_every
        self.install_tables = install_stage.open_install_tables(self.store)
        self.pool_tables = pool_stage.open_pool_tables(self.store)
        self.stats = Stats()
        self._offsets = [0] * partitions
        self._random = None if shuffle_seed is None else random.Random(shuffle_seed)
        self._queues: dict[_QueueKey, deque[Any]] = {}
        self._ready: list[_QueueKey] = []
        self._ready_at: dict[_QueueKey, int] = {}
        self._since_flush = 0

    # -- input ---------------------------------------------------------------------------

    def submit(
        self, value: bytes, *, key: bytes | None = None, record_timestamp: int | None = None
    ) -> None:
        """Queue one input record (its partition comes from `key`, else from the decoded
        pushRegistrationId). Without a record timestamp (a file has none) the record's
        timestamp is -1, Kafka's "none", and the decoder makes no skew check."""
        decoded: AnyEvent | Rejection | None = None
        if key is None:
            # A file holds values only: the key is the event's pushRegistrationId.
            decoded = decode(value, None, self.limits)
            key = b"" if isinstance(decoded, Rejection) else decoded.push_registration_id.encode()
        partition = partition_of(key, self.partitions)
        offset = self._offsets[partition]
        self._offsets[partition] = offset + 1
        stamp = -1 if record_timestamp is None else record_timestamp
        meta = RecordMeta(self.topic, partition, offset, stamp, key or None)
        self._push(("in", partition), _Input(value, meta, decoded))
        if self._random is None:
            self.run()

    def replay(self, values: Iterable[bytes]) -> Stats:
        """Submit every record value and run until all queues are empty."""
        for value in values:
            self.submit(value)
        self.run()
        self.store.flush()
        return self.stats

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
            elif kind == "claim":
                self.stats.claims += 1
                result = pool_stage.apply_claim(self.pool_tables, item, self.rules)
                self._deliver(("pool", queue_key[2]), result)
            else:
                self.stats.decisions += 1
                result = install_stage.apply_decision(self.install_tables, item, self.rules)
                sender = (
                    "install",
                    partition_of(item.push_registration_id.encode(), self.partitions),
                )
                self._deliver(sender, result)

    def _input(self, item: _Input) -> None:
        self.stats.records += 1
        meta = item.meta
        decoded = item.decoded
        if decoded is None:
            decoded = decode(item.value, meta, self.limits)
        if isinstance(decoded, Rejection):
            self.stats.rejected += 1
            self._emit_all(
                StageResult(
                    outputs=(
                        dead_letter(
                            item.value,
                            meta,
                            decoded.reason,
                            decoded.detail,
                            max_bytes=self.dead_letter_max_bytes,
                        ),
                    )
                )
            )
        else:
            result = install_stage.apply_event(
                self.install_tables, decoded, item.value, meta, self.rules
            )
            self._deliver(("install", meta.partition), result)
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self._since_flush = 0
            self.store.flush()

    def _deliver(self, sender: tuple[str, Hashable], result: StageResult) -> None:
        for message in result.messages:
            self._route(sender, message)
        self._emit_all(result)

    def _route(self, sender: tuple[str, Hashable], message: Message) -> None:
        if isinstance(message, Claim):
            self._push(("claim", sender, message.pool), message)
        elif isinstance(message, LinkDecision):
            self._push(("link", sender, message.push_registration_id), message)

    def _emit_all(self, result: StageResult) -> None:
        for output in result.outputs:
            self.stats.outputs[output.topic] += 1
            self.sink.emit(output)

    # -- state -----------------------------------------------------------------------------

    def digest(self) -> str:
        self.store.flush()
        return state_digest(self.store.tables, DIGEST_EXCLUDED)

    def close(self) -> None:
        self.store.close()
        self.sink.close()
