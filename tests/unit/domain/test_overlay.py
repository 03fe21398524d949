"""The write overlay the pool stage re-folds a late claim in: reads and scans see its writes
over the base table, in the stores' key order; commit writes them through, dropping it leaves
the base as it was."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from idstream.domain.overlay import OverlayTable
from idstream.storage.memory import DictTable

# Short keys over characters whose code-point order matters: SEP, ASCII, Latin-1, BMP, astral.
keys = st.text(alphabet="\x1fab\xe9\uffff\U0001d11e", max_size=3)
ops = st.lists(st.tuples(keys, st.one_of(st.none(), st.integers(0, 9))), max_size=30)


def table(entries: dict[str, int]) -> DictTable[int]:
    found: DictTable[int] = DictTable(int)
    for key, value in entries.items():
        found.put(key, value)
    return found


@settings(max_examples=300, derandomize=True, deadline=None)
@given(base=st.dictionaries(keys, st.integers(0, 9)), writes=ops, prefixes=st.lists(keys))
def test_an_overlay_reads_and_scans_as_the_table_with_its_writes(
    base: dict[str, int], writes: list[tuple[str, int | None]], prefixes: list[str]
) -> None:
    below = table(base)
    over = OverlayTable(below)
    expected = table(base)
    for key, value in writes:
        for target in (over, expected):
            if value is None:
                target.delete(key)
            else:
                target.put(key, value)
    assert list(below.scan()) == sorted(base.items())  # the base is not written yet
    for prefix in ["", *prefixes]:
        for reverse in (False, True):
            assert list(over.scan(prefix, reverse=reverse)) == list(
                expected.scan(prefix, reverse=reverse)
            )
    for key, _ in writes:
        assert over.get(key) == expected.get(key)
    over.commit()
    assert list(below.scan()) == list(expected.scan())
    assert list(over.scan()) == list(expected.scan())


def test_keys_written_during_a_scan_are_not_part_of_it() -> None:
    over = OverlayTable(table({"a1": 1, "a3": 3}))
    over.put("a2", 2)
    seen = []
    for key, value in over.scan("a"):
        seen.append((key, value))
        over.put(key + "x", value)
    assert seen == [("a1", 1), ("a2", 2), ("a3", 3)]
