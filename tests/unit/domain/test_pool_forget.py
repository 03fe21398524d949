"""Pool stage, forget: erase a person, keep only hashes, never resurrect it (SPEC §4.10)."""

from __future__ import annotations

from tests.unit.domain.pool_harness import ClaimMaker, PoolHarness, identity

from idstream.domain.events import IdentityKind
from idstream.domain.messages import OutputTopic
from idstream.domain.pool import apply_claim

EMAIL = IdentityKind.EMAIL


def forgotten_person() -> tuple[PoolHarness, str]:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("B", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1", ["a@x.com"], ["+385912345678"]))
    h.personalize("B", 2_500, None, ["a@x.com"])
    h.update("A", 3_000, attributes={"firstName": "Ana"}, tags_added=["vip"])
    h.forget("A", 4_000)
    return h, person


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


def test_forget_tells_every_install_of_the_person() -> None:
    h, person = forgotten_person()
    forgotten = {(d.push_registration_id, d.profile_id) for d in h.last_decisions if d.forgotten}
    assert forgotten == {("A", person), ("B", person)}


def test_the_forgetting_install_starts_a_fresh_anonymous_profile() -> None:
    h, _ = forgotten_person()
    claim = h.installs["A"]
    assert h.profile_of("A") == claim.anonymous
    assert h.change_types(claim.anonymous, last=True) == ["created", "install_linked"]
    # B was told its person is forgotten; its next claim opens a fresh segment.
    assert h.profile_of("B") == ""
    fresh = h.fresh_segment("B", 5_000)
    assert h.profile_of("B") == fresh.anonymous_profile
    assert h.change_types(fresh.anonymous_profile, last=True) == ["created", "install_linked"]


def test_forget_by_identity() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("ops", 1_000)
    person = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    h.forget("ops", 3_000, identity(None, ["A@x.com"]))
    assert h.change_types(person, last=True) == ["forgotten"]
    assert h.profile_of("A") == ""


def test_forget_of_nobody_goes_to_the_dead_letter() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.forget("A", 2_000, identity(None, ["nobody@x.com"]))
    assert h.dead_letters() == ["unknown_person"]


def test_a_later_login_creates_a_new_person() -> None:
    h, person = forgotten_person()
    again = h.personalize("B", 6_000, None, ["a@x.com"])
    assert h.profile_of("B") == h.person_id(again) != person


def test_a_late_claim_stamped_before_the_forget_does_not_resurrect() -> None:
    h, _ = forgotten_person()
    h.install("C", 1_000)
    # Stamped before the forget, arriving after it.
    h.personalize("C", 3_500, None, ["a@x.com"])
    assert h.persons() == []
    assert h.owner(EMAIL, "a@x.com") is None
    assert h.profile_of("C") == ""  # it was linked to the person, then forgotten with it


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
        result = apply_claim(rebuild.tables, claim, rebuild.rules)
        rebuild.outputs.extend(result.outputs)
        assert not [o for o in result.outputs if o.topic is OutputTopic.DEAD_LETTER]
    assert rebuild.persons() == []
    assert not any(o.value and o.value.get("kind") == "person" for o in rebuild.outputs)
    assert rebuild.logical_state()["pool_identities"] == []


def test_a_forgotten_install_stays_unlinked_until_it_opens_a_fresh_segment() -> None:
    h, _ = forgotten_person()
    h.update("B", 4_500, attributes={"city": "Split"})  # still in the forgotten segment
    assert h.profile_of("B") == ""
    assert h.last_outputs == ()


def test_forget_with_only_unusable_identities_goes_to_the_dead_letter() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.forget("A", 2_000, identity("null", ["not-an-email"]))
    assert h.dead_letters() == ["invalid_identity"]
    h.forget("A", 3_000, identity("null"))
    assert h.dead_letters() == ["blocked_identity"]
