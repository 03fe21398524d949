"""An undo journal around a StateTable: how the pool stage rolls claims back.

Domain layer. While a claim is being applied, the first old value of every key it writes is
stored in an undo table under the claim's log key; rolling the claim back restores them, and
every key it reads (misses included) or writes is noted, as the claim's footprint. Over one
`apply_claim` call the wrapper also remembers the first old value of every key written,
rollbacks included, so the stage can compare the state before the call with the state after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from idstream.domain.pool_state import UNDO_SEP
from idstream.domain.ports import StateTable

V = TypeVar("V")
U = TypeVar("U")


class Journal:
    """The claim being applied, shared by every journaled table of one stage call."""

    def __init__(self) -> None:
        self.claim_key: str | None = None
        self._seen: set[tuple[int, str]] = set()
        # Per journaled table: how it names a key in a footprint, and the keys touched.
        self._touched: list[tuple[Callable[[str], str], set[str]]] = []

    def register(self, token: Callable[[str], str]) -> set[str]:
        """A table joins the journal: the set it notes the current claim's keys in."""
        touched: set[str] = set()
        self._touched.append((token, touched))
        return touched

    def begin(self, claim_key: str) -> None:
        self.claim_key = claim_key
        self._seen = set()
        for _, touched in self._touched:
            touched.clear()

    def end(self) -> tuple[str, ...]:
        """Stop journaling; the tokens of every key the claim read or wrote, sorted."""
        self.claim_key = None
        self._seen = set()
        tokens = {token(key) for token, touched in self._touched for key in touched}
        return tuple(sorted(tokens))

    def first_write(self, table_id: int, key: str) -> bool:
        mark = (table_id, key)
        if mark in self._seen:
            return False
        self._seen.add(mark)
        return True


class JournaledTable(Generic[V, U]):
    """A StateTable whose writes are recorded in `undo` (as `wrap(old value)`) per claim.

    It has no scan: a claim's footprint is the keys it names, which is exact only because
    the rules reach state by key alone.
    """

    def __init__(
        self,
        table: StateTable[V],
        undo: StateTable[U],
        wrap: Callable[[V | None], U],
        unwrap: Callable[[U], V | None],
        journal: Journal,
        token: Callable[[str], str],
    ) -> None:
        self._table = table
        self._undo = undo
        self._wrap = wrap
        self._unwrap = unwrap
        self._journal = journal
        self._touched = journal.register(token)
        # first old value of each key written during this stage call
        self.before: dict[str, V | None] = {}

    def get(self, key: str) -> V | None:
        if self._journal.claim_key is not None:
            self._touched.add(key)
        return self._table.get(key)

    def get_before(self, key: str) -> V | None:
        """The value the key had when this stage call began."""
        if key in self.before:
            return self.before[key]
        return self._table.get(key)

    def put(self, key: str, value: V) -> None:
        self._record(key)
        self._table.put(key, value)

    def delete(self, key: str) -> None:
        if self._journal.claim_key is not None:
            # Deleting a missing key is a no-op that still depends on the key being missing.
            self._touched.add(key)
        if self._table.get(key) is None:
            return
        self._record(key)
        self._table.delete(key)

    def _record(self, key: str) -> None:
        claim_key = self._journal.claim_key
        if claim_key is not None:
            self._touched.add(key)
        remember = key not in self.before
        journal = claim_key is not None and self._journal.first_write(id(self), key)
        if not (remember or journal):
            return
        old = self._table.get(key)
        if remember:
            self.before[key] = old
        if journal:
            self._undo.put(f"{claim_key}{UNDO_SEP}{key}", self._wrap(old))

    def rollback(self, claim_key: str) -> None:
        """Restore what the claim at `claim_key` overwrote and forget its undo records."""
        prefix = claim_key + UNDO_SEP
        records = list(self._undo.scan(prefix))
        for undo_key, record in records:
            key = undo_key[len(prefix) :]
            old = self._unwrap(record)
            if key not in self.before:
                self.before[key] = self._table.get(key)
            if old is None:
                self._table.delete(key)
            else:
                self._table.put(key, old)
            self._undo.delete(undo_key)

    def changed_keys(self) -> Iterator[str]:
        """Keys written during this stage call whose value differs from the one before."""
        for key, old in self.before.items():
            if self._table.get(key) != old:
                yield key
