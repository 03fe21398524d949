"""The state digest: the logical content of the tables, whatever the store or write order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idstream.digest import dump_lines, state_digest
from idstream.storage.memory import DictStore
from idstream.storage.rocks import RocksStore


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    items: tuple[int, ...] = ()


ROWS = [
    ("t1", "b", Row("b", {"z": 1, "a": [1, 2]}, (3, 4))),
    ("t1", "a", Row("a", {"é": None})),
    ("t2", "x\x1fy", Row("x", {"f": 1.5})),
    ("skip", "k", Row("skipped")),
]


def _fill(store: Any, rows: list[tuple[str, str, Row]]) -> None:
    for table, key, value in rows:
        store.open(table, Row).put(key, value)
    store.flush()


def test_same_content_same_digest_in_every_store_and_order(tmp_path: Path) -> None:
    memory = DictStore()
    _fill(memory, ROWS)
    with RocksStore(tmp_path / "rocks") as rocks:
        _fill(rocks, list(reversed(ROWS)))
        assert state_digest(rocks.tables, frozenset()) == state_digest(memory.tables, frozenset())
        assert list(dump_lines(rocks.tables, frozenset())) == list(
            dump_lines(memory.tables, frozenset())
        )


def test_any_change_changes_the_digest_except_in_excluded_tables() -> None:
    store = DictStore()
    _fill(store, ROWS)
    before = state_digest(store.tables, frozenset({"skip"}))
    store.open("skip", Row).put("other", Row("ignored"))
    assert state_digest(store.tables, frozenset({"skip"})) == before
    store.open("t1", Row).put("a", Row("a", {"é": 0}))
    assert state_digest(store.tables, frozenset({"skip"})) != before


def test_a_key_moving_between_tables_changes_the_digest() -> None:
    one, two = DictStore(), DictStore()
    _fill(one, [("ab", "c", Row("v"))])
    _fill(two, [("a", "bc", Row("v"))])
    assert state_digest(one.tables, frozenset()) != state_digest(two.tables, frozenset())


def test_dump_is_readable() -> None:
    store = DictStore()
    _fill(store, ROWS[:1])
    (line,) = dump_lines(store.tables, frozenset())
    assert line == 't1\t"b"\t{"attrs":{"a":[1,2],"z":1},"items":[3,4],"name":"b"}'
