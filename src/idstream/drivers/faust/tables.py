"""StateTable over a Faust table backed by RocksDB (rocksdict): the Kafka driver's state.

Driver layer. Each stage keeps all its logical tables in ONE Faust table (one changelog topic,
one RocksDB per partition); a logical table is a key prefix `name\\x00`, the layout of
storage/rocks.py.

Writes are held per batch: reads and scans see them at once, and `FaustTableFactory.write`
writes each changed key once at the end of the batch. So a key written by many events of a
batch (an install's record, a pool's cursor) costs one changelog record and one RocksDB write
per batch, not one per event. The changelog records go to the producer only once the batch's
other records are delivered; once they are delivered too, each partition's changes and the
offset of its last changelog record (Faust's "persisted offset", where its recovery resumes
reading the changelog) go into that partition's RocksDB in one WriteBatch, the way Faust's own
recovery applies changelog records (`Store.apply_changelog_batch`). A crash before the
changelog is delivered loses the batch's writes together with its uncommitted offsets, so the
batch is processed again (its outputs are sent twice: at least once); a crash after it but
before the RocksDB write is repaired by Faust's recovery reading the changelog from the
persisted offset, and the redelivered records are recognised by their offsets. Gets and
ordered scans read the partition's RocksDB directly (Faust offers no ordered iteration).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from itertools import takewhile
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from faust.streams import current_event
from faust.types import TP

from idstream.domain.ports import StateTable
from idstream.storage.codec import ValueCodec
from idstream.storage.layout import table_prefix
from idstream.storage.rocks import merge_sorted

V = TypeVar("V")

# UTF-8 never produces 0xff, so prefix + 0xff sorts after every key that starts with prefix.
_AFTER = b"\xff"


class _Deleted:
    """Marks a key deleted in the batch."""


DELETED = _Deleted()


class RecordSender(Protocol):
    """Where a batch's records go (drivers/faust/app.py's Outbox)."""

    def add(
        self, topic: str, key: bytes, value: bytes | None, partition: int | None = None
    ) -> None: ...

    async def delivered(self) -> dict[tuple[str, int], int]:
        """Send and wait for everything added; the last offset per (topic, partition)."""
        ...


class _Message(NamedTuple):
    """What `Store.apply_changelog_batch` reads of a changelog record."""

    tp: Any
    partition: int
    offset: int
    key: bytes
    value: bytes | None


class _Record(NamedTuple):
    message: _Message


class FaustStateTable(Generic[V]):
    """One logical table inside a Faust table (raw keys and values)."""

    def __init__(self, table: Any, name: str, value_type: type[V]) -> None:
        self._table = table
        self._prefix = table_prefix(name)
        codec = ValueCodec(value_type)
        self._encode = codec.encode
        self._decode = codec.decode
        # partition -> full key -> value or DELETED, written at the end of the batch. Each
        # partition has a RocksDB of its own: one never sees another's keys.
        self._pending: dict[int, dict[bytes, Any]] = {}
        # partition -> its held keys, sorted: a scan finds its range by bisection.
        self._pending_keys: dict[int, list[bytes]] = {}

    def get(self, key: str) -> V | None:
        full = self._prefix + key.encode("utf-8")
        partition = _partition()
        held = self._pending.get(partition)
        if held is not None:
            value = held.get(full)
            if value is not None:
                return None if value is DELETED else value
        raw = self._table.data._db_for_partition(partition).get(full)
        return None if raw is None else self._decode(raw)

    def put(self, key: str, value: V) -> None:
        self._hold(self._prefix + key.encode("utf-8"), value)

    def delete(self, key: str) -> None:
        self._hold(self._prefix + key.encode("utf-8"), DELETED)

    def _hold(self, full: bytes, value: Any) -> None:
        partition = _partition()
        held = self._pending.get(partition)
        if held is None:
            held = self._pending[partition] = {}
            self._pending_keys[partition] = []
        if full not in held:
            insort(self._pending_keys[partition], full)
        held[full] = value

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        within = self._prefix + prefix.encode("utf-8")
        first = within
        if start and not reverse:
            first = max(within, self._prefix + start.encode("utf-8"))
        partition = _partition()
        db = self._table.data._db_for_partition(partition)
        items = (
            db.items(backwards=True, from_key=within + _AFTER)
            if reverse
            else db.items(from_key=first)
        )
        # The batch's held writes in the range, a snapshot (the caller may write while it
        # iterates, as DictTable allows); RocksDB is read lazily, so a scan that stops early
        # reads only what it used. Writes reach RocksDB only at the end of the batch.
        keys = self._pending_keys.get(partition, [])
        pending = self._pending.get(partition, {})
        held: list[tuple[bytes, Any]] = []
        for i in range(bisect_left(keys, first), len(keys)):
            full = keys[i]
            if not full.startswith(within):
                break
            held.append((full, pending[full]))
        if reverse:
            held.reverse()
        stored = takewhile(lambda item: item[0].startswith(within), items)
        skip = len(self._prefix)
        decode = self._decode
        for full, value in merge_sorted(stored, held, reverse=reverse):
            if value is DELETED:
                continue
            decoded = decode(value) if isinstance(value, bytes) else value
            yield full[skip:].decode("utf-8"), decoded

    def discard(self) -> None:
        self._pending = {}
        self._pending_keys = {}

    def drain(self) -> Iterator[tuple[int, bytes, bytes | None]]:
        """The held changes as (partition, key, value bytes or None for a delete); clears them."""
        pending, self._pending = self._pending, {}
        self._pending_keys = {}
        encode = self._encode
        for partition, held in pending.items():
            for full, value in held.items():
                yield partition, full, None if value is DELETED else encode(value)


def _partition() -> int:
    event = current_event()
    if event is None:
        raise RuntimeError("a stage table was used outside of an event")
    partition: int = event.message.partition
    return partition


class FaustTableFactory:
    """TableFactory that places each logical table in one shared Faust table."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._tables: list[FaustStateTable[Any]] = []

    def __call__(self, name: str, value_type: type[V]) -> StateTable[V]:
        table = FaustStateTable(self._table, name, value_type)
        self._tables.append(table)
        return table

    def discard(self) -> None:
        """Forget every write held for the batch (a batch processed again, record by record)."""
        for table in self._tables:
            table.discard()

    async def write(self, sender: RecordSender) -> int:
        """End of a batch: outputs, then changelog, then RocksDB; returns how many keys.

        First every record `sender` holds (the batch's outputs, claims, decisions, heartbeats)
        is delivered; only then the changelog records. So a crash can never leave state that
        says a record was applied while an output of it was lost: either the changelog is
        there (and the outputs were delivered before it), or the batch is processed again.
        A partition's persisted offset never points past a changelog record not delivered.
        """
        await sender.delivered()
        topic = self._table.changelog_topic.get_topic_name()
        changes = [change for table in self._tables for change in table.drain()]
        if not changes:
            return 0
        for partition, key, value in changes:
            sender.add(topic, key, value, partition)
        offsets = await sender.delivered()
        # Faust keeps the highest offset per partition as its persisted offset: the offset of
        # the partition's last changelog record of this batch.
        tps = {p: TP(topic, p) for p, _, _ in changes}
        records = [
            _Record(_Message(tps[p], p, offsets[(topic, p)], key, value))
            for p, key, value in changes
        ]
        self._table.data.apply_changelog_batch(records, to_key=None, to_value=None)
        return len(changes)


def close_on_stop(table: Any) -> None:
    """Close the table's RocksDB handles when Faust stops the table.

    faust-streaming 0.15 only drops its references on stop (its `db.close()` is commented
    out) and leaves the rest to the garbage collector, so a worker could exit with a flush
    half-written; a DB left so read back with "Sst file size mismatch". Flush and close first.
    """
    store = table.data
    original_stop = store.stop

    async def stop() -> None:
        for db in list(store._dbs.values()):
            db.flush()
            db.close()
        await original_stop()

    store.stop = stop
