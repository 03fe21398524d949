"""StateTable over a Faust table backed by RocksDB (rocksdict): the Kafka driver's state.

Driver layer. Each stage keeps all its logical tables in ONE Faust table (one changelog topic,
one RocksDB per partition); a logical table is a key prefix `name\\x00`. Writes go through
Faust, so each one reaches the partition's RocksDB and the changelog of the partition of the
event being processed. Ordered scans read the partition's RocksDB directly (Faust offers no
ordered iteration), which sees every write at once because Faust writes through to RocksDB.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from faust.streams import current_event

from idstream.domain.ports import StateTable
from idstream.storage.codec import ValueCodec
from idstream.storage.layout import table_prefix

V = TypeVar("V")

# UTF-8 never produces 0xff, so prefix + 0xff sorts after every key that starts with prefix.
_AFTER = b"\xff"


class FaustStateTable(Generic[V]):
    """One logical table inside a Faust table (raw keys and values)."""

    def __init__(self, table: Any, name: str, value_type: type[V]) -> None:
        self._table = table
        # Same key layout and value codec as RocksStore, so one digest reads both.
        self._prefix = table_prefix(name)
        codec = ValueCodec(value_type)
        self._encode = codec.encode
        self._decode = codec.decode

    def get(self, key: str) -> V | None:
        raw = self._table.get(self._prefix + key.encode("utf-8"))
        return None if raw is None else self._decode(raw)

    def put(self, key: str, value: V) -> None:
        self._table[self._prefix + key.encode("utf-8")] = self._encode(value)

    def delete(self, key: str) -> None:
        full = self._prefix + key.encode("utf-8")
        if self._table.get(full) is not None:
            del self._table[full]

    def scan(self, prefix: str = "", *, reverse: bool = False) -> Iterator[tuple[str, V]]:
        start = self._prefix + prefix.encode("utf-8")
        skip = len(self._prefix)
        db = self._partition_db()
        if reverse:
            items = db.items(backwards=True, from_key=start + _AFTER)
        else:
            items = db.items(from_key=start)
        for raw_key, raw_value in items:
            if not raw_key.startswith(start):
                break
            yield raw_key[skip:].decode("utf-8"), self._decode(raw_value)

    def _partition_db(self) -> Any:
        event = current_event()
        if event is None:
            raise RuntimeError("a stage table was scanned outside of an event")
        return self._table.data._db_for_partition(event.message.partition)


class FaustTableFactory:
    """TableFactory that places each logical table in one shared Faust table."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __call__(self, name: str, value_type: type[V]) -> StateTable[V]:
        return FaustStateTable(self._table, name, value_type)
