"""Pool stage, personUpdate, attributes, install facts and uninstall: SPEC §4.5, 4.6, 4.8, 4.9."""

from __future__ import annotations

from tests.unit.domain.pool_harness import PoolHarness, identity

from idstream.domain.config import PersonLimits, RuleConfig
from idstream.domain.events import IdentityKind

EMAIL, PHONE, EXT = IdentityKind.EMAIL, IdentityKind.PHONE, IdentityKind.EXTERNAL_USER_ID


def two_devices() -> tuple[PoolHarness, str]:
    h = PoolHarness()
    h.install("A", 1_000)
    h.install("B", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1", ["a@x.com"]))
    h.personalize("B", 2_100, "u1")
    return h, person


def test_attributes_are_shared_and_last_writer_wins_by_event_time() -> None:
    h, person = two_devices()
    h.update("A", 5_000, attributes={"firstName": "Ana"}, custom={"plan": "gold"})
    # Stamped earlier, arriving later from the other device: loses.
    h.update("B", 4_000, attributes={"firstName": "Anna", "city": "Split"})
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["attributes"] == {"city": "Split", "firstName": "Ana"}
    assert snapshot["customAttributes"] == {"plan": "gold"}
    [changed] = h.changes(person, last=True)
    assert changed["attributes"] == {"city": {"old": None, "new": "Split"}}


def test_attribute_ties_go_to_the_larger_event_id() -> None:
    h, person = two_devices()
    h.update("B", 5_000, attributes={"city": "Split"})  # eventId "B.e…"
    h.update("A", 5_000, attributes={"city": "Zagreb"})  # "A.e…" < "B.e…": loses the tie
    snapshot = h.snapshot(person)
    assert snapshot is not None and snapshot["attributes"]["city"] == "Split"
    assert h.last_outputs == ()


def test_null_unsets_an_attribute() -> None:
    h, person = two_devices()
    h.update("A", 5_000, attributes={"city": "Split"})
    h.update("A", 6_000, attributes={"city": None})
    snapshot = h.snapshot(person)
    assert snapshot is not None and "city" not in snapshot["attributes"]
    [changed] = h.changes(person, last=True)
    assert changed["attributes"] == {"city": {"old": "Split", "new": None}}
    h.update("B", 5_500, attributes={"city": "Zagreb"})  # older than the unset
    assert h.last_outputs == ()


def test_tags_add_and_remove_last_writer_wins_per_tag() -> None:
    h, person = two_devices()
    h.update("A", 5_000, tags_added=["vip", "beta"])
    h.update("B", 6_000, tags_removed=["beta"])
    h.update("A", 5_500, tags_added=["beta"])  # older than the removal
    snapshot = h.snapshot(person)
    assert snapshot is not None and snapshot["tags"] == ["vip"]
    changes = [c for c in h.changes(person) if c["kind"] == "tags_changed"]
    assert [(c["added"], c["removed"]) for c in changes] == [(["beta", "vip"], []), ([], ["beta"])]


def test_identities_added_and_removed() -> None:
    h, person = two_devices()
    h.update("A", 5_000, added=identity(None, ["b@x.com"], ["+385 91 234 5678"]))
    h.update("B", 6_000, removed=identity(None, ["a@x.com"]))
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["identities"] == {
        "externalUserId": "u1",
        "emails": ["b@x.com"],
        "phones": ["+385912345678"],
    }
    assert h.owner(EMAIL, "a@x.com") is None
    assert h.change_types(person, last=True) == ["identity_removed"]


def test_adding_someone_elses_identity_is_rejected_never_merged() -> None:
    h, person = two_devices()
    h.install("C", 1_000)
    other = h.person_id(h.personalize("C", 3_000, "u2", ["c@x.com"]))
    h.update("A", 5_000, added=identity(None, ["c@x.com", "new@x.com"]))
    assert sorted(h.persons()) == sorted([person, other])
    assert h.owner(EMAIL, "c@x.com") == other
    assert h.owner(EMAIL, "new@x.com") == person
    rejected = [c for c in h.changes(person, last=True) if c["kind"] == "identity_rejected"]
    assert [(c["reason"], c["maskedValue"]) for c in rejected] == [
        ("identity_conflict", "c***@x***.com")
    ]


def test_second_external_user_id_exceeds_the_limit() -> None:
    h, person = two_devices()
    h.update("A", 5_000, added=identity("u9"))
    assert h.owner(EXT, "u9") is None
    assert [c["reason"] for c in h.changes(person, last=True)] == ["limit_exceeded"]


def test_email_change_keeps_the_profile_and_its_place() -> None:
    h, person = two_devices()
    h.update("A", 4_000, added=identity(None, ["second@x.com"]))
    h.update("B", 5_000, replaced=[(EMAIL, "A@x.com", "New@X.com")])
    assert h.profile_of("A") == h.profile_of("B") == person
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["identities"]["emails"] == ["new@x.com", "second@x.com"]
    assert snapshot["channels"]["emails"][0] == {"value": "new@x.com", "primary": True}
    assert h.owner(EMAIL, "a@x.com") is None
    assert h.owner(EMAIL, "new@x.com") == person
    assert h.change_types(person, last=True) == ["identity_removed", "identity_added"]
    # History is kept: the old value is still in the change log.
    assert any(c.get("value") == "a@x.com" for c in h.changes(person))


def test_replacement_with_someone_elses_identity_is_rejected() -> None:
    h, person = two_devices()
    h.install("C", 1_000)
    h.personalize("C", 3_000, "u2", ["c@x.com"])
    h.update("A", 5_000, replaced=[(EMAIL, "a@x.com", "c@x.com")])
    assert h.owner(EMAIL, "a@x.com") == person
    assert [c["reason"] for c in h.changes(person, last=True)] == ["identity_conflict"]


def test_person_update_on_an_anonymous_install() -> None:
    h = PoolHarness()
    first = h.install("A", 1_000)
    anonymous = first.anonymous_profile
    h.update("A", 2_000, attributes={"city": "Split"}, tags_added=["t"], added=identity("u1"))
    snapshot = h.snapshot(anonymous)
    assert snapshot is not None
    assert snapshot["attributes"] == {"city": "Split"} and snapshot["tags"] == ["t"]
    assert [c.get("reason") for c in h.changes(anonymous, last=True)][-1] == "not_personalized"
    assert h.persons() == []
    h.update("A", 3_000, added=identity(None, ["a@x.com"]))
    assert h.dead_letters() == ["not_personalized"]


def test_anonymous_attributes_join_the_person_on_login() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.update("A", 2_000, attributes={"city": "Split"}, tags_added=["early"])
    person = h.person_id(h.personalize("A", 3_000, "u1", attributes={"firstName": "Ana"}))
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert snapshot["attributes"] == {"city": "Split", "firstName": "Ana"}
    assert snapshot["tags"] == ["early"]


def test_merge_settles_attribute_conflicts_by_event_time() -> None:
    h = PoolHarness()
    for prid in "ABC":
        h.install(prid, 1_000)
    older = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    h.update("A", 2_500, attributes={"city": "Old"}, tags_added=["x"])
    h.personalize("B", 3_000, None, ["b@x.com"])
    h.update("B", 3_500, attributes={"city": "New"}, tags_removed=["x"])
    h.personalize("C", 4_000, None, ["a@x.com", "b@x.com"])
    snapshot = h.snapshot(older)
    assert snapshot is not None
    assert snapshot["attributes"] == {"city": "New"}
    assert snapshot["tags"] == []


def test_tag_limit() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(tags=2)))
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1"))
    h.update("A", 3_000, tags_added=["a", "b", "c"])
    snapshot = h.snapshot(person)
    assert snapshot is not None and snapshot["tags"] == ["a", "b"]


def test_install_facts_update_the_profile() -> None:
    h, person = two_devices()
    h.facts("B", 3_000, push=False, primary=True, osVersion="17.1")
    [updated] = h.changes(person, last=True)
    assert updated["kind"] == "install_updated"
    assert updated["pushRegistrationId"] == "B"
    assert {k: updated[k] for k in ("primaryDevice", "pushEnabled", "systemData")} == {
        "primaryDevice": {"old": False, "new": True},
        "pushEnabled": {"old": True, "new": False},
        "systemData": {"osVersion": {"old": None, "new": "17.1"}},
    }
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert [p["pushRegistrationId"] for p in snapshot["channels"]["push"]] == ["A"]


def test_unchanged_facts_emit_nothing() -> None:
    h, _ = two_devices()
    h.facts("B", 3_000)
    assert h.last_outputs == () and h.last_decisions == ()


def test_uninstall_leaves_push_targeting_but_stays_with_the_person() -> None:
    h, person = two_devices()
    h.uninstall("B", 3_000)
    [updated] = h.changes(person, last=True)
    assert updated["lifecycle"] == {"old": "personalized", "new": "uninstalled"}
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert [i["pushRegistrationId"] for i in snapshot["installs"]] == ["A", "B"]
    assert [p["pushRegistrationId"] for p in snapshot["channels"]["push"]] == ["A"]
    # The answer to the uninstall: B stays with the person.
    assert [(d.push_registration_id, d.profile_id) for d in h.last_decisions] == [("B", person)]


def test_install_custom_attributes_reach_the_profile() -> None:
    h, person = two_devices()
    h.facts("B", 3_000, custom={"theme": "dark"})
    [updated] = h.changes(person, last=True)
    assert updated["customAttributes"] == {"theme": {"old": None, "new": "dark"}}
    snapshot = h.snapshot(person)
    assert snapshot is not None
    assert [i.get("customAttributes") for i in snapshot["installs"]] == [{}, {"theme": "dark"}]
