"""The install stage (keyed by pushRegistrationId): lifecycle, system data, install custom
attributes, launch dedup, idempotency, segments; sends Claims to the pool and resolved events.

Domain layer: plain functions over state tables, no I/O, no clock. Rules: SPEC §4.1, 4.2, 4.5;
segments and held events: docs/architecture.md. Tables and records: install_state.py.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from idstream.domain.config import RuleConfig
from idstream.domain.events import (
    AnyEvent,
    AppLaunch,
    Depersonalize,
    Forget,
    Install,
    InstallUpdate,
    Personalize,
    PersonUpdate,
    PoolId,
    ProfileId,
    PushRegistrationId,
    RecordMeta,
    Uninstall,
)
from idstream.domain.ids import anonymous_profile_id
from idstream.domain.install_state import (
    DIGEST_EXCLUDED,
    INSTALL_TABLE_TYPES,
    SEGMENT_ANONYMOUS,
    SEGMENT_PERSON,
    AppliedEvent,
    HeldEvent,
    InstallRecord,
    InstallTables,
    LinkSeq,
    Released,
    SegmentRecord,
    SentClaim,
    Stamped,
    event_wire,
    key,
    open_install_tables,
)
from idstream.domain.messages import (
    NOTE_DUPLICATE,
    NOTE_LAUNCH_DROPPED,
    Claim,
    InstallFacts,
    LinkDecision,
    Output,
    OutputTopic,
    StageResult,
    dead_letter,
)
from idstream.domain.reasons import RejectReason

__all__ = [
    "DIGEST_EXCLUDED",
    "INSTALL_TABLE_TYPES",
    "InstallTables",
    "apply_decision",
    "apply_event",
    "open_install_tables",
]

# Events the pool must see in install order (identity, links, lifecycle).
CLAIM_EVENTS = (Personalize, Depersonalize, PersonUpdate, Uninstall, Forget)


_RECORD_FIELDS = tuple(f.name for f in fields(InstallRecord))


def _with(rec: InstallRecord, **changes: Any) -> InstallRecord:
    """dataclasses.replace for the hot path (several times faster, no __init__ checks)."""
    new = object.__new__(InstallRecord)
    for name in _RECORD_FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(rec, name))
    return new


def _source(meta: RecordMeta | None) -> tuple[str, int, int] | None:
    return None if meta is None else (meta.topic, meta.partition, meta.offset)


def apply_event(
    t: InstallTables, event: AnyEvent, raw: bytes, meta: RecordMeta | None, rules: RuleConfig
) -> StageResult:
    """Apply one input event of the install `event.push_registration_id`."""
    prid = event.push_registration_id
    applied_key = key(prid, event.event_id)
    done = t.applied.get(applied_key)
    if done is not None:
        # The same record again is a crash redelivery: re-send what it sent. Otherwise a
        # duplicate eventId: a no-op.
        if meta is not None and done.source == _source(meta):
            return _resend(done, event, raw, meta)
        return StageResult(notes=(NOTE_DUPLICATE,))

    rec = t.installs.get(prid)
    first = rec is None
    if rec is None:
        rec = _new_install(event, rules)

    rejection = _rejection(rec, event)
    if rejection is not None:
        reason, detail = rejection
        t.applied.put(applied_key, AppliedEvent(_source(meta), dead_letter=(reason.value, detail)))
        return StageResult(outputs=(dead_letter(raw, meta, reason, detail),))

    if isinstance(event, AppLaunch) and _inside_dedup_window(rec, event, rules):
        # Changes nothing but the metric; the eventId is kept so a duplicate is not counted.
        t.installs.put(prid, _with(rec, dropped_launches=rec.dropped_launches + 1))
        t.applied.put(applied_key, AppliedEvent(_source(meta), dropped=True))
        return StageResult(notes=(NOTE_LAUNCH_DROPPED,))

    if first:
        t.segments.put(
            key(prid, rec.segment), SegmentRecord(SEGMENT_ANONYMOUS, rec.anonymous_profile)
        )
    rec = _open_segment(t, rec, event)
    rec, data_changed = _update_data(rec, event)

    claims: tuple[Claim, ...] = ()
    facts = rec.facts
    # Facts are rebuilt only when something they are made of may have changed.
    if facts is None or data_changed or facts.lifecycle != rec.lifecycle:
        facts = _facts(rec)
    if isinstance(event, CLAIM_EVENTS) or first or facts != rec.facts:
        with_event = isinstance(event, CLAIM_EVENTS)
        rec, claim = _claim(rec, facts, event, with_event, raw, meta)
        claims = (claim,)

    segment = t.segments.get(key(prid, rec.segment))
    profile = None if segment is None else segment.profile_id
    value = _resolved_value(event, rec)
    outputs: tuple[Output, ...] = ()
    if profile is None:
        _hold(t, prid, rec.segment, HeldEvent(event.event_id, value))
    else:
        outputs = (_resolved(value, profile),)

    t.installs.put(prid, rec)
    t.applied.put(
        applied_key,
        AppliedEvent(
            _source(meta),
            claims=tuple(_sent(c) for c in claims),
            profile_id=profile,
            pool=rec.pool,
            segment=rec.segment,
        ),
    )
    return StageResult(messages=claims, outputs=outputs)


def apply_decision(t: InstallTables, decision: LinkDecision, rules: RuleConfig) -> StageResult:
    """Apply the pool's decision for one segment: cache its profile, release held events."""
    prid = decision.push_registration_id
    segment_key = key(prid, decision.segment)
    segment = t.segments.get(segment_key)
    if segment is None:
        return StageResult()
    newest = t.link_seqs.get(segment_key)
    if newest is not None and decision.pool_seq <= newest.pool_seq:
        if decision.pool_seq == newest.pool_seq:
            # A redelivery (crash before its outputs were sent): send them again.
            return _released_again(t, segment_key, decision.pool_seq)
        return StageResult()
    t.link_seqs.put(segment_key, LinkSeq(decision.pool_seq))
    profile = decision.profile_id
    if not profile:
        # A rejection may not name a profile: the install stays with its anonymous one.
        rec_for_profile = t.installs.get(prid)
        profile = ProfileId(rec_for_profile.anonymous_profile if rec_for_profile else "")
    rejected = None if decision.rejected is None else decision.rejected.value
    t.segments.put(segment_key, replace(segment, profile_id=profile, rejected=rejected))

    released: list[HeldEvent] = []
    for held_key, held in t.held.scan(key(prid, decision.segment, "")):
        t.held.delete(held_key)
        # A rejected claim went to the dead letter from the pool; it resolves to nobody.
        if decision.rejected is not None and held.event_id == decision.segment:
            continue
        released.append(held)
    if released:
        t.released.put(segment_key, Released(decision.pool_seq, profile, tuple(released)))
    # A `forgotten` decision is applied like any other: the pool has already named the fresh
    # anonymous profile that the segment's held and later events go to (architecture.md,
    # "Forget"). The install opens no segment and keeps its own lifecycle.
    outputs = tuple(_resolved(held.value, profile) for held in released)
    return StageResult(outputs=outputs)


def _released_again(t: InstallTables, segment_key: str, pool_seq: int) -> StageResult:
    last = t.released.get(segment_key)
    if last is None or last.pool_seq != pool_seq:
        return StageResult()
    return StageResult(outputs=tuple(_resolved(h.value, last.profile_id) for h in last.events))


def _new_install(event: AnyEvent, rules: RuleConfig) -> InstallRecord:
    prid = event.push_registration_id
    return InstallRecord(
        push_registration_id=prid,
        app_code=event.app_code,
        pool=rules.pool_of(event.app_code),
        segment=event.event_id,
        anonymous_profile=anonymous_profile_id(prid, event.event_id),
    )


def _rejection(rec: InstallRecord, event: AnyEvent) -> tuple[RejectReason, str] | None:
    if rec.uninstalled_at is not None and event.timestamp > rec.uninstalled_at:
        return (
            RejectReason.INSTALL_UNINSTALLED,
            f"install uninstalled at {rec.uninstalled_at}; event stamped {event.timestamp}",
        )
    if isinstance(event, Depersonalize) and not rec.linked:
        return RejectReason.NOT_PERSONALIZED, f"install is {rec.lifecycle}"
    return None


def _inside_dedup_window(rec: InstallRecord, event: AppLaunch, rules: RuleConfig) -> bool:
    # Logged only if MORE than the window separates it from the latest logged launch.
    return rec.last_launch is not None and abs(event.timestamp - rec.last_launch) <= (
        rules.launch_dedup_ms
    )


def _open_segment(t: InstallTables, rec: InstallRecord, event: AnyEvent) -> InstallRecord:
    """Personalize, depersonalize and forgetting the linked person open a new segment named
    by the event's id. (A forget that reaches the install from elsewhere opens none: the
    pool relinks the current segment.)"""
    prid = rec.push_registration_id
    eid = event.event_id
    if isinstance(event, Personalize):
        # (Also the install's first event: its segment is a person's, with no anonymous period.)
        t.segments.put(key(prid, eid), SegmentRecord(SEGMENT_PERSON, None))
        return _with(rec, segment=eid, linked=True, ever_personalized=True)
    self_forget = isinstance(event, Forget) and event.user_identity is None and rec.linked
    if (isinstance(event, Depersonalize) or self_forget) and eid != rec.segment:
        anonymous = anonymous_profile_id(PushRegistrationId(prid), eid)
        t.segments.put(key(prid, eid), SegmentRecord(SEGMENT_ANONYMOUS, anonymous))
        return _with(rec, segment=eid, anonymous_profile=anonymous, linked=False)
    return rec


def _lww(
    current: dict[str, Stamped], values: Any, timestamp: int, event_id: str
) -> tuple[dict[str, Stamped], bool]:
    """Apply LWW writes; also say whether any value (not only a stamp) changed."""
    updated: dict[str, Stamped] | None = None
    changed = False
    stamp = (timestamp, event_id)
    for name, value in values.items():
        old = current.get(name)
        if old is None or (old.timestamp, old.event_id) <= stamp:
            if updated is None:
                updated = dict(current)
            updated[name] = Stamped(value, timestamp, event_id)
            if old is None or old.value != value or type(old.value) is not type(value):
                changed = True
    return (current, False) if updated is None else (updated, changed)


def _update_data(rec: InstallRecord, event: AnyEvent) -> tuple[InstallRecord, bool]:
    """LWW install data, launch and uninstall times; True if a fact may have changed."""
    ts, eid = event.timestamp, event.event_id
    changes: dict[str, Any] = {}
    system, changed = _lww(rec.system_data, event.standard_properties, ts, eid)
    if isinstance(event, Install | InstallUpdate):
        system, more = _lww(system, event.system_data, ts, eid)
        changed = changed or more
    if system is not rec.system_data:
        changes["system_data"] = system
    if isinstance(event, InstallUpdate):
        custom, _ = _lww(rec.custom_attributes, event.custom_attributes, ts, eid)
        if custom is not rec.custom_attributes:
            changes["custom_attributes"] = custom
        old = rec.primary_device
        if event.primary_device is not None and (old is None or old.loses_to(ts, eid)):
            changes["primary_device"] = Stamped(event.primary_device, ts, eid)
            changed = changed or old is None or old.value != event.primary_device
    elif isinstance(event, AppLaunch):
        changes["last_launch"] = ts if rec.last_launch is None else max(rec.last_launch, ts)
    elif isinstance(event, Uninstall):
        at = rec.uninstalled_at
        changes["uninstalled_at"] = ts if at is None else min(at, ts)
    return (_with(rec, **changes) if changes else rec), changed


def _facts(rec: InstallRecord) -> InstallFacts:
    system = {name: s.value for name, s in sorted(rec.system_data.items()) if s.value is not None}
    return InstallFacts(
        app_code=rec.app_code,
        lifecycle=rec.lifecycle,
        # An install that registered for push can receive it unless its SDK said otherwise.
        push_enabled=system.get("pushRegistrationEnabled") is not False,
        primary_device=rec.primary_device is not None and rec.primary_device.value is True,
        system_data=system,
    )


def _claim(
    rec: InstallRecord,
    facts: InstallFacts,
    event: AnyEvent,
    with_event: bool,
    raw: bytes,
    meta: RecordMeta | None,
) -> tuple[InstallRecord, Claim]:
    # Order key: (largest timestamp of this install's claims so far, eventId): monotone per
    # install, event time between installs.
    top = event.timestamp
    if rec.claim_max_timestamp is not None:
        top = max(top, rec.claim_max_timestamp)
    rec = _with(rec, claim_seq=rec.claim_seq + 1, claim_max_timestamp=top, facts=facts)
    claim = Claim(
        pool=PoolId(rec.pool),
        push_registration_id=PushRegistrationId(rec.push_registration_id),
        seq=rec.claim_seq,
        order=(top, event.event_id),
        event=event if with_event else None,
        segment=rec.segment,
        anonymous_profile=ProfileId(rec.anonymous_profile),
        facts=facts,
        raw=raw,
        meta=meta,
    )
    return rec, claim


def _sent(claim: Claim) -> SentClaim:
    return SentClaim(
        pool=claim.pool,
        seq=claim.seq,
        order=claim.order,
        with_event=claim.event is not None,
        segment=claim.segment,
        anonymous_profile=claim.anonymous_profile,
        facts=claim.facts,
    )


def _resend(done: AppliedEvent, event: AnyEvent, raw: bytes, meta: RecordMeta) -> StageResult:
    """The StageResult the first delivery of this record returned, rebuilt from its record."""
    prid = PushRegistrationId(event.push_registration_id)
    claims = tuple(
        Claim(
            pool=PoolId(c.pool),
            push_registration_id=prid,
            seq=c.seq,
            order=c.order,
            event=event if c.with_event else None,
            segment=c.segment,
            anonymous_profile=ProfileId(c.anonymous_profile),
            facts=c.facts,
            raw=raw,
            meta=meta,
        )
        for c in done.claims
    )
    outputs: tuple[Output, ...] = ()
    if done.dead_letter is not None:
        reason, detail = done.dead_letter
        outputs = (dead_letter(raw, meta, RejectReason(reason), detail),)
    elif done.profile_id is not None:
        value = _wire_with(event, prid, done.pool, done.segment)
        outputs = (_resolved(value, done.profile_id),)
    return StageResult(messages=claims, outputs=outputs)


def _wire_with(event: AnyEvent, prid: str, pool: str, segment: str) -> dict[str, Any]:
    value = event_wire(event)
    value["installId"] = prid
    value["pool"] = pool
    value["segment"] = segment
    return value


def _resolved_value(event: AnyEvent, rec: InstallRecord) -> dict[str, Any]:
    return _wire_with(event, rec.push_registration_id, rec.pool, rec.segment)


def _resolved(value: dict[str, Any], profile: str) -> Output:
    return Output(OutputTopic.RESOLVED_EVENTS, profile, {**value, "profileId": profile})


def _hold(t: InstallTables, prid: str, segment: str, held: HeldEvent) -> None:
    prefix = key(prid, segment, "")
    last = next(t.held.scan(prefix, reverse=True), None)
    n = 0 if last is None else int(last[0][len(prefix) :]) + 1
    t.held.put(f"{prefix}{n:010d}", held)
