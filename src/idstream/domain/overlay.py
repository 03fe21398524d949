"""A write buffer over state tables: work that can be kept (commit) or thrown away (drop).

Domain layer, standard library only. Drivers run a record whose processing failed again in an
overlay, so that what it wrote before failing is never kept (docs/operations.md, "Hostile
input").
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from idstream.domain.ports import StateTable

V = TypeVar("V")
T = TypeVar("T")


class OverlayTable(Generic[V]):
    """A StateTable that keeps its writes in memory over a base table it only reads.

    Keys order by code point, which is the UTF-8 byte order the stores use.
    """

    def __init__(self, base: StateTable[V], dirty: list[OverlayTable[Any]] | None = None) -> None:
        self._base = base
        self._writes: dict[str, V | None] = {}  # None: deleted
        self._keys: list[str] = []  # the written keys, sorted, for scans
        # Shared by the buffers of one Overlaid: each joins it at its first write, so a commit
        # or drop visits only the tables that were written (most records write two or three).
        self._dirty = dirty

    def get(self, key: str) -> V | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)

    def put(self, key: str, value: V) -> None:
        self._write(key, value)

    def delete(self, key: str) -> None:
        self._write(key, None)

    def _write(self, key: str, value: V | None) -> None:
        if key not in self._writes:
            if not self._writes and self._dirty is not None:
                self._dirty.append(self)
            insort(self._keys, key)
        self._writes[key] = value

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        begin = max(prefix, start) if start and not reverse else prefix
        first = bisect_left(self._keys, begin)
        end = first
        while end < len(self._keys) and self._keys[end].startswith(prefix):
            end += 1
        # A snapshot of the written keys, so callers may write while they iterate.
        written = self._keys[first:end]
        if reverse:
            written.reverse()
        values = self._writes
        base = self._base.scan(prefix, reverse=reverse, start=start)
        pending = iter(written)
        held = next(pending, None)

        def before(a: str, b: str) -> bool:
            return a > b if reverse else a < b

        for key, value in base:
            # Written keys that come first, then the base entry unless it was overwritten.
            while held is not None and before(held, key):
                if (mine := values[held]) is not None:
                    yield held, mine
                held = next(pending, None)
            if held == key:
                held = next(pending, None)
                if (mine := values[key]) is not None:
                    yield key, mine
                continue
            yield key, value
        while held is not None:
            if (mine := values[held]) is not None:
                yield held, mine
            held = next(pending, None)

    def drop(self) -> None:
        """Forget the buffered changes."""
        if self._writes:
            self._writes.clear()
            self._keys.clear()

    def commit(self) -> int:
        """Write the buffered changes to the base table; returns how many keys."""
        if not self._writes:
            return 0
        for key, value in self._writes.items():
            if value is None:
                self._base.delete(key)
            else:
                self._base.put(key, value)
        written = len(self._writes)
        self._writes.clear()
        self._keys.clear()
        return written


@dataclass(frozen=True, slots=True)
class Overlaid(Generic[T]):
    """A stage's tables behind write buffers: `tables` to work on, then `commit` or `drop`."""

    tables: T
    buffers: tuple[OverlayTable[Any], ...]
    dirty: list[OverlayTable[Any]]  # the buffers written since the last commit or drop

    def commit(self) -> None:
        for table in self.dirty:
            table.commit()
        self.dirty.clear()

    def drop(self) -> None:
        for table in self.dirty:
            table.drop()
        self.dirty.clear()


def overlaid(tables: T) -> Overlaid[T]:
    """The same tables (a dataclass of StateTables, e.g. InstallTables) behind write buffers."""
    dirty: list[OverlayTable[Any]] = []
    buffers = {f.name: OverlayTable(getattr(tables, f.name), dirty) for f in fields(tables)}  # type: ignore[arg-type]
    return Overlaid(type(tables)(**buffers), tuple(buffers.values()), dirty)
