"""Pool stage, personalize and depersonalize: SPEC §4.4-4.7, one scenario per rule."""

from __future__ import annotations

from tests.unit.domain.pool_harness import POOL, PoolHarness

from idstream.domain.config import (
    ConflictMode,
    Continuity,
    PersonLimits,
    PoolRules,
    RuleConfig,
)
from idstream.domain.events import IdentityKind, PoolId
from idstream.domain.ids import anonymous_profile_id, person_profile_id
from idstream.domain.keys import parts
from idstream.domain.messages import OutputTopic
from idstream.domain.pool_profiles import MAX_ANONYMOUS_MERGED
from idstream.domain.reasons import RejectReason

EMAIL, PHONE, EXT = IdentityKind.EMAIL, IdentityKind.PHONE, IdentityKind.EXTERNAL_USER_ID


def strict() -> RuleConfig:
    return RuleConfig(default_rules=PoolRules(conflict_mode=ConflictMode.STRICT))


def test_first_claim_creates_the_anonymous_profile() -> None:
    h = PoolHarness()
    claim = h.install("A", 1_000)
    anonymous = anonymous_profile_id(claim.push_registration_id, 1)
    assert claim.anonymous_profile == anonymous
    assert h.change_types(anonymous) == ["created", "install_linked"]
    snapshot = h.snapshot(anonymous)
    assert snapshot is not None and snapshot["kind"] == "anonymous"
    assert [i["pushRegistrationId"] for i in snapshot["installs"]] == ["A"]
    # The install stage named that profile itself: no decision to send.
    assert h.last_decisions == ()


def test_new_person_absorbs_the_anonymous_history() -> None:
    h = PoolHarness()
    first = h.install("A", 1_000)
    login = h.personalize("A", 2_000, " u1 ", ["John@Example.com"], ["+385 91 234 5678"])
    person = person_profile_id(POOL, "A", login.seq)
    anonymous = first.anonymous_profile
    assert h.profile_of("A") == person
    assert h.change_types(anonymous, last=True) == ["merged"]
    assert h.snapshot(anonymous) is None  # tombstone
    assert h.change_types(person, last=True) == [
        "created",
        "merged",
        "identity_added",
        "identity_added",
        "identity_added",
        "install_linked",
    ]
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["identities"] == {
        "externalUserId": "u1",
        "emails": ["john@example.com"],
        "phones": ["+385912345678"],
    }
    assert snapshot["mergedFrom"] == [anonymous]
    assert snapshot["version"] == 6
    assert snapshot["installs"][0]["lifecycle"] == "personalized"
    # The answer: the install's segment is the one the personalize opened, the person's.
    assert [(d.segment, d.profile_id, d.answers) for d in h.last_decisions] == [
        (login.event_id, person, login.seq)
    ]


def test_change_events_carry_version_and_causing_event() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    login = h.personalize("A", 2_000, "u1")
    person = h.person_id(login)
    changes = h.changes(person)
    assert [c["version"] for c in changes] == list(range(1, len(changes) + 1))
    assert all(c["eventId"] == login.event_id and c["eventTime"] == 2_000 for c in changes)


def test_links_to_the_one_person_owning_an_identity() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1", ["j@x.com"]))
    h.install("B", 1_500)
    h.personalize("B", 3_000, None, ["J@X.com"], ["+385912345678"])
    assert h.profile_of("B") == person
    assert h.change_types(person, last=True) == [
        "merged",  # B's anonymous profile
        "identity_added",
        "install_linked",
    ]
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["identities"]["phones"] == ["+385912345678"]
    assert [i["pushRegistrationId"] for i in snapshot["installs"]] == ["A", "B"]
    assert [p["pushRegistrationId"] for p in snapshot["channels"]["push"]] == ["A", "B"]


def test_several_owners_merge_into_the_oldest() -> None:
    h = PoolHarness()
    first = {prid: h.install(prid, 1_000) for prid in "ABC"}
    older = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    newer = h.person_id(h.personalize("B", 3_000, None, [], ["+385912345678"]))
    h.personalize("C", 4_000, None, ["a@x.com"], ["+385912345678"])
    assert h.persons() == [older]
    assert {h.profile_of(p) for p in "ABC"} == {older}
    assert h.change_types(newer, last=True) == ["merged"]
    assert h.changes(newer, last=True)[0]["survivor"] == older
    assert h.snapshot(newer) is None
    merged = [c for c in h.changes(older, last=True) if c["kind"] == "merged"]
    assert {c["loser"] for c in merged} == {newer, first["C"].anonymous_profile}
    assert h.owner(PHONE, "+385912345678") == older
    # B follows its person to the survivor: a decision no claim of B's asked for.
    moved = [d for d in h.last_decisions if d.push_registration_id == "B"]
    assert [(d.profile_id, d.answers) for d in moved] == [(older, 0)]
    snapshot = h.snapshot(older)
    assert snapshot is not None and newer in snapshot["mergedFrom"]


def test_two_external_user_ids_never_merge_priority_mode() -> None:
    h = PoolHarness()
    for prid in "ABC":
        h.install(prid, 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, "u1", ["a@x.com"]))
    p2 = h.person_id(h.personalize("B", 3_000, "u2", ["b@x.com"]))
    h.personalize("C", 4_000, None, ["b@x.com", "a@x.com"])
    # Highest-priority identity: the first email, owned by p2.
    assert h.profile_of("C") == p2
    assert sorted(h.persons()) == sorted([p1, p2])
    rejected = [c for c in h.changes(p2, last=True) if c["kind"] == "identity_rejected"]
    assert rejected == [
        {
            **rejected[0],
            "reason": "identity_conflict",
            "identityKind": "email",
            "maskedValue": "a***@x***.com",
        }
    ]
    assert h.owner(EMAIL, "a@x.com") == p1


def test_a_new_external_user_id_is_a_new_person_even_if_its_email_is_taken() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("B", 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, "u1", ["a@x.com"]))
    login = h.personalize("B", 3_000, "u2", ["a@x.com", "b@x.com"])
    p2 = h.person_id(login)
    assert h.profile_of("B") == p2
    assert h.snapshot(p2) is not None
    assert h.owner(EMAIL, "b@x.com") == p2
    assert h.owner(EMAIL, "a@x.com") == p1
    assert "identity_rejected" in h.change_types(p2, last=True)


def test_strict_mode_rejects_the_whole_personalize() -> None:
    h = PoolHarness(strict())
    for prid in "ABC":
        h.install(prid, 1_000)
    h.personalize("A", 2_000, "u1", ["a@x.com"])
    h.personalize("B", 3_000, "u2", ["b@x.com"])
    anonymous = h.profile_of("C")
    login = h.personalize("C", 4_000, None, ["a@x.com", "b@x.com"])
    assert h.dead_letters() == ["identity_conflict"]
    assert h.profile_of("C") == anonymous
    [decision] = h.last_decisions
    # Rejected: the install keeps its segment and profile.
    assert (decision.answers, decision.profile_id, decision.rejected) == (
        login.seq,
        anonymous,
        RejectReason.IDENTITY_CONFLICT,
    )
    assert decision.segment != login.event_id
    assert not [o for o in h.last_outputs if o.topic is OutputTopic.PROFILE_CHANGES]


def test_strict_mode_per_pool() -> None:
    rules = RuleConfig(
        pools={"shop": PoolId("shop")},
        pool_rules={PoolId("shop"): PoolRules(conflict_mode=ConflictMode.STRICT)},
    )
    h = PoolHarness(rules)
    for prid in "ABC":
        h.install(prid, 1_000)
    h.personalize("A", 2_000, "u1", ["a@x.com"])
    h.personalize("B", 3_000, "u2", ["b@x.com"])
    h.personalize("C", 4_000, None, ["a@x.com", "b@x.com"])
    assert h.dead_letters() == []  # the default pool keeps priority mode


def test_already_personalized_is_rejected() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, "u1"))
    login = h.personalize("A", 3_000, "u2")
    assert h.dead_letters() == ["already_personalized"]
    assert h.profile_of("A") == p1
    assert h.persons() == [p1]
    [decision] = h.last_decisions
    assert decision.answers == login.seq
    assert decision.profile_id == p1
    assert decision.rejected is RejectReason.ALREADY_PERSONALIZED


def test_force_depersonalize_switches_person() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, "u1"))
    p2 = h.person_id(h.personalize("A", 3_000, "u2", force=True))
    assert h.dead_letters() == []
    assert h.profile_of("A") == p2
    assert h.change_types(p1, last=True) == ["install_unlinked"]
    assert "install_linked" in h.change_types(p2, last=True)
    assert "merged" not in h.change_types(p2, last=True)  # no anonymous period to absorb


def test_personalize_to_the_same_person_adds_missing_identities() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1", ["a@x.com"]))
    h.personalize("A", 3_000, "u1", ["b@x.com"], ["+385912345678"])
    assert h.dead_letters() == []
    assert h.profile_of("A") == person
    assert h.change_types(person, last=True) == ["identity_added", "identity_added"]
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["identities"]["emails"] == ["a@x.com", "b@x.com"]


def test_continuity_separate_keeps_the_anonymous_profile_apart() -> None:
    h = PoolHarness(RuleConfig(default_rules=PoolRules(continuity=Continuity.SEPARATE)))
    first = h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1"))
    anonymous = first.anonymous_profile
    assert h.change_types(anonymous, last=True) == ["install_unlinked"]
    snapshot = h.snapshot(anonymous)
    assert snapshot is not None and snapshot["installs"] == []
    assert "merged" not in h.change_types(person, last=True)
    # Pre-login history stays anonymous: no decision moved the first segment.
    assert all(d.segment != first.event_id or d.profile_id == anonymous for d in h.decisions)


def test_depersonalize_starts_a_new_anonymous_profile() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("B", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1"))
    h.personalize("B", 2_500, "u1")
    logout = h.depersonalize("A", 3_000)
    assert h.profile_of("A") == logout.anonymous_profile
    assert h.change_types(person, last=True) == ["install_unlinked"]
    assert h.change_types(logout.anonymous_profile, last=True) == ["created", "install_linked"]
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert [i["pushRegistrationId"] for i in snapshot["installs"]] == ["B"]
    [decision] = h.last_decisions
    assert (decision.segment, decision.profile_id) == (logout.event_id, logout.anonymous_profile)
    installs = h.snapshot(logout.anonymous_profile)
    assert installs is not None and installs["installs"][0]["lifecycle"] == "depersonalized"


def test_depersonalize_of_an_anonymous_install_is_rejected() -> None:
    h = PoolHarness()
    first = h.install("A", 1_000)
    h.depersonalize("A", 2_000)
    assert h.dead_letters() == ["not_personalized"]
    assert h.profile_of("A") == first.anonymous_profile


def test_shared_device_two_people_in_turn() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    alice = h.person_id(h.personalize("A", 2_000, "alice"))
    h.depersonalize("A", 3_000)
    bob = h.person_id(h.personalize("A", 4_000, "bob"))
    h.depersonalize("A", 5_000)
    h.personalize("A", 6_000, "alice")
    assert sorted(h.persons()) == sorted([alice, bob])
    assert h.profile_of("A") == alice
    bob_now = h.snapshot(bob)
    assert bob_now is not None and bob_now["installs"] == []
    # Each logged-out period became its own anonymous profile and was absorbed at next login.
    alice_now = h.snapshot(alice)
    assert alice_now is not None and len(alice_now["mergedFrom"]) == 2


def test_cross_device_same_email_on_two_installs() -> None:
    h = PoolHarness()
    h.install("phone", 1_000, primary=True)
    h.install("tablet", 1_000, push=False)
    person = h.person_id(h.personalize("phone", 2_000, None, ["j@x.com"]))
    h.personalize("tablet", 3_000, None, ["j@x.com"])
    assert h.profile_of("tablet") == person
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert [i["pushRegistrationId"] for i in snapshot["installs"]] == ["phone", "tablet"]
    assert snapshot["channels"]["push"] == [
        {"pushRegistrationId": "phone", "appCode": "app", "primary": True}
    ]


def test_pools_share_identities_across_apps_but_never_with_each_other() -> None:
    rules = RuleConfig(
        pools={"shop": PoolId("retail"), "shop-lite": PoolId("retail"), "vendor": PoolId("b2b")}
    )
    h = PoolHarness(rules)
    h.install("S1", 1_000, app="shop")
    h.install("S2", 1_000, app="shop-lite")
    h.install("V1", 1_000, app="vendor")
    retail = h.person_id(h.personalize("S1", 2_000, None, ["j@x.com"]))
    h.personalize("S2", 3_000, None, ["j@x.com"])
    vendor = h.person_id(h.personalize("V1", 4_000, None, ["j@x.com"]))
    assert h.profile_of("S2") == retail
    assert vendor != retail
    assert h.profile_of("V1") == vendor
    assert h.owner(EMAIL, "j@x.com", "retail") == retail
    assert h.owner(EMAIL, "j@x.com", "b2b") == vendor


def test_junk_identities_are_dropped_and_the_rest_applies() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "null", ["test@test.com", "ok@x.com", "bad"]))
    assert h.dead_letters() == []
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["identities"] == {"externalUserId": None, "emails": ["ok@x.com"], "phones": []}
    rejected = [
        (c["reason"], c["identityKind"])
        for c in h.changes(person)
        if c["kind"] == "identity_rejected"
    ]
    assert rejected == [
        ("blocked_identity", "externalUserId"),
        ("blocked_identity", "email"),
        ("invalid_identity", "email"),
    ]
    assert all("test@test" not in str(c) for c in h.changes(person))


def test_all_blocked_or_invalid_identities_go_to_the_dead_letter() -> None:
    h = PoolHarness()
    first = h.install("A", 1_000)
    h.personalize("A", 2_000, "undefined", ["'null'"])
    assert h.dead_letters() == ["blocked_identity"]
    h.personalize("A", 3_000, None, ["not-an-email", "null"])
    assert h.dead_letters() == ["invalid_identity"]
    assert h.profile_of("A") == first.anonymous_profile
    assert h.persons() == []
    assert all(d.rejected is not None for d in h.last_decisions)


def test_identity_limits() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(emails=2)))
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, None, ["a@x.com", "b@x.com", "c@x.com"]))
    snapshot = h.snapshot(person)
    assert snapshot is not None and snapshot["identities"]["emails"] == ["a@x.com", "b@x.com"]
    assert h.owner(EMAIL, "c@x.com") is None
    assert [c["reason"] for c in h.changes(person) if c["kind"] == "identity_rejected"] == [
        "limit_exceeded"
    ]


def test_merge_that_would_exceed_identity_limits_does_not_happen() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(emails=2)))
    for prid in "ABC":
        h.install(prid, 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, None, ["a@x.com", "b@x.com"]))
    p2 = h.person_id(h.personalize("B", 3_000, None, ["c@x.com"]))
    h.personalize("C", 4_000, None, ["c@x.com", "a@x.com"])
    assert sorted(h.persons()) == sorted([p1, p2])
    assert h.profile_of("C") == p2
    assert "limit_exceeded" in [c.get("reason") for c in h.changes(p2, last=True)]


def test_merge_cap_leaves_persons_apart_but_still_links() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(merges_absorbed=1)))
    for prid in "ABCDE":
        h.install(prid, 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    h.personalize("B", 3_000, None, ["b@x.com"])
    h.personalize("C", 4_000, None, ["a@x.com", "b@x.com"])  # p1 absorbs p2: at its cap
    assert h.persons() == [p1]
    p3 = h.person_id(h.personalize("D", 5_000, None, ["d@x.com"]))
    h.personalize("E", 6_000, None, ["a@x.com", "d@x.com"])
    assert sorted(h.persons()) == sorted([p1, p3])
    assert h.profile_of("E") == p1  # a person at its cap still receives installs and events
    assert [c["reason"] for c in h.changes(p1, last=True) if c["kind"] == "identity_rejected"] == [
        "limit_exceeded"
    ]
    assert h.owner(EMAIL, "d@x.com") == p3


def test_personalize_user_attributes_apply_to_the_person() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    login = h.personalize("A", 2_000, "u1", attributes={"firstName": "Ana"}, custom={"vip": True})
    snapshot = h.snapshot(h.person_id(login))
    assert snapshot is not None
    assert snapshot["attributes"] == {"firstName": "Ana"}
    assert snapshot["customAttributes"] == {"vip": True}


def test_logout_then_login_as_someone_else() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("B", 1_000)
    alice = h.person_id(h.personalize("A", 2_000, None, ["alice@x.com"]))
    h.personalize("B", 2_500, None, ["alice@x.com"])  # Alice's second device
    logout = h.depersonalize("A", 3_000)
    bob = h.person_id(h.personalize("A", 4_000, None, ["bob@x.com"]))
    assert h.profile_of("A") == bob
    assert h.profile_of("B") == alice
    # Bob absorbs only the logged-out period, not Alice's history.
    bob_now = h.snapshot(bob)
    assert bob_now is not None and bob_now["mergedFrom"] == [logout.anonymous_profile]
    alice_now = h.snapshot(alice)
    assert alice_now is not None
    assert [i["pushRegistrationId"] for i in alice_now["installs"]] == ["B"]


def test_a_person_keeps_its_last_anonymous_periods_only() -> None:
    # Every logout and login absorbs an anonymous profile: the record must not grow with that.
    h = PoolHarness()
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1"))
    absorbed = []
    for n in range(MAX_ANONYMOUS_MERGED + 5):
        absorbed.append(h.depersonalize("A", 3_000 + n * 10).anonymous_profile)
        h.personalize("A", 3_005 + n * 10, "u1")
    snapshot = h.snapshot(person)
    assert snapshot is not None
    anonymous = [pid for pid in snapshot["mergedFrom"] if pid.startswith("a_")]
    assert anonymous == absorbed[-MAX_ANONYMOUS_MERGED:]
    aliases = {parts(k)[1] for k, _ in h.tables.aliases.scan()}
    assert absorbed[-1] in aliases and absorbed[0] not in aliases
