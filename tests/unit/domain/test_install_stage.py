"""The install stage, scenario by scenario (SPEC §4.1, 4.2, 4.5; architecture.md, segments)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from idstream.codecs import event_to_wire
from idstream.domain.config import RuleConfig
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
from idstream.domain.install import apply_decision, apply_event, open_install_tables
from idstream.domain.install_state import InstallRecord, InstallTables, event_wire
from idstream.domain.messages import Claim, LinkDecision, OutputTopic, StageResult
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
    """One install-stage instance over dict tables (values round-tripped like RocksDB)."""

    def __init__(self, rules: RuleConfig = RULES) -> None:
        self.store = DictStore(roundtrip=True)
        self.tables: InstallTables = open_install_tables(self.store)
        self.rules = rules
        self.offset = 0
        self.pool_seq = 0

    def send(self, event: AnyEvent, meta: RecordMeta | None = None) -> StageResult:
        if meta is None:
            self.offset += 1
            meta = RecordMeta("idstream.events", 0, self.offset, event.timestamp)
        return apply_event(self.tables, event, b"raw:" + event.event_id.encode(), meta, self.rules)

    def decide(self, segment: str, profile: str = PERSON, **kw: Any) -> StageResult:
        self.pool_seq += 1
        decision = LinkDecision(PRID, segment, ProfileId(profile), self.pool_seq, **kw)
        return apply_decision(self.tables, decision, self.rules)

    @property
    def install(self) -> InstallRecord:
        rec = self.tables.installs.get(PRID)
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
    result = stage.send(Install(**common("e1", 1000), system_data={"platform": "Android"}))
    anonymous = anonymous_profile_id(PRID, "e1")
    assert resolved(result) == [(anonymous, "e1")]
    value = result.outputs[0].value
    assert value is not None
    assert value["installId"] == PRID and value["profileId"] == anonymous
    assert value["pool"] == "default" and value["segment"] == "e1"
    assert value["systemData"] == {"platform": "Android"}
    (claim,) = claims(result)
    assert claim.event is None  # facts only
    assert claim.seq == 1 and claim.order == (1000, "e1") and claim.pool == PoolId("default")
    assert claim.segment == "e1" and claim.anonymous_profile == anonymous
    assert claim.facts.lifecycle == "anonymous" and claim.facts.push_enabled
    assert claim.facts.system_data == {"platform": "Android"}
    assert claim.raw == b"raw:e1" and claim.meta is not None


def test_events_that_change_no_facts_send_no_claim() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    result = stage.send(Custom(**common("e2", 2000), definition_id="purchase"))
    assert claims(result) == []
    assert resolved(result) == [(anonymous_profile_id(PRID, "e1"), "e2")]


def test_pool_comes_from_the_app_code() -> None:
    stage = Stage(RuleConfig(pools={"app": PoolId("shop")}))
    (claim,) = claims(stage.send(Install(**common("e1", 1))))
    assert claim.pool == "shop"


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


def test_a_repeated_event_id_from_another_offset_is_a_no_op() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    stage.send(Personalize(**common("e2", 2000), user_identity=UserIdentity("u1")))
    before = stage.snapshot()
    again = stage.send(Personalize(**common("e2", 2000), user_identity=UserIdentity("u1")))
    assert again == StageResult()
    assert stage.snapshot() == before


def test_a_crash_redelivery_resends_the_same_outputs() -> None:
    stage = Stage()
    meta = RecordMeta("idstream.events", 3, 77, 1000)
    event = Install(**common("e1", 1000), system_data={"pushRegistrationEnabled": False})
    first = stage.send(event, meta)
    before = stage.snapshot()
    assert stage.send(event, meta) == first
    assert stage.snapshot() == before
    # ... also for a claim carrying its event, and for a dead letter.
    meta2 = RecordMeta("idstream.events", 3, 78, 2000)
    personalize = Personalize(**common("e2", 2000), user_identity=UserIdentity("u1"))
    first = stage.send(personalize, meta2)
    assert stage.send(personalize, meta2) == first
    meta3 = RecordMeta("idstream.events", 3, 79, 3000)
    depersonalize = Depersonalize(**common("e3", 3000))
    stage.send(depersonalize, meta3)
    dropped = Depersonalize(**common("e4", 4000))
    first = stage.send(dropped, RecordMeta("idstream.events", 3, 80, 4000))
    assert dead(first) == ["not_personalized"]
    assert stage.send(dropped, RecordMeta("idstream.events", 3, 80, 4000)) == first


def test_a_duplicate_without_source_is_a_no_op() -> None:
    stage = Stage()
    event = Install(**common("e1", 1000))
    meta = RecordMeta("t", 0, 1, 0)
    stage.send(event, meta)
    assert apply_event(stage.tables, event, b"", None, RULES) == StageResult()


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


def test_lifecycle_anonymous_personalized_depersonalized_uninstalled() -> None:
    stage = Stage()
    seen = []
    events: list[AnyEvent] = [
        Install(**common("e1", 1)),
        Personalize(**common("e2", 2), user_identity=UserIdentity("u1")),
        Depersonalize(**common("e3", 3)),
        Personalize(**common("e4", 4), user_identity=UserIdentity("u2")),
        Uninstall(**common("e5", 5)),
    ]
    for event in events:
        (claim,) = claims(stage.send(event))
        seen.append(claim.facts.lifecycle)
        assert claim.event == (None if isinstance(event, Install) else event)
    assert seen == ["anonymous", "personalized", "depersonalized", "personalized", "uninstalled"]
    assert stage.install.lifecycle == "uninstalled"


def test_depersonalize_of_an_install_not_personalized_is_a_dead_letter() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    result = stage.send(Depersonalize(**common("e2", 2)))
    assert dead(result) == ["not_personalized"] and claims(result) == []
    assert stage.install.lifecycle == "anonymous"


def test_events_stamped_after_the_uninstall_are_dead_letters() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1000)))
    stage.send(Uninstall(**common("e2", 5000)))
    result = stage.send(Custom(**common("e3", 5001), definition_id="x"))
    assert dead(result) == ["install_uninstalled"]
    value = result.outputs[0].value
    assert value is not None and value["originalBase64"] == "cmF3OmUz"  # b"raw:e3"
    assert value["source"]["offset"] == 3
    # Stamped at or before the uninstall: still applies (late data).
    late = stage.send(InstallUpdate(**common("e4", 4000), custom_attributes={"lang": "hr"}))
    assert resolved(late) == [(anonymous_profile_id(PRID, "e1"), "e4")]
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


def test_system_data_and_standard_properties_are_lww_and_change_the_facts() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 100), standard_properties={"osVersion": "13"}))
    result = stage.send(
        InstallUpdate(**common("e2", 300), system_data={"pushRegistrationEnabled": False})
    )
    (claim,) = claims(result)
    assert claim.event is None and claim.facts.push_enabled is False
    assert claim.order == (300, "e2") and claim.seq == 2
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


def test_claim_order_is_monotone_per_install() -> None:
    stage = Stage()
    orders = []
    for eid, ts in [("e1", 100), ("e2", 50), ("e3", 300), ("e4", 200)]:
        event = PersonUpdate(**common(eid, ts), tags_added=("t",))
        orders.append(claims(stage.send(event))[0].order)
    assert orders == [(100, "e1"), (100, "e2"), (300, "e3"), (300, "e4")]
    assert stage.install.claim_seq == 4


# -- segments and held events -----------------------------------------------------------------


def test_events_after_a_personalize_wait_for_the_link_decision() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    result = stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1")))
    (claim,) = claims(result)
    assert claim.segment == "e2" and claim.anonymous_profile == anonymous_profile_id(PRID, "e1")
    assert resolved(result) == []
    assert resolved(stage.send(Custom(**common("e3", 3), definition_id="x"))) == []
    assert resolved(stage.send(AppLaunch(**common("e4", 4)))) == []
    released = stage.decide("e2")
    assert resolved(released) == [(PERSON, "e2"), (PERSON, "e3"), (PERSON, "e4")]
    assert list(stage.tables.held.scan()) == []
    assert resolved(stage.send(Custom(**common("e5", 5), definition_id="x"))) == [(PERSON, "e5")]


def test_a_newer_decision_moves_later_events_and_a_stale_one_is_ignored() -> None:
    stage = Stage()
    stage.send(Personalize(**common("e1", 1), user_identity=UserIdentity("u1")))
    assert resolved(stage.decide("e1", "p_first")) == [("p_first", "e1")]
    stage.decide("e1", "p_survivor")
    stale = LinkDecision(PRID, "e1", ProfileId("p_first"), 1)
    assert apply_decision(stage.tables, stale, RULES) == StageResult()
    assert resolved(stage.send(Custom(**common("e2", 2), definition_id="x"))) == [
        ("p_survivor", "e2")
    ]


def test_a_rejected_personalize_resolves_held_events_to_the_profile_the_pool_names() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1")))
    stage.send(Custom(**common("e3", 3), definition_id="x"))
    anonymous = anonymous_profile_id(PRID, "e1")
    released = stage.decide("e2", anonymous, rejected=RejectReason.IDENTITY_CONFLICT)
    assert resolved(released) == [(anonymous, "e3")]


def test_depersonalize_opens_a_fresh_anonymous_segment() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1")))
    stage.decide("e2")
    result = stage.send(Depersonalize(**common("e3", 3)))
    fresh = anonymous_profile_id(PRID, "e3")
    assert resolved(result) == [(fresh, "e3")]
    (claim,) = claims(result)
    assert claim.segment == "e3" and claim.anonymous_profile == fresh
    assert resolved(stage.send(Custom(**common("e4", 4), definition_id="x"))) == [(fresh, "e4")]


def test_a_forgotten_decision_names_the_fresh_profile_and_opens_no_segment() -> None:
    """A forget from elsewhere: the pool names the install's fresh anonymous profile for its
    current segment; held and later events go there, the install keeps its own lifecycle."""
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1")))
    stage.send(Custom(**common("e3", 3), definition_id="x"))  # held
    before = stage.install
    fresh = anonymous_profile_id(PRID, "elsewhere-forget")
    released = stage.decide("e2", fresh, forgotten=True)
    assert resolved(released) == [(fresh, "e2"), (fresh, "e3")]
    assert stage.install == before  # no segment opened, lifecycle as its own events made it
    result = stage.send(Custom(**common("e4", 4), definition_id="x"))
    assert resolved(result) == [(fresh, "e4")]
    assert claims(result) == []  # nothing the pool does not know changed


def test_forgetting_the_installs_own_person_opens_a_fresh_segment_at_once() -> None:
    stage = Stage()
    stage.send(Personalize(**common("e1", 1), user_identity=UserIdentity("u1")))
    stage.decide("e1")
    result = stage.send(Forget(**common("e2", 2)))
    assert resolved(result) == [(anonymous_profile_id(PRID, "e2"), "e2")]
    assert claims(result)[0].event is not None
    # The pool's forgotten decision for the old segment changes nothing more.
    stage.decide("e1", forgotten=True)
    assert resolved(stage.send(Custom(**common("e3", 3), definition_id="x"))) == [
        (anonymous_profile_id(PRID, "e2"), "e3")
    ]


def test_a_decision_for_an_unknown_install_or_segment_is_ignored() -> None:
    stage = Stage()
    assert stage.decide("nope") == StageResult()
    stage.send(Install(**common("e1", 1)))
    assert stage.decide("nope") == StageResult()


def test_a_redelivered_decision_resends_what_it_released() -> None:
    stage = Stage()
    stage.send(Install(**common("e1", 1)))
    stage.send(Personalize(**common("e2", 2), user_identity=UserIdentity("u1")))
    stage.send(Custom(**common("e3", 3), definition_id="x"))
    decision = LinkDecision(PRID, "e2", PERSON, 7)
    first = apply_decision(stage.tables, decision, RULES)
    assert resolved(first) == [(PERSON, "e2"), (PERSON, "e3")]
    before = stage.snapshot()
    assert apply_decision(stage.tables, decision, RULES) == first
    assert stage.snapshot() == before
