"""Forget scenarios end to end (SPEC §4.10, §5): a forget that reaches a person's other devices
gives the same state and the same profile ids however the partitions interleave, and whatever
the order of the log, the person is gone and never comes back."""

from __future__ import annotations

import pytest
from tests.unit.scenarios.sdk import attribution, changes, personalize, profiles, record, run

from idstream.domain.ids import anonymous_profile_id, forgotten_profile_id
from idstream.drivers.local.driver import LocalDriver

PHONE = "phone-1"
TABLET = "tablet-1"
OPS = "ops-console"
SHUFFLES = [(1, 1), (2, 2), (3, 3), (4, 2), (5, 4)]  # (shuffle seed, partitions)


def fresh(prid: str, forgetter: str, forget_claim: int) -> str:
    """The fresh anonymous profile an install gets when `forgetter`'s forget (its
    `forget_claim`-th claim) erases its person."""
    if prid == forgetter:
        return anonymous_profile_id(prid, forget_claim)
    return forgotten_profile_id(prid, forgetter, forget_claim)


def alice_on_two_devices() -> list[bytes]:
    return [
        record("install", "p1", 0, PHONE),
        record("install", "t1", 1, TABLET),
        personalize("p2", 10, PHONE, externalUserId="alice", emails=["alice@example.com"]),
        personalize("t2", 20, TABLET, emails=["alice@example.com"]),
        record("personUpdate", "p3", 30, PHONE, attributes={"firstName": "Alice"}),
        record("custom", "t3", 40, TABLET, definitionId="before-forget"),
    ]


def assert_converges(records: list[bytes]) -> LocalDriver:
    """One file, its partitions interleaved in many ways, ends in the same state; spread over
    other numbers of partitions (a file's log time is its line number, so its order stays the
    same), in the same profiles (the state records the partition each profile was made on)."""
    reference = run(records)
    for seed, partitions in [(None, 1), *SHUFFLES]:
        other = run(records, seed=seed, partitions=partitions)
        assert profiles(other) == profiles(reference)
        assert list(other.install_tables.held.scan()) == []
        if partitions == 1:
            assert other.digest() == reference.digest()
    return reference


def assert_alice_is_gone(driver: LocalDriver) -> None:
    alive = profiles(driver)
    assert all(p["kind"] == "anonymous" for p in alive.values())
    assert "alice" not in repr(alive) and "Alice" not in repr(alive)


def test_forget_by_identity_moves_both_devices_to_fresh_anonymous_profiles() -> None:
    forget = record("forget", "f1", 50, OPS, userIdentity={"emails": ["alice@example.com"]})
    after = [
        record("custom", "p4", 60, PHONE, definitionId="after-forget"),
        record("custom", "t4", 70, TABLET, definitionId="after-forget"),
    ]
    base = [*alice_on_two_devices(), record("install", "o1", 45, OPS)]
    for order in ([*base, *after, forget], [*base, after[1], forget, after[0]]):
        assert_alice_is_gone(assert_converges(order))
    driver = assert_converges([*base, forget, *after])
    phone, tablet = fresh(PHONE, OPS, 2), fresh(TABLET, OPS, 2)
    alive = profiles(driver)
    assert [i["pushRegistrationId"] for i in alive[phone]["installs"]] == [PHONE]
    assert [i["pushRegistrationId"] for i in alive[tablet]["installs"]] == [TABLET]
    assert alive[phone]["installs"][0]["lifecycle"] == "anonymous"
    assert_alice_is_gone(driver)
    # In order, the later events resolve to the fresh profiles.
    got = attribution(driver)
    assert (got["p4"], got["t4"]) == (phone, tablet)
    assert changes(driver, phone) == ["created", "install_linked"]


@pytest.mark.parametrize("late_before_forget", [False, True])
def test_forget_from_one_device_then_events_from_the_other_in_either_order(
    late_before_forget: bool,
) -> None:
    forget = record("forget", "p9", 50, PHONE)  # the phone forgets its own person
    tablet = [
        record("custom", "t4", 60, TABLET, definitionId="after-forget"),
        record("personUpdate", "t5", 65, TABLET, attributes={"city": "Split"}),
    ]
    if late_before_forget:
        # Stamped before the forget, logged after it: an offline queue that must not bring
        # the person back (it is dropped by the forget register).
        tablet.insert(0, record("personUpdate", "t3b", 45, TABLET, attributes={"city": "Rome"}))
    base = alice_on_two_devices()
    assert_alice_is_gone(assert_converges([*base, *tablet, forget]))
    driver = assert_converges([*base, forget, *tablet])
    alive = profiles(driver)
    # The phone's forget is its 4th claim (install, personalize, personUpdate, forget).
    fresh_phone, fresh_tablet = fresh(PHONE, PHONE, 4), fresh(TABLET, PHONE, 4)
    assert set(alive) == {fresh_phone, fresh_tablet}
    assert_alice_is_gone(driver)
    assert "Rome" not in repr(alive)
    # The tablet's update after the forget belongs to its fresh anonymous profile.
    assert alive[fresh_tablet]["attributes"] == {"city": "Split"}
    assert attribution(driver)["t4"] == fresh_tablet
