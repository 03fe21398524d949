"""Pool stage, the profile explorer's history: why merged, what was rejected and which limit,
bounded per profile, moved on merges, erased on forget (docs/explorer.md)."""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

from tests.unit.domain.pool_harness import POOL, PoolHarness, identity

from idstream.domain import pool_history
from idstream.domain.config import HistoryLimits, PersonLimits, RuleConfig
from idstream.domain.events import EventType, IdentityKind
from idstream.domain.keys import key, parts
from idstream.domain.pool_profiles import MAX_ANONYMOUS_MERGED
from idstream.drivers.local.driver import LocalDriver
from idstream.simulate import Traffic, TrafficConfig

EMAIL, PHONE, EXT = IdentityKind.EMAIL, IdentityKind.PHONE, IdentityKind.EXTERNAL_USER_ID


def history(h: PoolHarness, pid: str) -> pool_history.History:
    return pool_history.read(h.tables, POOL, pid)


def merged_couple() -> tuple[PoolHarness, str, str]:
    """A (email) and B (phone) are persons; C's login carries both: B merges into A."""
    h = PoolHarness()
    for prid in "ABC":
        h.install(prid, 1_000)
    a = h.person_id(h.personalize("A", 2_000, None, ["ana@example.com"]))
    b = h.person_id(h.personalize("B", 3_000, None, [], ["+385912345678"]))
    h.personalize("C", 4_000, None, ["ana@example.com"], ["+385912345678"])
    return h, a, b


def test_the_merged_change_says_why_the_identity_that_matched_masked() -> None:
    h, a, b = merged_couple()
    merges = [c for c in h.changes(a, last=True) if c["kind"] == "merged"]
    (on_survivor,) = [c for c in merges if c["loser"] == b]
    (on_loser,) = h.changes(b, last=True)
    for change in (on_survivor, on_loser):
        assert change["kind"] == "merged" and change["survivor"] == a
        assert change["reason"] == "shared_identity"
        assert (change["identityKind"], change["maskedValue"]) == ("phone", "+38********78")
        assert change["pushRegistrationId"] == "C"
    # C's anonymous period joins the person too: continuity, no identity.
    (anonymous,) = [c for c in merges if c["loser"] != b]
    assert anonymous["reason"] == "continuity" and "maskedValue" not in anonymous
    merges = {e.fields["loser"]: e.fields for e in history(h, a).merges}
    assert merges[b]["reason"] == "shared_identity"
    assert merges[b]["maskedValue"] == "+38********78"
    assert merges[anonymous["loser"]]["reason"] == "continuity"


def test_the_history_of_a_profile_merged_away_moves_to_its_survivor_in_log_order() -> None:
    h, a, b = merged_couple()
    assert history(h, b).changes == () and h.tables.history_heads.get(key(POOL, b)) is None
    found = history(h, a)
    assert {e.profile_id for e in found.changes} >= {a, b}
    # The entries of A, B and the anonymous profiles interleave in the log's order (here the
    # order of the event times).
    assert (b, "identity_added") in [(e.profile_id, e.kind) for e in found.changes]
    times = [e.event_time for e in found.changes]
    assert times == sorted(times) and len(set(times)) == 4
    # The tree of merges: B's own anonymous period hangs under B.
    tree = {(e.fields["loser"], e.fields["survivor"]) for e in found.merges}
    assert (b, a) in tree
    assert any(survivor == b for _, survivor in tree)
    snapshot = h.snapshot(a)
    assert snapshot is not None
    assert {loser for loser, _ in tree} == set(snapshot["mergedFrom"])


def test_a_rejection_says_which_limit() -> None:
    h = PoolHarness(RuleConfig(limits=PersonLimits(emails=1, merges_absorbed=1)))
    for prid in "ABCDE":
        h.install(prid, 1_000)
    a = h.person_id(h.personalize("A", 2_000, None, ["a@x.com"]))
    h.update("A", 2_500, added=identity(emails=["second@x.com"]))
    (rejected,) = h.changes(a, last=True)
    assert (rejected["reason"], rejected["limit"]) == ("limit_exceeded", "emails")
    h.personalize("B", 3_000, None, [], ["+385912345601"])
    h.personalize("C", 3_500, None, [], ["+385912345602"])
    # A absorbs B (one merge, the cap); then C would be a second one.
    h.personalize("D", 4_000, None, ["a@x.com"], ["+385912345601"])
    h.personalize("E", 5_000, None, [], ["+385912345601", "+385912345602"])
    limits = [c.get("limit") for c in h.changes(a, last=True) if c["kind"] == "identity_rejected"]
    assert limits == ["merges"]
    entries = [(e.fields["reason"], e.fields.get("limit")) for e in history(h, a).rejections]
    assert entries == [("limit_exceeded", "emails"), ("limit_exceeded", "merges")]


def test_other_changes_and_rejections_are_bounded_oldest_first() -> None:
    bound = HistoryLimits(changes=5, rejections=3)
    h = PoolHarness(RuleConfig(history=bound))
    h.install("A", 1_000)
    a = h.person_id(h.personalize("A", 2_000, "u1"))
    for n in range(40):
        h.update("A", 3_000 + n, attributes={"city": f"c{n}"}, tags_added=[f"t{n}"])
        h.update("A", 3_000 + n, added=identity(ext=f"other-{n}"))
    found = history(h, a)
    assert len(found.changes) == 5 and len(found.rejections) == 3
    assert [e.version for e in found.changes] == sorted(e.version for e in found.changes)
    newest = max(c["version"] for c in h.changes(a) if c["kind"] != "identity_rejected")
    assert found.changes[-1].version == newest
    head = found.head
    assert (head.changes, head.rejections, head.rejections_dropped) == (5, 3, 37)
    # Every change of A and of the anonymous profile it absorbed (created, install_linked).
    recorded = [c for c in h.changes(a) if c["kind"] not in ("identity_rejected", "merged")]
    assert head.changes_dropped == len(recorded) + 2 - 5


def test_an_entry_keeps_names_without_values_and_at_most_a_few() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    a = h.person_id(h.personalize("A", 2_000, "u1", ["jo@example.com"]))
    many = {f"name-{n:02d}": "secret-value" for n in range(25)}
    h.update("A", 3_000, attributes={"city": "Zagreb"}, custom=many)
    (entry,) = [e for e in history(h, a).changes if e.kind == "attributes_changed"]
    assert entry.names["attributes"] == ("city",)
    assert len(entry.names["customAttributes"]) == pool_history.MAX_NAMES
    assert entry.more == 25 - pool_history.MAX_NAMES
    stored = repr(h.logical_state()["pool_history"])
    for raw in ("Zagreb", "secret-value", "jo@example.com", "u1'"):
        assert raw not in stored
    (added,) = [e for e in history(h, a).changes if e.fields.get("identityKind") == "email"]
    assert added.fields["maskedValue"] == "j***@e***.com"


def test_anonymous_merges_are_kept_as_mergedfrom_keeps_them() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    person = h.person_id(h.personalize("A", 2_000, "u1"))
    for n in range(MAX_ANONYMOUS_MERGED + 5):
        h.depersonalize("A", 3_000 + 10 * n)
        h.personalize("A", 3_005 + 10 * n, "u1")
    snapshot = h.snapshot(person)
    assert snapshot is not None
    found = history(h, person)
    assert {e.fields["loser"] for e in found.merges} == set(snapshot["mergedFrom"])
    assert len(found.merges) == MAX_ANONYMOUS_MERGED
    assert found.head.merges_dropped == 6  # the first login's and 5 more


def test_forget_erases_the_history_and_remembers_only_hashed_ids() -> None:
    h, a, _ = merged_couple()
    h.update("A", 5_000, attributes={"firstName": "Ana"}, tags_added=["vip"])
    # A rejection on A (a blocked email) with an update that applies.
    h.update("A", 5_500, attributes={"city": "Split"}, added=identity(emails=["null"]))
    snapshot = h.snapshot(a)
    assert snapshot is not None and len(history(h, a).rejections) == 1
    merged_ids = [a, *snapshot["mergedFrom"]]
    h.forget("A", 6_000)
    assert h.change_types(a, last=True) == ["forgotten"]
    state = h.logical_state()
    tables = ("pool_history", "pool_history_heads", "pool_forgotten_profiles")
    stored = repr([state[name] for name in tables])
    # No key under the person or a profile merged into it, no value of it, raw or masked.
    for trace in (*merged_ids, "ana@example.com", "+385912345678", "Ana", "vip", "a***@e***"):
        assert trace not in stored, trace
    assert "+38********78" not in stored
    owners = {parts(k)[1] for k, _ in state["pool_history"]}
    live = {parts(k)[1] for k, _ in state["pool_profiles"]}
    assert owners <= live
    for pid in merged_ids:
        assert pool_history.is_forgotten(h.tables, POOL, pid)
    assert not pool_history.is_forgotten(h.tables, POOL, "p_never_was")


def test_on_simulated_traffic_history_lives_only_with_live_profiles_and_stays_bounded() -> None:
    mix = MappingProxyType(
        {
            EventType.INSTALL.value: 20.0,
            EventType.APP_LAUNCH.value: 10.0,
            EventType.INSTALL_UPDATE.value: 8.0,
            EventType.PERSONALIZE.value: 25.0,
            EventType.DEPERSONALIZE.value: 10.0,
            EventType.PERSON_UPDATE.value: 15.0,
            EventType.UNINSTALL.value: 2.0,
            EventType.FORGET.value: 4.0,
        }
    )
    bound = HistoryLimits(changes=4, rejections=2)
    limits = PersonLimits(merges_absorbed=3, emails=3, phones=3)
    driver = LocalDriver(RuleConfig(history=bound, limits=limits), partitions=3)
    traffic = Traffic(TrafficConfig(seed=5, users=40, events=4_000, mix=mix))
    try:
        for record in traffic:
            driver.submit(record.value, key=record.key)
        driver.drain()
        tables = driver.pool_tables
        live = {parts(k)[1]: r for k, r in tables.profiles.scan()}
        sections: Counter[tuple[str, str]] = Counter()
        for found, _ in tables.history.scan():
            _, owner, section, *_ = parts(found)
            assert owner in live, f"history of {owner}, which is no live profile"
            sections[owner, section] += 1
        for (owner, section), n in sections.items():
            bound_of = {"c": bound.changes, "r": bound.rejections}
            cap = limits.merges_absorbed + MAX_ANONYMOUS_MERGED
            assert n <= bound_of.get(section, cap), (owner, section, n)
        for owner, record in live.items():
            losers = {e.fields["loser"] for e in pool_history.read(tables, POOL, owner).merges}
            assert losers == set(record.merged_from), owner
        assert any(s == "m" for _, s in sections), "the traffic merges"
        assert list(tables.forgotten_profiles.scan()), "the traffic forgets"
    finally:
        driver.close()
