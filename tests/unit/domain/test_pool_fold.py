"""Pool stage as an event-time fold: late claims, idempotency, redelivery, convergence (SPEC §5)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.domain.pool_harness import ClaimMaker, PoolHarness, identity

from idstream.domain.events import IdentityKind, PoolId, RecordMeta
from idstream.domain.messages import Claim, OutputTopic
from idstream.domain.pool import DIGEST_EXCLUDED, POOL_TABLE_TYPES, profile_snapshot

EMAIL = IdentityKind.EMAIL


def in_order(claims: list[Claim], *, roundtrip: bool = True) -> PoolHarness:
    h = PoolHarness(roundtrip=roundtrip)
    for claim in sorted(claims, key=lambda c: (c.order, c.push_registration_id, c.seq)):
        h.apply(claim)
    return h


def test_tables_and_digest_exclusions_are_declared() -> None:
    h = PoolHarness()
    assert set(h.store.tables) == set(POOL_TABLE_TYPES)
    assert set(POOL_TABLE_TYPES) > DIGEST_EXCLUDED
    assert {"pool_profiles", "pool_identities", "pool_forgotten"}.isdisjoint(DIGEST_EXCLUDED)


def test_an_earlier_stamped_claim_arriving_late_takes_its_place() -> None:
    maker = ClaimMaker()
    a0, b0 = maker.install("A", 1_000), maker.install("B", 1_000)
    early = maker.personalize("A", 2_000, None, ["j@x.com"])
    late = maker.personalize("B", 3_000, None, ["j@x.com"])
    h = PoolHarness()
    for claim in (a0, b0, late):
        h.apply(claim)
    wrong = h.person_id(late)
    assert h.profile_of("B") == wrong
    h.apply(early)
    right = h.person_id(early)
    assert h.persons() == [right]
    assert h.profile_of("A") == h.profile_of("B") == right
    # The person first created for B is superseded: consumers re-key it to the right one.
    assert h.changes(wrong, last=True)[0] | {"version": 0} == {
        **h.changes(wrong, last=True)[0],
        "type": "merged",
        "loser": wrong,
        "survivor": right,
        "version": 0,
    }
    assert h.snapshot(wrong) is None
    assert {(d.segment, d.profile_id) for d in h.last_decisions} >= {
        (late.segment, right),
        (early.segment, right),
    }
    assert h.logical_state() == in_order([a0, b0, early, late]).logical_state()


def test_the_survivor_is_the_earliest_created_whatever_the_arrival_order() -> None:
    maker = ClaimMaker()
    claims = [maker.install(p, 1_000) for p in "ABC"]
    claims += [
        maker.personalize("A", 2_000, None, ["a@x.com"]),
        maker.personalize("B", 3_000, None, [], ["+385912345678"]),
        maker.personalize("C", 4_000, None, ["a@x.com"], ["+385912345678"]),
    ]
    forward, backward = PoolHarness(), PoolHarness()
    for claim in claims:
        forward.apply(claim)
    for claim in reversed(claims):
        backward.apply(claim)
    assert forward.persons() == backward.persons() == [forward.person_id(claims[3])]
    assert forward.logical_state() == backward.logical_state()


def test_a_duplicate_claim_is_not_applied_again() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    login = h.personalize("A", 2_000, "u1")
    before = h.logical_state()
    h.apply(replace(login, meta=RecordMeta("idstream.events", 3, 999, 2_000)))
    assert h.last_outputs == () and h.last_decisions == ()
    assert h.logical_state() == before


def test_a_redelivered_claim_gets_its_outputs_again() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    login = h.personalize("A", 2_000, "u1", ["a@x.com"])
    first = (h.last_outputs, h.last_decisions)
    h.update("A", 3_000, attributes={"city": "Split"})
    state = h.logical_state()
    h.apply(login)  # same record: a crash before the outputs were sent
    assert (h.last_outputs, h.last_decisions) == first
    assert h.logical_state() == state


def test_a_redelivered_rejection_goes_to_the_dead_letter_again() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    claim = h.personalize("A", 2_000, "null")
    assert h.dead_letters() == ["blocked_identity"]
    h.apply(claim)
    assert h.dead_letters() == ["blocked_identity"]
    [record] = [o for o in h.last_outputs if o.topic is OutputTopic.DEAD_LETTER]
    assert record.value is not None and record.value["source"]["topic"] == "idstream.events"


def test_outputs_are_only_differences() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.personalize("A", 2_000, "u1")
    h.update("A", 3_000, attributes={"city": "Split"})
    h.update("A", 2_500, attributes={"city": "Old"})  # loses: changes nothing
    assert h.last_outputs == () and h.last_decisions == ()


# --- convergence ---------------------------------------------------------------------------

EXTS = ("u1", "u2", None, None, None)
EMAILS = ("a@x.com", "b@x.com", "c@x.com", "null")
PHONES = ("+385911111111", "+385922222222", "+385933333333")

personalize = st.tuples(
    st.just("personalize"),
    st.sampled_from(EXTS),
    st.lists(st.sampled_from(EMAILS), max_size=2),
    st.lists(st.sampled_from(PHONES), max_size=2),
    st.booleans(),
)
# Weighted towards identity steps, so histories often merge and conflict.
op = st.one_of(
    personalize,
    personalize,
    personalize,
    st.tuples(st.just("depersonalize")),
    st.tuples(st.just("depersonalize")),
    st.tuples(st.just("update"), st.sampled_from(("x", "y", None)), st.sampled_from(EMAILS)),
    st.tuples(st.just("tags"), st.sampled_from(("t1", "t2")), st.booleans()),
    st.tuples(st.just("facts"), st.booleans()),
    st.tuples(st.just("uninstall")),
    st.tuples(st.just("forget")),
    st.tuples(st.just("forget_email"), st.sampled_from(EMAILS)),
)
history = st.lists(
    st.lists(st.tuples(op, st.integers(0, 20)), min_size=1, max_size=6), min_size=2, max_size=4
)


def make_claims(histories: list[list[tuple[tuple[Any, ...], int]]]) -> list[list[Claim]]:
    maker = ClaimMaker()
    per_install: list[list[Claim]] = []
    for n, steps in enumerate(histories):
        prid = f"i{n}"
        claims = [maker.install(prid, 0)]
        for step, tick in steps:
            ts = tick * 100
            name = step[0]
            if name == "personalize":
                _, ext, emails, phones, force = step
                claims.append(maker.personalize(prid, ts, ext, emails, phones, force=force))
            elif name == "depersonalize":
                claims.append(maker.depersonalize(prid, ts))
            elif name == "update":
                _, city, email = step
                claims.append(
                    maker.update(prid, ts, attributes={"city": city}, added=identity(None, [email]))
                )
            elif name == "tags":
                _, tag, add = step
                added, removed = ([tag], []) if add else ([], [tag])
                claims.append(maker.update(prid, ts, tags_added=added, tags_removed=removed))
            elif name == "facts":
                claims.append(maker.facts(prid, ts, push=step[1]))
            elif name == "uninstall":
                claims.append(maker.uninstall(prid, ts))
                break
            elif name == "forget":
                claims.append(maker.forget(prid, ts))
            else:
                claims.append(maker.forget(prid, ts, identity(None, [step[1]])))
        per_install.append(claims)
    return per_install


@settings(max_examples=500, derandomize=True, deadline=None)
@given(histories=history, data=st.data())
def test_any_interleaving_of_installs_gives_the_same_state(
    histories: list[list[tuple[tuple[Any, ...], int]]], data: st.DataObject
) -> None:
    per_install = make_claims(histories)
    expected = in_order([c for claims in per_install for c in claims], roundtrip=False)
    expected_state = expected.logical_state()
    # Interleave: each install's claims keep their order, installs mix arbitrarily.
    # Now and then claims are delivered again: that must change nothing.
    queues = [list(claims) for claims in per_install]
    h = PoolHarness(roundtrip=False)
    applied: list[Claim] = []
    while any(queues):
        ready = [q for q in queues if q]
        queue = ready[data.draw(st.integers(0, len(ready) - 1))]
        applied.append(h.apply(queue.pop(0)))
        if data.draw(st.integers(0, 9)) == 0:
            # A crash: the last few claims are delivered again, in their order.
            for again in applied[-data.draw(st.integers(1, 3)) :]:
                h.apply(again)
    assert h.logical_state() == expected_state
    assert_outputs_follow_state(h)


def assert_outputs_follow_state(h: PoolHarness) -> None:
    """A consumer of the outputs ends with the state: latest snapshot per profile (compacted
    topic), newest decision per segment."""
    latest: dict[str, Any] = {}
    for out in h.outputs:
        if out.topic is OutputTopic.PROFILES:
            latest[out.key] = out.value
    live = {key.split("\x1f", 1)[1] for key, _ in h.tables.profiles.scan()}
    assert {pid for pid, value in latest.items() if value is not None} == live
    for pid in live:
        assert latest[pid] == profile_snapshot(h.tables, PoolId("default"), pid)
    decided: dict[tuple[str, str], tuple[int, str, bool]] = {}
    for d in h.decisions:
        decided[(d.push_registration_id, d.segment)] = (d.pool_seq, d.profile_id, d.forgotten)
    for key, link in h.tables.segments.scan():
        _, prid, segment = key.split("\x1f")
        assert decided[(prid, segment)][1:] == (link.profile_id, link.forgotten)


IDENTITIES = (
    ("email", "a@x.com"),
    ("email", "b@x.com"),
    ("email", "c@x.com"),
    ("phone", "+385911111111"),
    ("phone", "+385922222222"),
    ("ext", "u1"),
    ("ext", "u2"),
)
login = st.tuples(
    st.lists(st.sampled_from(IDENTITIES), min_size=1, max_size=3, unique=True),
    st.integers(0, 30),
    st.booleans(),  # logout afterwards
)
bridges = st.lists(st.lists(login, min_size=1, max_size=3), min_size=3, max_size=6)


def bridge_claims(installs: list[list[tuple[list[tuple[str, str]], int, bool]]]) -> list[Claim]:
    maker = ClaimMaker()
    per_install: list[list[Claim]] = []
    for n, logins in enumerate(installs):
        prid = f"i{n}"
        claims = [maker.install(prid, 0)]
        for ids, tick, logout in logins:
            ext = next((v for k, v in ids if k == "ext"), None)
            emails = [v for k, v in ids if k == "email"]
            phones = [v for k, v in ids if k == "phone"]
            claims.append(maker.personalize(prid, tick * 100, ext, emails, phones))
            if logout:
                claims.append(maker.depersonalize(prid, tick * 100 + 50))
        per_install.append(claims)
    return [c for claims in per_install for c in claims]


@settings(max_examples=200, derandomize=True, deadline=None)
@given(installs=bridges, data=st.data())
def test_merges_and_conflicts_do_not_depend_on_arrival_order(
    installs: list[list[tuple[list[tuple[str, str]], int, bool]]], data: st.DataObject
) -> None:
    claims = bridge_claims(installs)
    expected = in_order(claims, roundtrip=False)
    by_install: dict[str, list[Claim]] = {}
    for claim in claims:
        by_install.setdefault(claim.push_registration_id, []).append(claim)
    queues = list(by_install.values())
    h = PoolHarness(roundtrip=False)
    while any(queues):
        ready = [q for q in queues if q]
        h.apply(ready[data.draw(st.integers(0, len(ready) - 1))].pop(0))
    assert h.logical_state() == expected.logical_state()
    assert_outputs_follow_state(h)
    # Uniqueness: every identity has one owner, and it lists the identity.
    for key, owner in h.tables.identities.scan():
        _, kind, value = key.split("\x1f")
        record = h.tables.profiles.get(f"default\x1f{owner.profile_id}")
        assert record is not None
        assert (
            value
            in {
                "externalUserId": record.external_user_ids,
                "email": record.emails,
                "phone": record.phones,
            }[kind]
        )
