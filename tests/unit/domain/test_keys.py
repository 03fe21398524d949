"""State keys are injective and prefix-safe for any text (issue: key-separator injection).

Every part of a key is user input somewhere: a pushRegistrationId `V` and one `V\\x1fP`, an
install `a\\x1fb` with eventId `c` next to install `a` with eventId `b\\x1fc`, must never share
a key, and a scan for one install's keys must never return another's.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from idstream.domain.keys import from_number, key, number, parts
from idstream.storage.memory import DictTable

# Any text, with the characters an attacker would reach for made likely.
text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x1f", "\x1e", "\x00", ":", "0", "1", "9", "\u200b", "\u202e"]),
    ),
    max_size=12,
)
part_lists = st.lists(text, min_size=1, max_size=4)


@settings(max_examples=2_000, derandomize=True)
@given(a=part_lists, b=part_lists)
def test_different_part_lists_never_share_a_key(a: list[str], b: list[str]) -> None:
    assert (key(*a) == key(*b)) == (a == b)
    assert parts(key(*a)) == a


@settings(max_examples=1_000, derandomize=True)
@given(owner=part_lists, others=st.lists(part_lists, max_size=8), tail=part_lists)
def test_a_prefix_scan_returns_exactly_the_owners_keys(
    owner: list[str], others: list[list[str]], tail: list[str]
) -> None:
    table: DictTable[int] = DictTable(int)
    mine = {key(*owner, *tail), key(*owner)}
    for n, other in enumerate([owner, *others]):
        table.put(key(*other, *tail), n)
        table.put(key(*other), n)
    found = {k for k, _ in table.scan(key(*owner))}
    expected = {k for k, _ in table.scan() if parts(k)[: len(owner)] == owner}
    assert mine <= found == expected


def test_the_reported_collisions_are_gone() -> None:
    assert key("V", "P") != key("V\x1fP")
    assert key("a\x1fb", "c") != key("a", "b\x1fc")
    table: DictTable[int] = DictTable(int)
    table.put(key("V\x1fP", number(0)), 1)
    table.put(key("V", number(0)), 2)
    assert [v for _, v in table.scan(key("V"))] == [2]


@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_numbers_sort_as_numbers(a: int, b: int) -> None:
    assert (number(a) < number(b)) == (a < b)
    assert from_number(number(a)) == a
