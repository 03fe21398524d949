"""Pool stage in input-log order: the watermark, redelivery, convergence (SPEC §5).

A claim at (effective time T, partition p, offset o) is applied once every other partition has
passed it; so claims are applied in (T, p, o) order whatever order they arrive in, and device
clocks never decide between installs.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.domain.pool_harness import ClaimMaker, PoolHarness, identity

from idstream.domain.events import IdentityKind
from idstream.domain.keys import parts
from idstream.domain.messages import Claim, Heartbeat, OutputTopic
from idstream.domain.pool import DIGEST_EXCLUDED, POOL_TABLE_TYPES, profile_snapshot

EMAIL = IdentityKind.EMAIL


def in_log_order(
    messages: list[Claim | Heartbeat], sources: int, *, roundtrip: bool = True
) -> PoolHarness:
    """The pool as it is when every message arrives in log order."""
    h = PoolHarness(roundtrip=roundtrip, sources=sources)
    for message in sorted(messages, key=_position):
        h.apply(message)
    return h


def _position(message: Claim | Heartbeat) -> tuple[int, int, int]:
    if isinstance(message, Claim):
        return message.position
    return (message.time, message.source, message.offset)


def test_tables_and_digest_exclusions_are_declared() -> None:
    h = PoolHarness()
    assert set(h.store.tables) == set(POOL_TABLE_TYPES)
    assert set(POOL_TABLE_TYPES) > DIGEST_EXCLUDED
    assert {"pool_profiles", "pool_identities", "pool_forgotten"}.isdisjoint(DIGEST_EXCLUDED)


def test_a_claim_waits_until_every_other_partition_has_passed_it() -> None:
    maker = ClaimMaker()
    a0 = maker.install("A", 1_000, source=0)
    b0 = maker.install("B", 1_000, source=1)
    first = maker.personalize("A", 2_000, None, ["j@x.com"])  # logged first, on partition 0
    second = maker.personalize("B", 2_000, None, ["j@x.com"])  # logged next, on partition 1
    h = PoolHarness(sources=2)
    for claim in (b0, second):  # partition 1 arrives first
        h.apply(claim)
    assert h.outputs == [] and h.persons() == []  # partition 0 has said nothing yet
    h.apply(a0)
    assert h.persons() == []  # partition 0 is at a0: B's install is released, not `second`
    h.apply(first)
    # `first` is older in the log than `second`: it creates the person...
    assert h.persons() == [h.person_id(first)]
    assert h.profile_of("B") != h.person_id(first)  # `second` waits for partition 0
    tick = maker.tick(0)
    h.apply(tick)
    # ...and `second` links to it.
    assert h.profile_of("A") == h.profile_of("B") == h.person_id(first)
    assert h.logical_state() == in_log_order([a0, b0, first, second, tick], 2).logical_state()


def test_device_clocks_never_decide_between_installs() -> None:
    # B's device clock is years behind: its personalize is stamped before A's but logged
    # after it. The log decides: A's person is created first and B links to it.
    maker = ClaimMaker()
    claims = [maker.install("A", 1_000, source=0), maker.install("B", 1_000, source=1)]
    a = maker.personalize("A", 1_700_000_000_000, None, ["j@x.com"])
    b = maker.personalize("B", 1_000_000_000_000, None, ["j@x.com"])
    h = in_log_order([*claims, a, b, maker.tick(0), maker.tick(1)], 2)
    assert h.persons() == [h.person_id(a)]
    assert h.profile_of("B") == h.person_id(a)


def test_a_tick_releases_what_a_silent_partition_held_back() -> None:
    maker = ClaimMaker()
    h = PoolHarness(sources=2)
    h.apply(maker.install("A", 1_000, source=0))
    login = h.apply(maker.personalize("A", 2_000, "u1"))
    assert h.persons() == []  # partition 1 is silent
    h.apply(maker.tick(1))
    assert isinstance(login, Claim)
    assert h.persons() == [h.person_id(login)]


def test_a_redelivered_claim_or_heartbeat_changes_nothing() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    login = h.personalize("A", 2_000, "u1")
    before = h.logical_state()
    h.apply(login)  # a crash: the same record again; its outputs were delivered already
    assert h.last_outputs == () and h.last_decisions == ()
    h.apply(Heartbeat(login.pool, 0, login.position[0], login.position[2]))
    assert h.last_outputs == () and h.last_decisions == ()
    assert h.logical_state() == before


def test_a_rejection_goes_to_the_dead_letter_with_its_source() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.personalize("A", 2_000, "null")
    assert h.dead_letters() == ["blocked_identity"]
    [record] = [o for o in h.last_outputs if o.topic is OutputTopic.DEAD_LETTER]
    assert record.value is not None and record.value["source"]["topic"] == "idstream.events"


def test_outputs_are_only_differences() -> None:
    h = PoolHarness()
    h.install("A", 1_000)
    h.personalize("A", 2_000, "u1")
    h.update("A", 3_000, attributes={"city": "Split"})
    update = h.update("A", 2_500, attributes={"city": "Old"})  # loses: changes nothing
    assert h.last_outputs == ()
    # Only the answer, which releases the install's held outputs.
    assert [(d.answers, d.rejected) for d in h.last_decisions] == [(update.seq, None)]


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


def make_claims(
    histories: list[list[tuple[tuple[Any, ...], int]]], sources: int, order: list[int]
) -> list[list[Claim | Heartbeat]]:
    """Per input partition, its claims in log order, then a tick: install n's events are on
    partition n % sources, and installs take turns in the log as `order` says."""
    maker = ClaimMaker()
    steps = {n: list(history) for n, history in enumerate(histories)}
    log: list[Claim | Heartbeat] = [maker.install(f"i{n}", 0, source=n % sources) for n in steps]
    turns = [n for n in order if n in steps] + [n for n in steps for _ in steps[n]]
    for n in turns:
        if not steps[n]:
            continue
        claim = _step(maker, f"i{n}", *steps[n].pop(0))
        if claim is not None:
            log.append(claim)
        else:
            steps[n].clear()
    log.extend(maker.tick(source) for source in range(sources))
    per_source: list[list[Claim | Heartbeat]] = [[] for _ in range(sources)]
    for message in log:
        per_source[_position(message)[1]].append(message)
    return per_source


def _step(maker: ClaimMaker, prid: str, step: tuple[Any, ...], tick: int) -> Claim | None:
    ts = tick * 100
    name = step[0]
    if name == "personalize":
        _, ext, emails, phones, force = step
        return maker.personalize(prid, ts, ext, emails, phones, force=force)
    if name == "depersonalize":
        return maker.depersonalize(prid, ts)
    if name == "update":
        _, city, email = step
        return maker.update(prid, ts, attributes={"city": city}, added=identity(None, [email]))
    if name == "tags":
        _, tag, add = step
        added, removed = ([tag], []) if add else ([], [tag])
        return maker.update(prid, ts, tags_added=added, tags_removed=removed)
    if name == "facts":
        return maker.facts(prid, ts, push=step[1])
    if name == "uninstall":
        return maker.uninstall(prid, ts)
    if name == "forget":
        return maker.forget(prid, ts)
    return maker.forget(prid, ts, identity(None, [step[1]]))


def by_key(h: PoolHarness) -> dict[tuple[str, str], list[Any]]:
    """Every output, per (topic, key), in order: what a consumer of one key reads."""
    out: dict[tuple[str, str], list[Any]] = {}
    for o in h.outputs:
        out.setdefault((o.topic.value, o.key), []).append(o.value)
    return out


@settings(max_examples=500, derandomize=True, deadline=None)
@given(
    histories=history,
    sources=st.integers(1, 3),
    order=st.lists(st.integers(0, 3), max_size=30),
    data=st.data(),
)
def test_any_interleaving_of_partitions_gives_the_same_state_and_outputs(
    histories: list[list[tuple[tuple[Any, ...], int]]],
    sources: int,
    order: list[int],
    data: st.DataObject,
) -> None:
    per_source = make_claims(histories, sources, order)
    expected = in_log_order([m for q in per_source for m in q], sources, roundtrip=False)
    # Interleave: each partition's messages keep their order, partitions mix arbitrarily.
    # Now and then messages are delivered again: that must change nothing.
    queues = [list(q) for q in per_source]
    h = PoolHarness(roundtrip=False, sources=sources)
    delivered: list[Claim | Heartbeat] = []
    while any(queues):
        ready = [q for q in queues if q]
        queue = ready[data.draw(st.integers(0, len(ready) - 1))]
        delivered.append(h.apply(queue.pop(0)))
        if data.draw(st.integers(0, 9)) == 0:
            # A crash: the last few messages are delivered again, in their order.
            for again in delivered[-data.draw(st.integers(1, 3)) :]:
                h.apply(again)
    assert h.logical_state() == expected.logical_state()
    assert by_key(h) == by_key(expected)
    assert h.decisions == expected.decisions
    assert list(h.tables.pending.scan()) == []
    assert_outputs_follow_state(h)


def assert_outputs_follow_state(h: PoolHarness) -> None:
    """A consumer of the outputs ends with the state: latest snapshot per profile (compacted
    topic); an install's newest decision names its profile."""
    latest: dict[str, Any] = {}
    for out in h.outputs:
        if out.topic is OutputTopic.PROFILES:
            latest[out.key] = out.value
    live = {parts(key)[1] for key, _ in h.tables.profiles.scan()}
    assert {pid for pid, value in latest.items() if value is not None} == live
    for pid in live:
        assert latest[pid] == profile_snapshot(h.tables, "default", pid)
    decided: dict[str, str] = {}
    for d in h.decisions:
        if d.profile_id:
            decided[d.push_registration_id] = d.profile_id
    for key, install in h.tables.installs.scan():
        prid = parts(key)[1]
        if prid in decided:
            assert decided[prid] == install.profile_id


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


@settings(max_examples=200, derandomize=True, deadline=None)
@given(installs=bridges, data=st.data())
def test_merges_and_conflicts_keep_identities_unique(
    installs: list[list[tuple[list[tuple[str, str]], int, bool]]], data: st.DataObject
) -> None:
    maker = ClaimMaker()
    queues: list[list[Claim | Heartbeat]] = [[], []]
    for n, logins in enumerate(installs):
        prid = f"i{n}"
        queues[n % 2].append(maker.install(prid, 0, source=n % 2))
        for ids, tick, logout in logins:
            ext = next((v for k, v in ids if k == "ext"), None)
            emails = [v for k, v in ids if k == "email"]
            phones = [v for k, v in ids if k == "phone"]
            queues[n % 2].append(maker.personalize(prid, tick * 100, ext, emails, phones))
            if logout:
                queues[n % 2].append(maker.depersonalize(prid, tick * 100 + 50))
    for source in (0, 1):
        queues[source].append(maker.tick(source))
    h = PoolHarness(roundtrip=False, sources=2)
    while any(queues):
        ready = [q for q in queues if q]
        h.apply(ready[data.draw(st.integers(0, len(ready) - 1))].pop(0))
    assert_outputs_follow_state(h)
    # Uniqueness: every identity has one owner, and it lists the identity.
    listed = 0
    for key, record in h.tables.profiles.scan():
        pid = parts(key)[1]
        for kind, values in (
            (IdentityKind.EXTERNAL_USER_ID, record.external_user_ids),
            (IdentityKind.EMAIL, record.emails),
            (IdentityKind.PHONE, record.phones),
        ):
            for value in values:
                listed += 1
                assert h.owner(kind, value) == pid
    assert listed == len(list(h.tables.identities.scan()))
