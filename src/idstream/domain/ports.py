"""What the stages need from state storage: a typed, key-ordered table.

Domain layer. storage/ implements it (dict for tests, rocksdict for real); drivers/faust adapts
Faust tables to it. Keys are strings; iteration is in key order (bytes of the UTF-8 key).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

V = TypeVar("V")


class StateTable(Protocol[V]):
    def get(self, key: str) -> V | None: ...

    def put(self, key: str, value: V) -> None: ...

    def delete(self, key: str) -> None: ...

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        """Entries whose key starts with `prefix`, in key order (or reverse key order).

        `start` (forward scans only): begin at the first such key at or after it, so a scan
        skips what is known to be gone (e.g. the pool's applied claims, deleted).
        """
        ...


class TableFactory(Protocol):
    """Opens (or creates) the named table whose values are of `value_type`.

    Value types are frozen dataclasses built of str, int, float, bool, None, tuple, dict and
    other such dataclasses, so every store can serialize them (storage/ uses msgspec).
    """

    def __call__(self, name: str, value_type: type[V]) -> StateTable[V]: ...
