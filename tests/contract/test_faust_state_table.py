"""The worker's table adapter (drivers/faust/tables.py) keeps the StateTable contract.

A FaustStateTable holds a batch's writes in memory and reads each input partition's RocksDB
directly; here the RocksDB is a real rocksdict and "the end of a batch" writes the held
changes into it, as `FaustTableFactory.write` does after their changelog is delivered. Scans
must merge the two in key order, whether or not the batch was written, for every prefix and
start, and the partitions must never see each other's keys.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.streams import _current_event
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Rdict

from idstream.drivers.faust.tables import FaustStateTable, FaustTableFactory


class _Data:
    def __init__(self, root: Path) -> None:
        self.dbs = {p: Rdict(str(root / f"p{p}")) for p in (0, 1)}

    def _db_for_partition(self, partition: int) -> Rdict:
        return self.dbs[partition]


class _Event:
    """What the adapter reads of Faust's current event: its message's partition."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def _in_partition(partition: int) -> _Event:
    """Make `partition` the one of Faust's current event (what table writes land in)."""
    event = _Event(partition)
    _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    return event  # keep it alive while used


def _end_batch(factory: FaustTableFactory, data: _Data) -> None:
    for table in factory._tables:
        for partition, full, value in table.drain():
            db = data.dbs[partition]
            if value is None:
                db.delete(full)
            else:
                db.put(full, value)


KEYS = ["", "a", "ab", "abc", "b", "ba", "é", "éa", "z"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "delete", "batch"]),
            st.sampled_from(KEYS),
            st.integers(0, 1),
            st.integers(0, 5),
        ),
        max_size=40,
    )
)
def test_scans_merge_held_writes_with_rocksdb_like_a_sorted_dict(
    ops: list[tuple[str, str, int, int]], tmp_path_factory: Any
) -> None:
    data = _Data(tmp_path_factory.mktemp("faust"))
    factory = FaustTableFactory(SimpleNamespace(data=data))
    table: FaustStateTable[int] = factory("t", int)  # type: ignore[assignment]
    other = factory("t2", int)  # a neighbour whose keys must never show
    models: dict[int, dict[str, int]] = {0: {}, 1: {}}
    try:
        for op, key, partition, n in ops:
            event = _in_partition(partition)
            if op == "put":
                table.put(key, n)
                other.put(key, -1)
                models[partition][key] = n
            elif op == "delete":
                table.delete(key)
                models[partition].pop(key, None)
            else:
                _end_batch(factory, data)
            for part in (0, 1):
                event = _in_partition(part)
                for prefix in ["", "a", "é", "b"]:
                    want = sorted((k, v) for k, v in models[part].items() if k.startswith(prefix))
                    assert list(table.scan(prefix)) == want
                    assert list(table.scan(prefix, reverse=True)) == want[::-1]
                    for start in ["a", "ab", "b", "éa", "zz"]:
                        assert list(table.scan(prefix, start=start)) == [
                            kv for kv in want if kv[0] >= start
                        ]
                for key in KEYS:
                    assert table.get(key) == models[part].get(key)
            del event
    finally:
        for db in data.dbs.values():
            db.close()


def test_a_scan_reads_rocksdb_only_as_far_as_it_is_consumed(tmp_path: Path) -> None:
    data = _Data(tmp_path)
    factory = FaustTableFactory(SimpleNamespace(data=data))
    table = factory("t", int)
    event = _in_partition(0)
    for n in range(1000):
        table.put(f"{n:04d}", n)
    _end_batch(factory, data)
    reads = 0
    real = data.dbs[0]

    class Counting:
        def items(self, **kwargs: Any) -> Any:
            nonlocal reads
            for item in real.items(**kwargs):
                reads += 1
                yield item

    data.dbs[0] = Counting()  # type: ignore[assignment]
    first = next(iter(table.scan()))
    assert first == ("0000", 0)
    assert reads <= 2
    del event
    real.close()
