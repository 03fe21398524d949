"""The install stage, scenario by scenario (SPEC §4.1, 4.2, 4.5; architecture.md, segments)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from idstream.codecs import event_to_wire
from idstream.domain.config import PersonLimits, RuleConfig
from idstream.domain.events import (
    AnyEvent,
    AppCode,
    AppLaunch,
    Custom,
    Depersonalize,
    EventId,
    Forget,
    IdentityKind,
    IdentityReplacement,
    Install,
    InstallUpdate,
    Personalize,
    PersonAttributes,
    PersonUpdate,
    PoolId,
    ProfileId,
    PushRegistrationId,
    RecordMeta,
    Uninstall,
    UserIdentity,
)
from idstream.domain.ids import anonymous_profile_id
from idstream.domain.install import (
    apply_decision,
    apply_event,
    effective_time,
    open_install_tables,
    record_position,
    sweep_seen,
)
from idstream.domain.install_state import InstallRecord, InstallTables, event_wire
from idstream.domain.keys import key, parts
from idstream.domain.messages import NOTE_DUPLICATE, Claim, LinkDecision, OutputTopic, StageResult
from idstream.domain.reasons import RejectReason
from idstream.storage.memory import DictStore

PRID = PushRegistrationId("prid-1")
RULES = RuleConfig()
PERSON = ProfileId("p_person")
_ids = itertools.count(1)


def common(eid: str | None, ts: int, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": EventId(eid or f"e{next(_ids):04d}"),
        "timestamp": ts,
        "app_code": AppCode("app"),
        "push_registration_id": PRID,
        **kw,
    }


class Stage:
    """One install-stage instance over dict tables (values round-tripped like RocksDB).

    Records go to input partition 0 one after the other; a record's Kafka time is its event
    time unless given.
    """

    def __init__(self, rules: RuleConfig = RULES) -> None:
        self.store = DictStore(roundtrip=True)
        self.tables: InstallTables = open_install_tables(self.store)
        self.rules = rules
        self.offset = -1
        self.pool_seq = 0
        self.positions: dict[str, tuple[int, int, int]] = {}  # eventId -> log position
        self.seqs: dict[str, int] = {}  # eventId -> the seq of the claim it sent

    def send(self, event: AnyEvent, record_time: int | None = None) -> StageResult:
        self.offset += 1
        at = event.timestamp if record_time is None else record_time
        meta = RecordMeta("idstream.events", 0, self.offset, at)
        time = effective_time(self.tables, meta)
        assert time is not None
        self.positions[event.event_id] = (time, 0, self.offset)
        raw = b"raw:" + event.event_id.encode()
        result = apply_event(self.tables, event, raw, meta, time, self.rules)
        record_position(self.tables, meta, time)
        for claim in claims(result):
            self.seqs[event.event_id] = claim.seq
        return result

    def anonymous(self, event_id: str) -> str:
        """The anonymous profile the event with this id opened (its claim's)."""
        return anonymous_profile_id(PRID, self.seqs[event_id])

    def decide(
        self, profile: str = PERSON, *, answers: int = 0, segment: str | None = None, **kw: Any
    ) -> StageResult:
        self.pool_seq += 1
        segment = self.install.segment if segment is None else segment
        decision = LinkDecision(PRID, segment, profile, self.pool_seq, answers=answers, **kw)
        return apply_decision(self.tables, decision)

    @property
    def install(self) -> InstallRecord:
        rec = self.tables.installs.get(key(PRID))
        assert rec is not None
        return rec

    def snapshot(self) -> dict[str, list[tuple[str, Any]]]:
        return {name: list(table.scan()) for name, table in sorted(self.store.tables.items())}


def resolved(result: StageResult) -> list[tuple[str, str]]:
    """(profile id, eventId) of each resolved event."""
    return [
        (o.key, o.value["eventId"])
        for o in result.outputs
        if o.topic is OutputTopic.RESOLVED_EVENTS and o.value is not None
    ]


def dead(result: StageResult) -> list[str]:
    return [
        o.value["reason"]
        for o in result.outputs
        if o.topic is OutputTopic.DEAD_LETTER and o.value is not None
    ]


def claims(result: StageResult) -> list[Claim]:
    return [m for m in result.messages if isinstance(m, Claim)]


# -- first event, resolved events -------------------------------------------------------


def test_first_event_opens_an_anonymous_segment_and_tells_the_pool() -> None:
    stage = Stage()
    result = stage.send(
        Install(**common("e1", 1000), system_data={"platform": "Android"}), record_time=1500
    )
    anonymous = stage.anonymous("e1")
    assert resolved(result) == [(anonymous, "e1")]
    value = result.outputs[0].value
    assert value is not None
    assert value["installId"] == PRID and value["profileId"] == anonymous
    assert value["pool"] == "default" and value["systemData"] == {"platform": "Android"}
    # Resolved when the input log was at 1500: the record's effective time.
    assert value["resolvedAt"] == 1500
    assert value["source"] == {"topic": "idstream.events", "partition": 0, "offset": 0}
    (claim,) = claims(result)
    assert claim.kind == "install" and not claim.answered  # facts only
    assert claim.seq == 1 and claim.position == (1500, 0, 0) and claim.pool == "default"
    assert claim.anonymous_profile == anonymous and claim.facts.push_enabled
    assert claim.facts.system_data == {"platform": "Android"}
    assert claim.raw == b"" and claim.meta is None  # a facts claim never goes to the dead letter


def test_events_that_change_no_facts_send_no_claim() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    result = stage.send(Custom(**common("e2", 2000), definition_id="purchase"))
    assert claims(result) == []
    assert resolved(result) == [(stage.anonymous("e1"), "e2")]


def test_pool_comes_from_the_app_code() -> None:
    stage = Stage(RuleConfig(pools={"app": PoolId("shop")}))
    (claim,) = claims(stage.send(Install(**common("e1", 1))))
    assert claim.pool == "shop"


def test_the_effective_time_is_the_running_maximum_of_record_times() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)), record_time=5_000)
    stage.send(Custom(**common("e2", 2), definition_id="x"), record_time=4_000)
    assert stage.positions["e2"] == (5_000, 0, 1)
    # A record at or before the partition's last applied offset is a redelivery.
    assert effective_time(stage.tables, RecordMeta("idstream.events", 0, 1, 9_999)) is None
    assert effective_time(stage.tables, RecordMeta("idstream.events", 0, 2, 4_500)) == 5_000


def test_resolved_event_wire_shape_matches_the_codec() -> None:
    events: list[AnyEvent] = [
        Install(**common("w1", 1), standard_properties={"osVersion": "14"}, system_data={"a": 1}),
        AppLaunch(**common("w2", 2)),
        InstallUpdate(
            **common("w3", 3),
            system_data={"x": True},
            custom_attributes={"k": None},
            primary_device=True,
        ),
        Personalize(
            **common("w4", 4),
            user_identity=UserIdentity("u", ("a@b.c",), ("+1",)),
            user_attributes=PersonAttributes({"firstName": "A"}, {"vip": True}),
        ),
        Depersonalize(**common("w5", 5)),
        PersonUpdate(
            **common("w6", 6),
            attributes=PersonAttributes({"city": "X"}),
            tags_added=("t",),
            tags_removed=("u",),
            identities_added=UserIdentity(emails=("x@y.z",)),
            identities_removed=UserIdentity(phones=("+2",)),
            identities_replaced=(IdentityReplacement(IdentityKind.EMAIL, "a@b.c", "d@e.f"),),
        ),
        Custom(**common("w7", 7), definition_id="d", properties={"p": 1.5}),
        Uninstall(**common("w8", 8)),
        Forget(**common("w9", 9), user_identity=UserIdentity("u")),
        Forget(**common("w10", 10)),
    ]
    for event in events:
        assert event_wire(event) == event_to_wire(event)


# -- idempotency --------------------------------------------------------------------------


def test_a_repeated_event_id_inside_the_window_is_skipped() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    stage.send(Personalize(**common("e2", 2000), user_identity=UserIdentity("u1")))
    before = stage.tables.installs.get(key(PRID))
    again = stage.send(Personalize(**common("e2", 2000), user_identity=UserIdentity("u1")))
    assert again == StageResult() and again.notes == (NOTE_DUPLICATE,)
    assert again.skipped == ((NOTE_DUPLICATE, 0, 2),)
    assert stage.tables.installs.get(key(PRID)) == before


def test_an_event_id_is_remembered_for_the_window_of_record_time_only() -> None:
    stage = Stage(RuleConfig(dedup_window_ms=10_000))
    stage.send(Custom(**common("e1", 1), definition_id="x"), record_time=1_000)
    anonymous = stage.anonymous("e1")
    assert stage.send(Custom(**common("e1", 1), definition_id="x"), record_time=11_000).notes
    # Past the window, the same eventId is a new event.
    later = stage.send(Custom(**common("e1", 1), definition_id="x"), record_time=11_001)
    assert resolved(later) == [(anonymous, "e1")]


def test_sweeping_the_seen_event_ids_never_changes_a_decision() -> None:
    # Entries past the window are deleted when the driver sweeps; until then they are still
    # there, but too old to count.
    swept, kept = (
        Stage(RuleConfig(dedup_window_ms=10_000)),
        Stage(RuleConfig(dedup_window_ms=10_000)),
    )
    for stage in (swept, kept):
        stage.send(Custom(**common("s1", 1), definition_id="x"), record_time=1_000)
        stage.send(Custom(**common("s2", 1), definition_id="x"), record_time=11_000)
        stage.send(Custom(**common("s3", 1), definition_id="x"), record_time=15_000)
    # Buckets are one window wide; a sweep keeps the bucket of its time and the one before.
    assert sweep_seen(swept.tables, 0, 21_000, 10_000) == 1
    assert [parts(k)[2:] for k, _ in swept.tables.seen.scan()] == [[PRID, "s2"], [PRID, "s3"]]
    for stage in (swept, kept):
        # s1 was swept, s2 is kept but past the window: both are new events again.
        assert resolved(stage.send(Custom(**common("s1", 1), definition_id="x"), 21_500))
        assert resolved(stage.send(Custom(**common("s2", 1), definition_id="x"), 21_500))
        # s3, in the bucket before, is inside the window.
        assert not resolved(stage.send(Custom(**common("s3", 1), definition_id="x"), 21_500))


# -- 30-second launch dedup --------------------------------------------------------------


def launches(stage: Stage, seconds: list[float]) -> list[float]:
    """Send appLaunches at these offsets (s); return those that were logged."""
    logged = []
    for s in seconds:
        eid = f"launch@{s}"
        if resolved(stage.send(AppLaunch(**common(eid, 1_000_000 + round(s * 1000))))):
            logged.append(s)
    return logged


def test_launch_dedup_spec_example() -> None:
    stage = Stage()
    got = launches(stage, [0, 29.999, 30.000, 30.001, 60.000, 60.002])
    assert got == [0, 30.001, 60.002]
    assert stage.install.dropped_launches == 3
    assert stage.install.last_launch == 1_060_002


@pytest.mark.parametrize(
    ("seconds", "logged"),
    [
        ([30.001, 0], [30.001, 0]),  # more than 30 s before the latest: logged
        ([30.000, 0], [30.0]),  # exactly 30 s before: dropped
        ([29.999, 0], [29.999]),
        ([60.0, 0, 45], [60.0, 0]),  # latest logged is the largest timestamp: 60
        # Only the latest logged launch (largest timestamp) counts, in either direction.
        ([60.0, 0, 29.0], [60.0, 0, 29.0]),
        ([0, 90, 70], [0, 90]),
        ([0, 90, 60.0], [0, 90]),
        ([0, 90, 59.999], [0, 90, 59.999]),
        ([0, 90, 120.0], [0, 90]),
    ],
)
def test_launch_dedup_out_of_order(seconds: list[float], logged: list[float]) -> None:
    assert launches(Stage(), seconds) == logged


def test_launch_dedup_window_is_configurable() -> None:
    assert launches(Stage(RuleConfig(launch_dedup_ms=5_000)), [0, 5, 5.001, 9]) == [0, 5.001]


def test_a_dropped_launch_changes_nothing_but_the_counter() -> None:
    stage = Stage()
    stage.send(AppLaunch(**common("l1", 0), standard_properties={"osVersion": "1"}))
    before = stage.install
    result = stage.send(AppLaunch(**common("l2", 10), standard_properties={"osVersion": "2"}))
    assert result == StageResult()
    assert stage.install == InstallRecord(
        **{**_fields(before), "dropped_launches": before.dropped_launches + 1}
    )
    # A duplicate of the dropped launch is not counted twice.
    stage.send(AppLaunch(**common("l2", 10)))
    assert stage.install.dropped_launches == 1


def _fields(rec: InstallRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in rec.__dataclass_fields__}


# -- lifecycle ------------------------------------------------------------------------------


def test_identity_and_lifecycle_events_are_claims_the_pool_answers() -> None:
    stage = Stage()
    events: list[AnyEvent] = [
        Personalize(**common("e2", 2), user_identity=UserIdentity("u1")),
        Depersonalize(**common("e3", 3)),
        PersonUpdate(**common("e4", 4), tags_added=("t",)),
        Forget(**common("e5", 5)),
        Uninstall(**common("e6", 6)),
    ]
    stage.send(Install(**common("e1", 1)))
    for n, event in enumerate(events, start=2):
        (claim,) = claims(stage.send(event))
        assert claim.answered and claim.kind == event.type.value and claim.seq == n
        assert claim.raw == b"raw:" + event.event_id.encode() and claim.meta is not None
    assert stage.install.awaiting == 6 and stage.install.answered == 0


def test_events_stamped_after_the_uninstall_are_dead_letters() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    stage.send(Uninstall(**common("e2", 5000)))
    result = stage.send(Custom(**common("e3", 5001), definition_id="x"))
    assert dead(result) == ["install_uninstalled"]
    value = result.outputs[0].value
    assert value is not None and value["originalBase64"] == "cmF3OmUz"  # b"raw:e3"
    assert value["source"]["offset"] == 2
    # Stamped at or before the uninstall: still applies (late data).
    stage.decide(stage.anonymous("e1"), answers=2)  # the pool's answer to the uninstall
    late = stage.send(InstallUpdate(**common("e4", 4000), custom_attributes={"lang": "hr"}))
    assert resolved(late) == [(stage.anonymous("e1"), "e4")]
    assert stage.install.custom_attributes["lang"].value == "hr"
    assert resolved(stage.send(Custom(**common("e5", 5000), definition_id="x")))


def test_an_earlier_stamped_uninstall_moves_the_cutoff_back() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    stage.send(Uninstall(**common("e2", 5000)))
    stage.send(Uninstall(**common("e3", 3000)))
    assert dead(stage.send(Custom(**common("e4", 4000), definition_id="x")))


# -- install data: last writer wins ---------------------------------------------------------


def test_install_custom_attributes_are_lww_per_key_and_null_unsets() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    stage.send(InstallUpdate(**common("e2", 300), custom_attributes={"a": 1, "b": "x"}))
    stage.send(InstallUpdate(**common("e3", 200), custom_attributes={"a": 2, "c": True}))
    stage.send(InstallUpdate(**common("e4", 400), custom_attributes={"b": None}))
    attrs = {k: v.value for k, v in stage.install.custom_attributes.items()}
    assert attrs == {"a": 1, "b": None, "c": True}
    # An older write cannot resurrect an unset value.
    stage.send(InstallUpdate(**common("e5", 350), custom_attributes={"b": "old"}))
    assert stage.install.custom_attributes["b"].value is None
    # Ties on timestamp: the larger eventId wins, whatever the arrival order.
    stage.send(InstallUpdate(**common("e7", 500), custom_attributes={"t": "seven"}))
    stage.send(InstallUpdate(**common("e6", 500), custom_attributes={"t": "six"}))
    assert stage.install.custom_attributes["t"].value == "seven"


def test_install_custom_attributes_are_capped_per_install() -> None:
    """An SDK that writes a new name per event cannot grow the install without end: names
    beyond PersonLimits.install_custom_attributes are ignored, known ones still change."""
    stage = Stage(RuleConfig(limits=PersonLimits(install_custom_attributes=2)))
    stage.send(Install(**common("e1", 1)))
    stage.send(InstallUpdate(**common("e2", 2), custom_attributes={"a": 1, "b": 1, "c": 1}))
    stage.send(InstallUpdate(**common("e3", 3), custom_attributes={"d": 1, "a": 2}))
    attrs = {k: v.value for k, v in stage.install.custom_attributes.items()}
    assert attrs == {"a": 2, "b": 1}
    # Unsetting a name frees its slot.
    stage.send(InstallUpdate(**common("e4", 4), custom_attributes={"b": None}))
    stage.send(InstallUpdate(**common("e5", 5), custom_attributes={"d": "now"}))
    attrs = {k: v.value for k, v in stage.install.custom_attributes.items() if v.value}
    assert attrs == {"a": 2, "d": "now"}


def test_system_data_and_standard_properties_are_lww_and_change_the_facts() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 100), standard_properties={"osVersion": "13"}))
    result = stage.send(
        InstallUpdate(**common("e2", 300), system_data={"pushRegistrationEnabled": False})
    )
    (claim,) = claims(result)
    assert not claim.answered and claim.facts.push_enabled is False
    assert claim.seq == 2
    # An older stamp loses: no change, no claim.
    result = stage.send(
        InstallUpdate(**common("e3", 200), system_data={"pushRegistrationEnabled": True})
    )
    assert claims(result) == []
    result = stage.send(AppLaunch(**common("e4", 400), standard_properties={"osVersion": "14"}))
    (claim,) = claims(result)
    assert claim.facts.system_data == {"osVersion": "14", "pushRegistrationEnabled": False}
    result = stage.send(AppLaunch(**common("e5", 50), standard_properties={"osVersion": "12"}))
    assert claims(result) == [] and stage.install.system_data["osVersion"].value == "14"


def test_primary_device_is_lww_and_a_fact() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    (claim,) = claims(stage.send(InstallUpdate(**common("e2", 20), primary_device=True)))
    assert claim.facts.primary_device is True
    assert claims(stage.send(InstallUpdate(**common("e3", 10), primary_device=False))) == []
    (claim,) = claims(stage.send(InstallUpdate(**common("e4", 30), primary_device=False)))
    assert claim.facts.primary_device is False


def test_install_custom_attributes_are_facts_the_pool_gets() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    (claim,) = claims(stage.send(InstallUpdate(**common("e2", 2), custom_attributes={"a": 1})))
    assert claim.facts.custom_attributes == {"a": 1}
    (claim,) = claims(stage.send(InstallUpdate(**common("e3", 3), custom_attributes={"a": None})))
    assert claim.facts.custom_attributes == {}


# -- held outputs and the pool's answers --------------------------------------------------


def test_events_after_a_personalize_wait_for_the_answer() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    result = stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1")))
    (claim,) = claims(result)
    assert resolved(result) == []
    assert resolved(stage.send(Custom(**common("e3", 3), definition_id="x"))) == []
    assert resolved(stage.send(AppLaunch(**common("e4", 4)))) == []
    released = stage.decide(answers=claim.seq, segment="e2")
    assert resolved(released) == [(PERSON, "e2"), (PERSON, "e3"), (PERSON, "e4")]
    assert list(stage.tables.held.scan()) == []
    assert stage.install.held_next == 0  # the held counter starts over when nothing waits
    assert resolved(stage.send(Custom(**common("e5", 5), definition_id="x"))) == [(PERSON, "e5")]


def test_an_answer_releases_only_up_to_the_next_claim_still_waiting() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    first = claims(stage.send(PersonUpdate(**common("e2", 2), tags_added=("t",))))[0]
    stage.send(Custom(**common("e3", 3), definition_id="x"))
    stage.send(Personalize(**common("e4", 4), user_identity=UserIdentity("u1")))
    stage.send(Custom(**common("e5", 5), definition_id="x"))
    anonymous = stage.anonymous("e1")
    assert resolved(stage.decide(anonymous, answers=first.seq)) == [
        (anonymous, "e2"),
        (anonymous, "e3"),
    ]
    assert resolved(stage.decide(answers=first.seq + 1, segment="e4")) == [
        (PERSON, "e4"),
        (PERSON, "e5"),
    ]


def test_a_rejected_claim_has_no_resolved_event_and_releases_the_rest() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    (claim,) = claims(stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1"))))
    stage.send(Custom(**common("e3", 3), definition_id="x"))
    anonymous = stage.anonymous("e1")
    released = stage.decide(
        anonymous, answers=claim.seq, segment="e1", rejected=RejectReason.IDENTITY_CONFLICT
    )
    # The pool sent the personalize to the dead letter: one outcome, not two.
    assert resolved(released) == [(anonymous, "e3")]
    assert stage.install.segment == "e1"


def test_a_claim_a_rule_dropped_is_a_counted_skip() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    (claim,) = claims(stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u"))))
    released = stage.decide(stage.anonymous("e1"), answers=claim.seq, skipped=True)
    assert resolved(released) == []
    assert released.skipped == (("forgotten_person", 0, 1),)


def test_a_decision_another_install_caused_moves_later_events() -> None:
    stage = Stage()
    (claim,) = claims(stage.send(Personalize(**common("e1", 1), user_identity=UserIdentity("u1"))))
    assert resolved(stage.decide("p_first", answers=claim.seq, segment="e1")) == [("p_first", "e1")]
    # A merge into an older person: the install's segment moves, nothing is released.
    assert stage.decide("p_survivor", segment="e1") == StageResult()
    # A decision for an older segment, or already applied, changes nothing.
    stage.decide("p_other", segment="e0")
    stale = LinkDecision(PRID, "e1", "p_first", 1)
    assert apply_decision(stage.tables, stale) == StageResult()
    assert resolved(stage.send(Custom(**common("e2", 2), definition_id="x"))) == [
        ("p_survivor", "e2")
    ]


def test_depersonalize_moves_to_the_anonymous_profile_the_pool_answers() -> None:
    stage = Stage()
    (login,) = claims(stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u"))))
    stage.decide(answers=login.seq, segment="e2")
    result = stage.send(Depersonalize(**common("e3", 3)))
    (claim,) = claims(result)
    fresh = stage.anonymous("e3")
    assert claim.anonymous_profile == fresh and resolved(result) == []
    assert resolved(stage.decide(fresh, answers=claim.seq, segment="e3")) == [(fresh, "e3")]
    assert resolved(stage.send(Custom(**common("e4", 4), definition_id="x"))) == [(fresh, "e4")]


def test_a_forget_publishes_no_identity() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    (claim,) = claims(stage.send(Forget(**common("e2", 2), user_identity=UserIdentity("u1"))))
    [released] = stage.decide(stage.anonymous("e1"), answers=claim.seq).outputs
    assert released.value is not None and "userIdentity" not in released.value


def test_a_decision_for_an_unknown_install_is_ignored() -> None:
    stage = Stage()
    decision = LinkDecision(PRID, "nope", PERSON, 1)
    assert apply_decision(stage.tables, decision) == StageResult()
