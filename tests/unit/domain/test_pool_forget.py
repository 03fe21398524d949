"""Pool stage, forget: erase a person, keep only hashes, never resurrect it (SPEC §4.10)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.unit.domain.pool_harness import ClaimMaker, PoolHarness, identity

from idstream.domain.events import IdentityKind
from idstream.domain.ids import forgotten_profile_id
from idstream.domain.messages import Claim, OutputTopic

EMAIL = IdentityKind.EMAIL


@dataclass
class Forgotten:
    h: PoolHarness
    person: str
    forget: Claim  # A forgets its own person
    logins: dict[str, Claim]  # install -> its personalize


def forgotten() -> Forgotten:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("B", 1_000)
    first = h.personalize("A", 2_000, "u1", ["a@x.com"], ["+385912345678"])
    second = h.personalize("B", 2_500, None, ["a@x.com"])
    h.update("A", 3_000, attributes={"firstName": "Ana"}, tags_added=["vip"])
    forget = h.forget("A", 4_000)
    return Forgotten(h, h.person_id(first), forget, {"A": first, "B": second})


def forgotten_person() -> tuple[PoolHarness, str]:
    f = forgotten()
    return f.h, f.person


def test_forget_erases_the_person_everywhere() -> None:
    h, person = forgotten_person()
    assert h.change_types(person, last=True) == ["forgotten"]
    assert h.snapshot(person) is None
    assert h.persons() == []
    assert h.owner(EMAIL, "a@x.com") is None
    # No table holds the person's id as a live profile or any raw identity value.
    state = h.logical_state()
    for name in ("pool_profiles", "pool_identities", "pool_aliases", "pool_forgotten"):
        assert "a@x.com" not in repr(state[name])
        assert "Ana" not in repr(state[name])
    assert all(person not in key for key, _ in state["pool_profiles"])


def fresh(prid: str, forget: Claim) -> str:
    """The fresh anonymous profile a forget gives an install of the erased person."""
    if prid == forget.push_registration_id:
        return forget.anonymous_profile
    return forgotten_profile_id(prid, forget.push_registration_id, forget.seq)


def test_forget_moves_every_install_of_the_person_to_a_fresh_anonymous_profile() -> None:
    f = forgotten()
    h, forget = f.h, f.forget
    decided = {
        d.push_registration_id: (d.segment, d.profile_id, d.forgotten, d.answers)
        for d in h.last_decisions
    }
    fresh_a, fresh_b = fresh("A", forget), fresh("B", forget)
    assert decided == {
        # The answer to A's forget of its own person: a fresh segment, opened by the forget.
        "A": (forget.event_id, fresh_a, True, forget.seq),
        # B's current segment moves to B's own fresh profile.
        "B": (f.logins["B"].event_id, fresh_b, True, 0),
    }
    assert h.profile_of("A") == fresh_a == forget.anonymous_profile
    assert h.profile_of("B") == fresh_b
    for pid, prid in ((fresh_a, "A"), (fresh_b, "B")):
        assert h.change_types(pid, last=True) == ["created", "install_linked"]
        snapshot = h.snapshot(pid)
        assert snapshot is not None and snapshot["kind"] == "anonymous"
        assert [i["pushRegistrationId"] for i in snapshot["installs"]] == [prid]
        assert snapshot["attributes"] == {} and snapshot["tags"] == []


def test_forget_by_identity() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("A2", 1_000)
    h.install("ops", 1_000)
    person = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    h.personalize("A2", 2_100, None, ["a@x.com"])
    ops = h.profile_of("ops")
    forget = h.forget("ops", 3_000, identity(None, ["A@x.com"]))
    assert h.change_types(person, last=True) == ["forgotten"]
    # Both devices move to fresh anonymous profiles named by the forget; `ops` is untouched.
    assert h.profile_of("A") == fresh("A", forget)
    assert h.profile_of("A2") == fresh("A2", forget)
    assert fresh("A", forget) != fresh("A2", forget)
    assert h.profile_of("ops") == ops


def test_forget_of_nobody_goes_to_the_dead_letter() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.forget("A", 2_000, identity(None, ["nobody@x.com"]))
    assert h.dead_letters() == ["unknown_person"]


def test_a_later_login_creates_a_new_person() -> None:
    h, person = forgotten_person()
    again = h.personalize("B", 6_000, None, ["a@x.com"])
    assert h.profile_of("B") == h.person_id(again) != person


def test_a_claim_stamped_before_the_forget_but_logged_after_it_does_not_resurrect() -> None:
    # An offline queue: C's personalize, stamped before the forget, reaches the log after it.
    f = forgotten()
    h = f.h
    first = h.install("C", 1_000)
    login = h.personalize("C", 3_500, None, ["a@x.com"])
    assert h.persons() == []
    assert h.owner(EMAIL, "a@x.com") is None
    assert h.profile_of("C") == first.anonymous_profile
    [answer] = h.last_decisions
    assert (answer.answers, answer.skipped, answer.rejected) == (login.seq, True, None)
    assert h.last_outputs == ()
    # Stamped after the forget, the same login makes a new person.
    again = h.personalize("C", 4_500, None, ["a@x.com"])
    assert h.persons() == [h.person_id(again)]


def test_a_rebuild_with_the_forget_register_skips_earlier_claims() -> None:
    maker = ClaimMaker()
    claims = [
        maker.install("A", 1_000),
        maker.personalize("A", 2_000, None, ["a@x.com"]),
        maker.forget("A", 4_000),
    ]
    first = PoolHarness()
    for claim in claims:
        first.apply(claim)
    register = list(first.tables.forgotten.scan())
    assert register
    # A rebuild restores the compacted forget register first, then replays the claims.
    rebuild = PoolHarness()
    for key, entry in register:
        rebuild.tables.forgotten.put(key, entry)
    for claim in claims:
        rebuild.apply(claim)
        assert not [o for o in rebuild.last_outputs if o.topic is OutputTopic.DEAD_LETTER]
    assert rebuild.persons() == []
    assert not any(o.value and o.value.get("kind") == "person" for o in rebuild.outputs)
    assert rebuild.logical_state()["pool_identities"] == []


def test_later_claims_of_another_install_go_to_its_fresh_profile() -> None:
    f = forgotten()
    h = f.h
    h.update("B", 4_500, attributes={"city": "Split"})  # B's segment, after the forget
    pid = fresh("B", f.forget)
    assert h.profile_of("B") == pid
    assert h.change_types(pid, last=True) == ["attributes_changed"]
    snapshot = h.snapshot(pid)
    assert snapshot is not None and snapshot["attributes"] == {"city": "Split"}


def test_forget_with_only_unusable_identities_goes_to_the_dead_letter() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.forget("A", 2_000, identity("null", ["not-an-email"]))
    assert h.dead_letters() == ["invalid_identity"]
    h.forget("A", 3_000, identity("null"))
    assert h.dead_letters() == ["blocked_identity"]
