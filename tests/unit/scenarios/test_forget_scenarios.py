"""Forget scenarios end to end (SPEC §4.10, §5): a forget that reaches a person's other devices
gives the same state and the same profile ids whatever the arrival order, because the pool
names each install's fresh anonymous profile in its fold (docs/architecture.md, "Forget")."""

from __future__ import annotations

import pytest
from tests.unit.scenarios.sdk import attribution, changes, personalize, profiles, record, run

from idstream.domain.events import PushRegistrationId
from idstream.domain.ids import anonymous_profile_id
from idstream.drivers.local.driver import LocalDriver

PHONE = "phone-1"
TABLET = "tablet-1"
OPS = "ops-console"
SHUFFLES = [(1, 1), (2, 2), (3, 3), (4, 2), (5, 4)]  # (shuffle seed, partitions)


def anon(prid: str, eid: str) -> str:
    return anonymous_profile_id(PushRegistrationId(prid), eid)


def alice_on_two_devices() -> list[bytes]:
    return [
        record("install", "p1", 0, PHONE),
        record("install", "t1", 1, TABLET),
        personalize("p2", 10, PHONE, externalUserId="alice", emails=["alice@example.com"]),
        personalize("t2", 20, TABLET, emails=["alice@example.com"]),
        record("personUpdate", "p3", 30, PHONE, attributes={"firstName": "Alice"}),
        record("custom", "t3", 40, TABLET, definitionId="before-forget"),
    ]


def assert_converges(orders: list[list[bytes]]) -> LocalDriver:
    """Every arrival order, in order and shuffled, ends in the same state and profiles."""
    reference = run(orders[0])
    for records in orders:
        for seed, partitions in [(None, 1), *SHUFFLES]:
            other = run(records, seed=seed, partitions=partitions)
            assert other.digest() == reference.digest()
            assert profiles(other).keys() == profiles(reference).keys()
            assert list(other.install_tables.held.scan()) == []
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
    driver = assert_converges(
        [
            [*base, forget, *after],
            [*base, *after, forget],
            [*base, after[1], forget, after[0]],
        ]
    )
    phone, tablet = anon(PHONE, "f1"), anon(TABLET, "f1")
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
        # Stamped before the forget, arriving after it: folded in before it, then erased.
        tablet.insert(0, record("personUpdate", "t3b", 45, TABLET, attributes={"city": "Rome"}))
    base = alice_on_two_devices()
    driver = assert_converges([[*base, forget, *tablet], [*base, *tablet, forget]])
    alive = profiles(driver)
    fresh_phone, fresh_tablet = anon(PHONE, "p9"), anon(TABLET, "p9")
    assert set(alive) == {fresh_phone, fresh_tablet}
    assert_alice_is_gone(driver)
    assert "Rome" not in repr(alive)
    # The tablet's update after the forget belongs to its fresh anonymous profile.
    assert alive[fresh_tablet]["attributes"] == {"city": "Split"}
    assert attribution(driver)["t4"] == fresh_tablet
