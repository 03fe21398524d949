"""End-to-end scenarios through the local driver (install + pool stages), each run in order
and under several shuffled interleavings: the outcome must not depend on the interleaving."""

from __future__ import annotations

import pytest
from tests.unit.scenarios.sdk import (
    attribution,
    changes,
    dead_letters,
    person,
    personalize,
    profiles,
    record,
    run,
)

from idstream.domain.ids import anonymous_profile_id

SEEDS = [None, 1, 2, 3, 4, 5]
PHONE = "phone-1"
TABLET = "tablet-1"


def anon(prid: str, claim: int) -> str:
    """The anonymous profile the install's `claim`-th claim opened (1: its first event)."""
    return anonymous_profile_id(prid, claim)


@pytest.mark.parametrize("seed", SEEDS)
def test_events_after_a_personalize_belong_to_the_person(seed: int | None) -> None:
    driver = run(
        [
            record("install", "e1", 0, PHONE),
            record("appLaunch", "e2", 1, PHONE),
            personalize("e3", 60, PHONE, externalUserId="alice", emails=["alice@example.com"]),
            record("custom", "e4", 61, PHONE, definitionId="purchase"),
            record("appLaunch", "e5", 200, PHONE),
        ],
        seed=seed,
        partitions=2,
    )
    alice = person(driver, "alice")
    assert attribution(driver) == {
        "e1": anon(PHONE, 1),
        "e2": anon(PHONE, 1),
        "e3": alice["profileId"],
        "e4": alice["profileId"],
        "e5": alice["profileId"],
    }
    assert alice["identities"]["emails"] == ["alice@example.com"]
    assert [i["pushRegistrationId"] for i in alice["installs"]] == [PHONE]
    assert alice["installs"][0]["lifecycle"] == "personalized"
    # Continuity `link`: the anonymous profile was merged into the person.
    assert anon(PHONE, 1) not in profiles(driver)
    assert "merged" in changes(driver, anon(PHONE, 1)) + changes(driver, alice["profileId"])
    assert dead_letters(driver) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_shared_device_logout_and_login_as_someone_else(seed: int | None) -> None:
    driver = run(
        [
            record("install", "e1", 0, PHONE),
            personalize("e2", 10, PHONE, externalUserId="alice"),
            record("custom", "e3", 20, PHONE, definitionId="a"),
            record("depersonalize", "e4", 30, PHONE),
            record("custom", "e5", 40, PHONE, definitionId="between"),
            personalize("e6", 50, PHONE, externalUserId="bob"),
            record("custom", "e7", 60, PHONE, definitionId="b"),
        ],
        seed=seed,
    )
    alice, bob = person(driver, "alice"), person(driver, "bob")
    got = attribution(driver)
    assert [got[e] for e in ("e2", "e3")] == [alice["profileId"]] * 2
    assert got["e4"] == got["e5"] == anon(PHONE, 3)
    assert [got[e] for e in ("e6", "e7")] == [bob["profileId"]] * 2
    assert alice["profileId"] != bob["profileId"]
    assert [i["pushRegistrationId"] for i in bob["installs"]] == [PHONE]
    assert PHONE not in [i["pushRegistrationId"] for i in alice["installs"]]


@pytest.mark.parametrize("seed", SEEDS)
def test_login_as_someone_else_without_logout(seed: int | None) -> None:
    driver = run(
        [
            record("install", "e1", 0, PHONE),
            personalize("e2", 10, PHONE, externalUserId="alice"),
            personalize("e3", 20, PHONE, externalUserId="bob"),  # rejected
            record("custom", "e4", 30, PHONE, definitionId="still alice"),
            personalize("e5", 40, PHONE, externalUserId="carol", force=True),
            record("custom", "e6", 50, PHONE, definitionId="carol"),
        ],
        seed=seed,
    )
    assert dead_letters(driver) == ["already_personalized"]
    got = attribution(driver)
    alice, carol = person(driver, "alice"), person(driver, "carol")
    assert "e3" not in got
    assert got["e4"] == alice["profileId"]
    assert got["e5"] == got["e6"] == carol["profileId"]
    assert [i["pushRegistrationId"] for i in carol["installs"]] == [PHONE]


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_device_person_shares_attributes(seed: int | None) -> None:
    driver = run(
        [
            record("install", "p1", 0, PHONE),
            record("install", "t1", 5, TABLET, app="shop-tablet"),
            personalize("p2", 10, PHONE, emails=["alice@example.com"]),
            personalize("t2", 20, TABLET, app="shop-tablet", emails=["Alice@Example.com "]),
            record(
                "personUpdate",
                "p3",
                30,
                PHONE,
                attributes={"firstName": "Alice"},
                tagsAdded=["vip"],
            ),
            record("custom", "t3", 40, TABLET, app="shop-tablet", definitionId="view"),
        ],
        seed=seed,
        partitions=3,
    )
    (alice,) = [p for p in profiles(driver).values() if p["kind"] == "person"]
    assert sorted(i["pushRegistrationId"] for i in alice["installs"]) == [PHONE, TABLET]
    assert alice["identities"]["emails"] == ["alice@example.com"]
    assert alice["attributes"]["firstName"] == "Alice" and alice["tags"] == ["vip"]
    got = attribution(driver)
    assert {got[e] for e in ("p2", "p3", "t2", "t3")} == {alice["profileId"]}


def test_same_digest_for_every_interleaving_of_the_scenarios() -> None:
    records = [
        record("install", "p1", 0, PHONE),
        record("install", "t1", 5, TABLET, app="shop-tablet"),
        personalize("p2", 10, PHONE, emails=["alice@example.com"], phones=["+385911234567"]),
        personalize("t2", 20, TABLET, app="shop-tablet", phones=["+385911234567"]),
        record("depersonalize", "p3", 30, PHONE),
        personalize("p4", 40, PHONE, externalUserId="bob"),
        record("uninstall", "t3", 50, TABLET, app="shop-tablet"),
        record("custom", "t4", 60, TABLET, app="shop-tablet", definitionId="late"),
    ]
    digests = {run(records, seed=seed, partitions=2).digest() for seed in [None, *range(10)]}
    assert len(digests) == 1


def test_change_events_of_a_first_login() -> None:
    driver = run(
        [
            record("install", "e1", 0, PHONE),
            personalize("e2", 60, PHONE, externalUserId="alice", emails=["alice@example.com"]),
        ]
    )
    alice = person(driver, "alice")["profileId"]
    anonymous = anon(PHONE, 1)
    assert changes(driver, anonymous) == ["created", "install_linked", "merged"]
    assert changes(driver, alice) == [
        "created",
        "merged",
        "identity_added",
        "identity_added",
        "install_linked",
    ]
    snapshot = profiles(driver)[alice]
    assert snapshot["mergedFrom"] == [anonymous]
    assert snapshot["channels"]["emails"] == [{"value": "alice@example.com", "primary": True}]
    assert snapshot["channels"]["push"] == [
        {"pushRegistrationId": PHONE, "appCode": "shop", "primary": False}
    ]


def test_uninstall_drops_the_push_channel_and_rejects_later_events() -> None:
    driver = run(
        [
            record("install", "e1", 0, PHONE),
            personalize("e2", 10, PHONE, emails=["alice@example.com"]),
            record("uninstall", "e3", 20, PHONE),
            record("custom", "e4", 30, PHONE, definitionId="after"),
            record("custom", "e5", 15, PHONE, definitionId="late but before"),
        ]
    )
    (alice,) = [p for p in profiles(driver).values() if p["kind"] == "person"]
    assert alice["installs"][0]["lifecycle"] == "uninstalled"
    assert alice["channels"]["push"] == []
    assert dead_letters(driver) == ["install_uninstalled"]
    assert attribution(driver)["e5"] == alice["profileId"]
