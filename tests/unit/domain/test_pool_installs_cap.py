"""Pool stage, the installs cap (SPEC §4.6): one shared identity on thousands of installs makes
neither an oversized snapshot nor claims whose work grows with the person's installs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, Generic, TypeVar

import orjson
from tests.contract.test_emitted_outputs import assert_valid, invalid, outcomes
from tests.unit.domain.pool_harness import PoolHarness

from idstream.domain.config import PersonLimits, RuleConfig
from idstream.domain.events import IdentityKind
from idstream.domain.messages import OutputTopic
from idstream.domain.pool_state import PoolTables
from idstream.domain.ports import StateTable
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink

EMAIL = IdentityKind.EMAIL
V = TypeVar("V")

# The system data of the reviewer's reproduction: about 360 bytes of snapshot per install.
SYSTEM = {
    "applicationVersion": "1.0.0",
    "deviceManufacturer": "Apple",
    "deviceModel": "iPhone15,2",
    "osLanguage": "en",
    "osVersion": "17.1",
    "platform": "iOS",
    "sdkVersion": "3.2.1",
}


def capped(installs: int) -> RuleConfig:
    return RuleConfig(limits=PersonLimits(installs=installs))


def shared_login(h: PoolHarness, i: int, email: str = "shared@x.com") -> None:
    prid = f"dev{i:05d}"
    h.install(prid, 1_000 + i)
    h.facts(prid, 1_000 + i, **SYSTEM)
    h.personalize(prid, 2_000 + i, None, [email, f"u{i}@x.com"])


def test_a_personalize_beyond_the_cap_leaves_the_install_anonymous() -> None:
    h = PoolHarness(capped(3))
    for i in range(3):
        shared_login(h, i)
    [person] = h.persons()
    anonymous = h.install("late", 5_000).anonymous_profile
    login = h.personalize("late", 6_000, None, ["shared@x.com", "new@x.com"])
    # The install stays on its anonymous profile; no identity of the claim is attached.
    assert h.profile_of("late") == anonymous
    assert h.owner(EMAIL, "new@x.com") is None
    assert [(c["reason"], c["limit"]) for c in h.changes(anonymous, last=True)] == [
        ("limit_exceeded", "installs"),
        ("limit_exceeded", "installs"),
    ]
    # The person is untouched, and the claim is answered (not dead-lettered).
    assert h.changes(person, last=True) == []
    assert h.dead_letters() == []
    [answer] = [d for d in h.last_decisions if d.answers == login.seq]
    assert answer.profile_id == anonymous and answer.rejected is None
    snapshot = h.snapshot(person)
    assert snapshot is not None and len(snapshot["installs"]) == 3
    # A slot freed by a logout takes the next install.
    h.depersonalize("dev00000", 7_000)
    h.personalize("late", 8_000, None, ["shared@x.com"])
    assert h.profile_of("late") == person


def test_force_depersonalize_onto_a_full_person_keeps_the_old_link() -> None:
    h = PoolHarness(capped(1))
    h.install("A", 1_000)
    h.install("B", 1_000)
    full = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    other = h.person_id(h.personalize("B", 3_000, None, ["b@x.com"]))
    h.personalize("B", 4_000, None, ["a@x.com"], force=True)
    assert h.profile_of("B") == other
    assert [c.get("limit") for c in h.changes(other, last=True)] == ["installs"]
    assert h.changes(full, last=True) == []


def test_a_merge_beyond_the_cap_does_not_happen() -> None:
    h = PoolHarness(capped(3))
    for prid in "ABCDE":
        h.install(prid, 1_000)
    p1 = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    h.personalize("B", 2_100, None, ["a@x.com"])
    p2 = h.person_id(h.personalize("C", 3_000, None, ["c@x.com"]))
    h.personalize("D", 3_100, None, ["c@x.com"])
    # Two installs each, and E's own: five installs for one person of at most three.
    h.personalize("E", 4_000, None, ["a@x.com", "c@x.com"])
    assert sorted(h.persons()) == sorted([p1, p2])
    assert h.profile_of("E") == p1  # the winner still has room for E
    rejected = [c for c in h.changes(p1, last=True) if c["kind"] == "identity_rejected"]
    assert [(c["reason"], c["limit"]) for c in rejected] == [("limit_exceeded", "installs")]
    assert h.owner(EMAIL, "c@x.com") == p2


def test_snapshots_stay_small_and_valid_whatever_the_installs() -> None:
    """The reviewer's blob: 300 installs log in with one shared address. Every record the pool
    emits validates, and no snapshot passes 64 KiB (100 installs of ~360 bytes)."""
    h = PoolHarness(roundtrip=False)
    for i in range(300):
        shared_login(h, i)
    [person] = h.persons()
    snapshot = h.snapshot(person)
    assert snapshot is not None and len(snapshot["installs"]) == PersonLimits().installs
    largest = 0
    for output in h.outputs:
        assert not invalid(output.topic, output.value), (output.topic, output.value)
        if output.topic is OutputTopic.PROFILES and output.value is not None:
            largest = max(largest, len(orjson.dumps(output.value)))
    assert 30_000 < largest <= 64 * 1024


class CountingTable(Generic[V]):
    """A StateTable that counts the entries read through it (get and every scanned entry)."""

    def __init__(self, table: StateTable[V], reads: Counter[str], name: str) -> None:
        self._table, self._reads, self._name = table, reads, name

    def get(self, key: str) -> V | None:
        self._reads[self._name] += 1
        return self._table.get(key)

    def put(self, key: str, value: V) -> None:
        self._table.put(key, value)

    def delete(self, key: str) -> None:
        self._table.delete(key)

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        for found in self._table.scan(prefix, reverse=reverse, start=start):
            self._reads[self._name] += 1
            yield found


def reads_per_login(rules: RuleConfig, logins: int) -> int:
    """Table entries the pool reads for the `logins`-th install's install + facts +
    personalize claims, every earlier install having logged in with the same address."""
    h = PoolHarness(rules, roundtrip=False)
    reads: Counter[str] = Counter()
    counted: dict[str, Any] = {
        f.name: CountingTable(getattr(h.tables, f.name), reads, f.name) for f in fields(h.tables)
    }
    h.tables = PoolTables(**counted)
    for i in range(logins - 1):
        shared_login(h, i)
    reads.clear()
    shared_login(h, logins - 1)
    return sum(reads.values())


def test_the_work_of_a_claim_does_not_grow_with_the_installs() -> None:
    """Counted in table reads, not time: the 1,200th login costs what the 300th does. Without
    the cap (the control) the cost grows with the person's installs."""
    at_300 = reads_per_login(RuleConfig(), 300)
    at_1200 = reads_per_login(RuleConfig(), 1_200)
    # Fewer than the person's installs: a refused login never reads them.
    assert at_1200 == at_300 < PersonLimits().installs
    uncapped = capped(10_000)
    assert reads_per_login(uncapped, 200) > 2 * reads_per_login(uncapped, 50)
    # The dearest claim, a login that fills the person up, reads each of its installs twice
    # (its snapshot before and after the claim) plus a bounded rest (history, identities).
    assert reads_per_login(RuleConfig(), PersonLimits().installs) < 4 * PersonLimits().installs


def test_refused_logins_resolve_to_their_anonymous_profiles_through_the_driver() -> None:
    """Through the in-process driver, over 3 partitions delivered in a shuffled order: every
    record validates, every input has exactly one outcome (SPEC §5), and the events of a
    refused login resolve to the install's anonymous profile."""
    sink = MemorySink()
    driver = LocalDriver(capped(5), sink=sink, shuffle_seed=3, partitions=3)
    records = []
    for i in range(12):
        prid = f"dev{i:02d}"
        head = {"appCode": "shop", "pushRegistrationId": prid, **SYSTEM}
        for n, kind, extra in (
            (0, "install", {}),
            (1, "personalize", {"userIdentity": {"emails": ["shared@x.com"]}}),
            (2, "appLaunch", {}),
        ):
            event = {"eventId": f"{prid}-{n}", "type": kind, "timestamp": 1_000 + n, **head}
            records.append((prid.encode(), orjson.dumps({**event, **extra})))
    for at, (key, value) in enumerate(records):
        driver.submit(value, key=key, record_timestamp=1_000 + at)
    driver.drain()
    assert_valid(sink)
    found = outcomes(driver, sink)
    assert len(found) == len(records) + driver.stats.skipped["tick"]
    assert set(found.values()) == {1}
    resolved = [o.value for o in sink[OutputTopic.RESOLVED_EVENTS] if o.value]
    by_kind = Counter(str(v["profileId"])[:2] for v in resolved if v["type"] == "appLaunch")
    assert by_kind == {"p_": 5, "a_": 7}
    changes = [o.value for o in sink[OutputTopic.PROFILE_CHANGES] if o.value]
    refused = [c for c in changes if c.get("limit")]
    assert len(refused) == 7 and all(c["limit"] == "installs" for c in refused)
    assert not sink[OutputTopic.DEAD_LETTER]
