"""The StateTable contract: one suite that every state store implementation must pass.

Each store runs in a few modes (values kept as objects or encoded; RocksDB writes pending or
committed), since a table must behave the same whether or not its writes were flushed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idstream.domain.overlay import OverlayTable
from idstream.domain.ports import StateTable
from idstream.errors import ConfigurationError, StateFormatError
from idstream.storage.layout import FORMAT_VERSION_KEY
from idstream.storage.memory import DictStore
from idstream.storage.rocks import RocksStore


@dataclass(frozen=True, slots=True)
class Stamp:
    value: str | int | float | bool | None
    timestamp: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Nested:
    name: str
    stamps: tuple[Stamp, ...] = ()
    by_key: dict[str, Stamp] = field(default_factory=dict)
    maybe: Stamp | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Harness:
    """Opens tables of one store and, between steps, may commit its pending writes."""

    def __init__(
        self, open_table: Callable[[str, type[Any]], StateTable[Any]], step: Callable[[], None]
    ):
        self.open = open_table
        self.step = step


MODES = ["dict", "dict-roundtrip", "rocks-pending", "rocks-flushed"]


@pytest.fixture(params=MODES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    mode: str = request.param
    if mode.startswith("dict"):
        store = DictStore(roundtrip=mode == "dict-roundtrip")
        yield Harness(store, store.flush)
        return
    rocks = RocksStore(tmp_path / "state")
    yield Harness(rocks, rocks.flush if mode == "rocks-flushed" else lambda: None)
    rocks.close()


def test_get_missing_is_none(harness: Harness) -> None:
    table = harness.open("t", Nested)
    assert table.get("nope") is None


def test_put_then_get_and_overwrite(harness: Harness) -> None:
    table = harness.open("t", Nested)
    table.put("k", Nested("one"))
    harness.step()
    assert table.get("k") == Nested("one")
    table.put("k", Nested("two"))
    assert table.get("k") == Nested("two")
    harness.step()
    assert table.get("k") == Nested("two")
    assert list(table.scan()) == [("k", Nested("two"))]


def test_delete(harness: Harness) -> None:
    table = harness.open("t", Nested)
    table.put("a", Nested("a"))
    table.put("b", Nested("b"))
    harness.step()
    table.delete("a")
    table.delete("never-there")
    assert table.get("a") is None
    assert [k for k, _ in table.scan()] == ["b"]
    harness.step()
    assert [k for k, _ in table.scan()] == ["b"]
    table.put("a", Nested("again"))
    assert table.get("a") == Nested("again")


KEYS = ["b", "a", "ab", "a\x1fz", "aa", "Z", "é", "z", "\u00ff", "😀", "a/1", "a/10", "a/2", ""]


def test_scan_orders_by_utf8_bytes(harness: Harness) -> None:
    table = harness.open("t", Nested)
    for i, key in enumerate(KEYS):
        table.put(key, Nested(str(i)))
        if i % 3 == 0:
            harness.step()
    expected = sorted(KEYS, key=lambda k: k.encode("utf-8"))
    assert [k for k, _ in table.scan()] == expected
    assert [k for k, _ in table.scan(reverse=True)] == expected[::-1]


def test_scan_prefix(harness: Harness) -> None:
    table = harness.open("t", Nested)
    for i, key in enumerate(KEYS):
        table.put(key, Nested(str(i)))
        if i % 2:
            harness.step()
    for prefix in ["a", "a/", "a/1", "z", "é", "x", "😀", "\u00ff"]:
        expected = sorted(
            (k for k in KEYS if k.startswith(prefix)), key=lambda k: k.encode("utf-8")
        )
        assert [k for k, _ in table.scan(prefix)] == expected, prefix
        assert [k for k, _ in table.scan(prefix, reverse=True)] == expected[::-1], prefix


def test_tables_are_isolated(harness: Harness) -> None:
    a = harness.open("a", Nested)
    ab = harness.open("ab", Nested)
    a.put("b1", Nested("in a"))
    ab.put("1", Nested("in ab"))
    harness.step()
    assert [k for k, _ in a.scan()] == ["b1"]
    assert [k for k, _ in ab.scan()] == ["1"]
    assert list(a.scan(reverse=True)) == [("b1", Nested("in a"))]
    assert a.get("1") is None


def test_typed_round_trip_of_nested_frozen_dataclasses(harness: Harness) -> None:
    table = harness.open("t", Nested)
    value = Nested(
        "n",
        stamps=(Stamp("x", 1, "e1"), Stamp(None, 2, "e2"), Stamp(1.5, 3, "e3")),
        by_key={"k": Stamp(True, 4, "e4"), "ü": Stamp(7, 5, "e5")},
        maybe=Stamp(False, 6, "e6"),
        extra={"list": [1, "two", None], "map": {"a": 1.25}},
    )
    table.put("k", value)
    harness.step()
    got = table.get("k")
    assert got == value
    assert got is not None
    assert isinstance(got.stamps, tuple) and isinstance(got.stamps[0], Stamp)
    assert isinstance(got.by_key["k"], Stamp) and got.by_key["k"].value is True
    assert [v for _, v in table.scan()] == [value]


def test_writing_while_scanning_is_safe(harness: Harness) -> None:
    table = harness.open("t", Nested)
    for key in "abcdef":
        table.put(key, Nested(key))
    harness.step()
    seen = []
    for key, _ in table.scan():
        seen.append(key)
        table.delete(key)
        table.put(key + "+", Nested("new"))
    assert seen[0] == "a"
    assert {k for k, _ in table.scan()} >= {"a+", "b+", "c+", "d+", "e+", "f+"}
    assert all(table.get(k) is None for k in "abcdef")


def test_other_value_types(harness: Harness) -> None:
    ints = harness.open("ints", int)
    ints.put("one", 1)
    harness.step()
    assert ints.get("one") == 1


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "step"]),
            st.sampled_from(["", "a", "ab", "abc", "b", "ba", "é", "éa", "z"]),
            st.integers(0, 5),
        ),
        max_size=40,
    )
)
def test_matches_a_sorted_dict_model(
    ops: list[tuple[str, str, int]], tmp_path_factory: Any
) -> None:
    stores: list[tuple[Any, Any, Callable[[], None]]] = []
    dict_store = DictStore(roundtrip=True)
    stores.append((dict_store, dict_store.open("m", Nested), dict_store.flush))
    rocks = RocksStore(tmp_path_factory.mktemp("model"))
    stores.append((rocks, rocks.open("m", Nested), rocks.flush))
    # A write buffer over RocksDB, as the stages use it: a step commits it.
    buffered = OverlayTable(RocksStore(tmp_path_factory.mktemp("base")).open("m", Nested))
    stores.append((None, buffered, buffered.commit))
    model: dict[str, Nested] = {}
    try:
        for op, key, n in ops:
            if op == "put":
                model[key] = Nested(str(n))
            elif op == "delete":
                model.pop(key, None)
            for _, table, step in stores:
                if op == "put":
                    table.put(key, Nested(str(n)))
                elif op == "delete":
                    table.delete(key)
                else:
                    step()
            for prefix in ["", "a", "é", "b"]:
                want = sorted(
                    ((k, v) for k, v in model.items() if k.startswith(prefix)),
                    key=lambda kv: kv[0].encode("utf-8"),
                )
                for _, table, _ in stores:
                    assert list(table.scan(prefix)) == want
                    assert list(table.scan(prefix, reverse=True)) == want[::-1]
                    for start in ["a", "ab", "b", "é", "éa", "zz"]:
                        # Forward from `start` on; a reverse scan ignores it.
                        from_start = [kv for kv in want if kv[0] >= start]
                        assert list(table.scan(prefix, start=start)) == from_start
                        got = list(table.scan(prefix, reverse=True, start=start))
                        assert got == want[::-1]
    finally:
        rocks.close()


def test_rocks_state_survives_reopen(tmp_path: Path) -> None:
    with RocksStore(tmp_path) as store:
        store.open("t", Nested).put("k", Nested("kept"))
    with RocksStore(tmp_path) as store:
        assert store.open("t", Nested).get("k") == Nested("kept")


def test_rocks_refuses_another_state_format(tmp_path: Path) -> None:
    with RocksStore(tmp_path) as store:
        store.db.put(FORMAT_VERSION_KEY, msgspec.msgpack.encode(999))
    with pytest.raises(StateFormatError, match="rebuild"):
        RocksStore(tmp_path)


def test_rocks_state_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with RocksStore(tmp_path), pytest.raises(ConfigurationError, match="another process"):
        RocksStore(tmp_path)
