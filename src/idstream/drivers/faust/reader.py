"""Read-only stage tables over one partition of a Faust table, for lookups outside an event.

Driver layer. The stage tables (drivers/faust/tables.py) follow Faust's current event, which an
HTTP request does not have; a lookup names the partition that owns its key instead and reads
that partition's RocksDB directly. It sees the state as of the last written batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from idstream.domain.ports import StateTable
from idstream.storage.codec import ValueCodec
from idstream.storage.layout import table_prefix

V = TypeVar("V")

# UTF-8 never produces 0xff, so prefix + 0xff sorts after every key that starts with prefix.
_AFTER = b"\xff"


class ReadOnlyTableError(RuntimeError):
    """A lookup tried to write stage state: a bug in the caller (not retriable)."""


class PartitionReadTable(Generic[V]):
    """One logical table (key prefix `name\\x00`) in one partition's RocksDB, read-only."""

    def __init__(self, db: Any, name: str, value_type: type[V]) -> None:
        self._db = db
        self._prefix = table_prefix(name)
        self._decode = ValueCodec(value_type).decode

    def get(self, key: str) -> V | None:
        raw = self._db.get(self._prefix + key.encode("utf-8"))
        return None if raw is None else self._decode(raw)

    def put(self, key: str, value: V) -> None:
        raise ReadOnlyTableError(f"lookup wrote {key!r}")

    def delete(self, key: str) -> None:
        raise ReadOnlyTableError(f"lookup deleted {key!r}")

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        within = self._prefix + prefix.encode("utf-8")
        if reverse:
            items = self._db.items(backwards=True, from_key=within + _AFTER)
        else:
            first = max(within, self._prefix + start.encode("utf-8")) if start else within
            items = self._db.items(from_key=first)
        skip = len(self._prefix)
        for raw_key, raw_value in items:
            if not raw_key.startswith(within):
                break
            yield raw_key[skip:].decode("utf-8"), self._decode(raw_value)


class PartitionReader:
    """TableFactory of read-only tables over partition `partition` of a Faust table."""

    def __init__(self, table: Any, partition: int) -> None:
        # The RocksDB store of a Faust table keeps one rocksdict per partition.
        self._db = table.data._db_for_partition(partition)

    def __call__(self, name: str, value_type: type[V]) -> StateTable[V]:
        return PartitionReadTable(self._db, name, value_type)
