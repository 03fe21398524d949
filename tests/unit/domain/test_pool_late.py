"""A late claim re-applies only the later claims that depend on it (docs/architecture.md, "The
pool stage"): its own user's, found through footprints; a guess that missed one is checked and
made again; old state without footprints, or too many misses, re-apply every later claim."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.domain.pool_harness import ClaimMaker, PoolHarness, identity
from tests.unit.domain.test_pool_fold import history, in_order, make_claims

from idstream.domain import pool_refold
from idstream.domain.events import IdentityKind
from idstream.domain.messages import Claim
from idstream.domain.pool import (
    NOTE_FULL_REFOLD,
    NOTE_LATE_CLAIM,
    NOTE_REAPPLIED,
    NOTE_REFOLD_RETRY,
)
from idstream.domain.pool_state import LogTail

EMAIL = IdentityKind.EMAIL


def deliver(claims: list[Claim], h: PoolHarness | None = None) -> PoolHarness:
    h = h or PoolHarness()
    for claim in claims:
        h.apply(claim)
    return h


def reapplied(h: PoolHarness) -> int:
    return h.last_notes.count(NOTE_REAPPLIED)


def test_an_in_order_claim_re_applies_nothing() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.personalize("A", 2_000, "u1")
    assert h.last_notes == ()


def test_a_late_claim_re_applies_only_its_own_users_later_claims() -> None:
    maker = ClaimMaker()
    phone, tablet, other = (maker.install(p, 1_000) for p in ("phone", "tablet", "other"))
    # The other user is busy after the late claim's time: none of that is re-applied.
    theirs = [maker.personalize("other", 2_000, "u2", ["b@x.com"])]
    theirs += [maker.update("other", 2_000 + n * 100, attributes={"n": n}) for n in range(20)]
    mine = [
        maker.personalize("tablet", 2_500, None, ["a@x.com"]),
        maker.update("tablet", 3_500, attributes={"city": "Split"}),
    ]
    late = maker.personalize("phone", 1_500, "u1", ["a@x.com"])
    claims = [phone, tablet, other, *theirs, *mine, late]
    h = deliver(claims)
    assert NOTE_LATE_CLAIM in h.last_notes
    assert reapplied(h) == len(mine)
    assert NOTE_REFOLD_RETRY not in h.last_notes and NOTE_FULL_REFOLD not in h.last_notes
    assert h.profile_of("tablet") == h.profile_of("phone") == h.person_id(late)
    assert h.logical_state() == in_order(claims).logical_state()


def test_a_later_claim_that_only_read_what_the_late_one_changes_is_re_applied() -> None:
    maker = ClaimMaker()
    claims = [maker.install(p, 0) for p in ("q", "p")]
    claims += [
        maker.personalize("q", 1_000, None, ["e@x.com"]),
        maker.personalize("p", 1_000, None, ["f@x.com"]),
        # Rejected when it arrives: e belongs to q's person; it read e's owner, wrote nothing.
        maker.update("p", 3_000, added=identity(None, ["e@x.com"])),
    ]
    h = deliver(claims)
    assert h.owner(EMAIL, "e@x.com") == h.person_id(claims[2])
    late = h.apply(maker.update("q", 2_000, removed=identity(None, ["e@x.com"])))
    assert reapplied(h) == 1
    assert h.owner(EMAIL, "e@x.com") == h.person_id(claims[3])
    assert h.logical_state() == in_order([*claims, late]).logical_state()


def sorts_after(claims: list[Claim], late: Claim) -> int:
    def key(c: Claim) -> tuple[Any, ...]:
        return (c.order, c.push_registration_id, c.seq)

    return sum(1 for c in claims if key(c) > key(late))


def unguessed_person() -> tuple[ClaimMaker, list[Claim], Claim]:
    """A late login whose email belonged then to a person merged away since: the guess (the
    email's owner now) misses that person, whom an update of another install touched in
    between."""
    maker = ClaimMaker()
    claims = [maker.install(p, 0) for p in ("w", "x", "y", "b", "late")]
    claims += [
        maker.personalize("w", 500, None, ["e0@x.com"]),  # P0
        maker.personalize("x", 1_000, None, ["e1@x.com"]),  # P1
        maker.update("x", 2_000, attributes={"city": "Split"}),  # touches P1 only
        maker.personalize("b", 2_500, "unrelated"),
        maker.personalize("y", 3_000, None, ["e0@x.com", "e1@x.com"]),  # P1 merges into P0
    ]
    late = maker.personalize("late", 1_500, None, ["e1@x.com"])  # joins P1, then P0
    return maker, claims, late


def test_a_late_claim_that_reaches_an_unguessed_person_is_checked_and_folded_again() -> None:
    _, claims, late = unguessed_person()
    h = deliver([*claims, late])
    assert h.last_notes.count(NOTE_REFOLD_RETRY) == 1
    assert NOTE_FULL_REFOLD not in h.last_notes
    assert reapplied(h) == 2  # the update and the merge, not the unrelated login
    assert h.logical_state() == in_order([*claims, late]).logical_state()


def test_when_guesses_run_out_every_later_claim_is_re_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pool_refold, "_ATTEMPTS", 1)
    maker, claims, late = unguessed_person()
    h = deliver([*claims, late])
    assert h.last_notes.count(NOTE_REFOLD_RETRY) == 1
    assert NOTE_FULL_REFOLD in h.last_notes
    assert reapplied(h) == sorts_after(claims, late) == 3
    assert h.logical_state() == in_order([*claims, late]).logical_state()
    # The footprints the full re-fold left are exact: a later late claim may rely on them.
    monkeypatch.setattr(pool_refold, "_ATTEMPTS", 3)
    again = h.apply(maker.update("x", 1_800, attributes={"city": "Zadar"}))
    assert NOTE_LATE_CLAIM in h.last_notes and NOTE_FULL_REFOLD not in h.last_notes
    assert h.logical_state() == in_order([*claims, late, again]).logical_state()


def test_state_written_before_footprints_re_applies_everything_once() -> None:
    maker = ClaimMaker()
    claims = [maker.install(p, 0) for p in ("a", "b", "c")]
    claims += [maker.personalize(p, 1_000 * n, None, [f"{p}@x.com"]) for n, p in enumerate("ab")]
    claims += [maker.update("b", 3_000 + n, attributes={"n": n}) for n in range(5)]
    h = deliver(claims)
    # What an older version left: no footprints, a tail that does not say since when.
    for table in (h.tables.footprints, h.tables.touches):
        for key, _ in list(table.scan()):
            table.delete(key)
    [(pool_key, tail)] = list(h.tables.log_tail.scan())
    h.tables.log_tail.put(pool_key, LogTail(tail.log_key))
    late = maker.personalize("c", 500, None, ["c@x.com"])
    h.apply(late)
    assert NOTE_FULL_REFOLD in h.last_notes
    assert reapplied(h) == sorts_after(claims, late) == 6
    # Every claim after it has a footprint now: the next late claim after it needs no more.
    later = maker.update("c", 600, attributes={"city": "Split"})
    h.apply(later)
    assert NOTE_LATE_CLAIM in h.last_notes and NOTE_FULL_REFOLD not in h.last_notes
    assert reapplied(h) == 0
    assert h.logical_state() == in_order([*claims, late, later]).logical_state()


@settings(max_examples=300, derandomize=True, deadline=None)
@given(histories=history, data=st.data())
def test_outputs_are_those_of_re_applying_every_later_claim(
    histories: list[list[tuple[tuple[Any, ...], int]]], data: st.DataObject
) -> None:
    """Outputs are the difference of the state before and after a call, so re-applying fewer
    claims sends exactly what re-applying all of them sent."""
    queues = [list(claims) for claims in make_claims(histories)]
    arrival: list[Claim] = []
    while any(queues):
        ready = [q for q in queues if q]
        arrival.append(ready[data.draw(st.integers(0, len(ready) - 1))].pop(0))
    dependent = deliver(arrival, PoolHarness(roundtrip=False))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_refold, "_ATTEMPTS", 0)
        everything = deliver(arrival, PoolHarness(roundtrip=False))
    assert dependent.outputs == everything.outputs
    assert dependent.decisions == everything.decisions
    assert dependent.logical_state() == everything.logical_state()
