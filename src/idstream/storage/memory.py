"""In-memory, key-ordered state tables: for unit tests and quick in-process runs.

Storage layer. Same behaviour as the RocksDB tables (the contract suite in tests/contract
checks both); keys are ordered by their UTF-8 bytes, which for str is code-point order.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from idstream.domain.ports import StateTable
from idstream.storage.codec import ValueCodec

V = TypeVar("V")


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


class DictTable(Generic[V]):
    """A sorted dict. With `roundtrip`, values are stored encoded, as a real store would."""

    def __init__(self, value_type: type[V], *, roundtrip: bool = False) -> None:
        self.value_type = value_type
        self._keys: list[str] = []
        self._values: dict[str, Any] = {}
        self._codec: ValueCodec[V] | None = ValueCodec(value_type) if roundtrip else None

    def get(self, key: str) -> V | None:
        stored = self._values.get(key)
        if stored is None or self._codec is None:
            return stored
        return self._codec.decode(stored)

    def put(self, key: str, value: V) -> None:
        if key not in self._values:
            insort(self._keys, key)
        self._values[key] = value if self._codec is None else self._codec.encode(value)

    def delete(self, key: str) -> None:
        if self._values.pop(key, None) is not None:
            del self._keys[bisect_left(self._keys, key)]

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        first = bisect_left(self._keys, max(prefix, start) if start and not reverse else prefix)
        end_key = _prefix_end(prefix)
        end = len(self._keys) if end_key is None else bisect_left(self._keys, end_key)
        # A snapshot of the keys, so callers may write while they iterate.
        keys = self._keys[first:end]
        if reverse:
            keys.reverse()
        for key in keys:
            value = self.get(key)
            if value is not None:
                yield key, value

    def __len__(self) -> int:
        return len(self._keys)


class DictStore:
    """A TableFactory of DictTables; `tables` lists what was opened (for digests)."""

    def __init__(self, *, roundtrip: bool = False) -> None:
        self.roundtrip = roundtrip
        self.tables: dict[str, DictTable[Any]] = {}

    def __call__(self, name: str, value_type: type[V]) -> StateTable[V]:
        return self.open(name, value_type)

    def open(self, name: str, value_type: type[V]) -> DictTable[V]:
        table = self.tables.get(name)
        if table is None:
            table = DictTable(value_type, roundtrip=self.roundtrip)
            self.tables[name] = table
        elif table.value_type is not value_type:
            raise TypeError(f"table {name!r} is open with {table.value_type!r}")
        return table

    def flush(self) -> None:
        """Nothing to write: every put is already visible (same API as RocksStore)."""

    def close(self) -> None:
        """Nothing to release (same API as RocksStore)."""
