"""The install stage (keyed by pushRegistrationId): lifecycle, system data, install custom
attributes, launch dedup, idempotency; sends Claims to the pool and resolved events.

Domain layer: plain functions over state tables, no I/O, no clock. Rules: SPEC §4.1, 4.2, 4.5;
held outputs and answers: docs/architecture.md. Tables and records: install_state.py.

Per input record the driver calls `effective_time` (None: a redelivery, already applied),
then `apply_event` (or nothing for a tick or a record the decoder rejected), then
`record_position`; per LinkDecision, `apply_decision`.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from idstream.domain.config import RuleConfig
from idstream.domain.erasure import NOTHING_ERASED, Erased, erased_later
from idstream.domain.events import (
    AnyEvent,
    AppLaunch,
    Forget,
    Install,
    InstallUpdate,
    Personalize,
    PersonUpdate,
    RecordMeta,
    Uninstall,
    UserIdentity,
)
from idstream.domain.identities import install_hash
from idstream.domain.ids import anonymous_profile_id
from idstream.domain.install_state import (
    DIGEST_EXCLUDED,
    INSTALL_TABLE_TYPES,
    HeldEvent,
    InstallRecord,
    InstallTables,
    Seen,
    SourcePosition,
    Stamped,
    event_wire,
    held_key,
    install_key,
    open_install_tables,
    seen_bucket,
    seen_key,
    source_key,
)
from idstream.domain.keys import key, number
from idstream.domain.messages import (
    ANSWERED_KINDS,
    NOTE_DUPLICATE,
    NOTE_FORGOTTEN,
    NOTE_LAUNCH_DROPPED,
    Claim,
    ClaimIdentity,
    Heartbeat,
    InstallFacts,
    LinkDecision,
    Output,
    OutputTopic,
    StageResult,
    Value,
    dead_letter,
)
from idstream.domain.reasons import RejectReason

__all__ = [
    "DIGEST_EXCLUDED",
    "INSTALL_TABLE_TYPES",
    "InstallTables",
    "apply_decision",
    "apply_event",
    "effective_time",
    "heartbeats",
    "open_install_tables",
    "record_position",
    "skip",
    "sweep_seen",
]

_RECORD_FIELDS = tuple(f.name for f in fields(InstallRecord))


def _with(rec: InstallRecord, **changes: Any) -> InstallRecord:
    """dataclasses.replace for the hot path (several times faster, no __init__ checks)."""
    new = object.__new__(InstallRecord)
    for name in _RECORD_FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(rec, name))
    return new


# --- the input log ------------------------------------------------------------------------


def effective_time(t: InstallTables, meta: RecordMeta) -> int | None:
    """The record's effective time: the running maximum of its partition's record timestamps
    (SPEC §5). None when the record was applied before (a redelivery after a crash)."""
    known = t.sources.get(source_key(meta.partition))
    if known is None:
        return meta.record_timestamp
    if meta.offset <= known.offset:
        return None
    return max(known.time, meta.record_timestamp)


def record_position(t: InstallTables, meta: RecordMeta, time: int) -> None:
    """The record is applied: later deliveries at or before its offset are redeliveries."""
    t.sources.put(source_key(meta.partition), SourcePosition(meta.offset, time))


def heartbeats(
    pools: tuple[str, ...], partition: int, offset: int, time: int, claimed: frozenset[str]
) -> list[Heartbeat]:
    """What a pool needs to advance past `partition`'s position when no claim told it."""
    return [Heartbeat(pool, partition, time, offset) for pool in pools if pool not in claimed]


def sweep_seen(t: InstallTables, partition: int, time: int, window_ms: int) -> int:
    """Forget the eventIds of `partition` in the buckets before the one before `time`'s:
    what is kept is at most two dedup windows old.

    Only a cleanup: `apply_event` compares times itself, so when the driver sweeps does not
    change any decision. Returns how many entries were deleted.
    """
    # Every key of the bucket before `time`'s, and of later ones, sorts at or after this.
    kept = key(number(partition), number(seen_bucket(time, window_ms) - 1))
    doomed: list[str] = []
    for found, _ in t.seen.scan(key(number(partition))):
        if found >= kept:
            break
        doomed.append(found)
    for found in doomed:
        t.seen.delete(found)
    return len(doomed)


# --- events -------------------------------------------------------------------------------


def apply_event(
    t: InstallTables,
    event: AnyEvent,
    raw: bytes,
    meta: RecordMeta,
    time: int,
    rules: RuleConfig,
    erased: Erased = NOTHING_ERASED,
) -> StageResult:
    """Apply one input event at effective time `time` (see `effective_time`).

    `erased`: a forget register given to a replay before it started; an event of an install
    forgotten later in the log is applied as the first time, but publishes nothing.
    """
    prid = event.push_registration_id
    window = rules.dedup_window_ms
    bucket = seen_bucket(time, window)
    for at in (bucket, bucket - 1):
        before = t.seen.get(seen_key(meta.partition, at, prid, event.event_id))
        if before is not None and time - before.time <= window:
            return skip(NOTE_DUPLICATE, meta)
    t.seen.put(seen_key(meta.partition, bucket, prid, event.event_id), Seen(time))

    position = (time, meta.partition, meta.offset)
    rec = t.installs.get(install_key(prid))
    first = rec is None
    if rec is None:
        rec = _new_install(event, rules)

    if rec.uninstalled_at is not None and event.timestamp > rec.uninstalled_at:
        detail = f"install uninstalled at {rec.uninstalled_at}; event stamped {event.timestamp}"
        reason = RejectReason.INSTALL_UNINSTALLED
        return StageResult(outputs=(dead_letter(raw, meta, reason, detail),))

    if isinstance(event, AppLaunch) and _inside_dedup_window(rec, event, rules):
        # Changes nothing but the metric; the eventId is kept so a duplicate is not counted.
        t.installs.put(install_key(prid), _with(rec, dropped_launches=rec.dropped_launches + 1))
        return skip(NOTE_LAUNCH_DROPPED, meta)

    rec, data_changed = _update_data(rec, event, rules.limits.install_custom_attributes)
    facts = rec.facts
    # Facts are rebuilt only when something they are made of may have changed.
    if facts is None or data_changed:
        facts = _facts(rec)
    answered = event.type.value in ANSWERED_KINDS
    claims: tuple[Claim, ...] = ()
    if answered or first or facts != rec.facts:
        rec, claim = _claim(rec, facts, event, position, raw, meta)
        claims = (claim,)

    value = _resolved_value(event, rec, time, meta)
    if rec.answered < rec.awaiting:
        # The pool decides where this event goes (or whether it goes to the dead letter), and
        # the install's later outputs keep their order behind it.
        awaits = rec.claim_seq if answered else 0
        t.held.put(held_key(prid, rec.held_next), HeldEvent(awaits, value))
        t.installs.put(install_key(prid), _with(rec, held_next=rec.held_next + 1))
        return StageResult(messages=claims)
    t.installs.put(install_key(prid), rec)
    if erased and _erased(rec, value, rules, erased):
        return replace(skip(NOTE_FORGOTTEN, meta), messages=claims)
    return StageResult(messages=claims, outputs=(_resolved(value, rec.profile),))


def apply_decision(
    t: InstallTables,
    decision: LinkDecision,
    rules: RuleConfig | None = None,
    erased: Erased = NOTHING_ERASED,
) -> StageResult:
    """Apply the pool's decision: the install's current profile, and the outputs it releases
    (see `apply_event` for `erased`)."""
    prid = decision.push_registration_id
    rec = t.installs.get(install_key(prid))
    if rec is None or decision.pool_seq <= rec.pool_seq:
        # A redelivery: applied before, and its outputs were delivered before it was.
        return StageResult()
    changes: dict[str, Any] = {"pool_seq": decision.pool_seq}
    if decision.lifecycle:
        changes["lifecycle"] = decision.lifecycle
    if decision.answers:
        changes["answered"] = decision.answers
        if decision.segment:
            changes["segment"] = decision.segment
        if decision.profile_id:
            changes["profile"] = decision.profile_id
    elif decision.segment == rec.segment:
        # Another install's claim moved this segment (a merge, a forget).
        changes["profile"] = decision.profile_id
    rec = _with(rec, **changes)
    t.installs.put(install_key(prid), rec)
    if not decision.answers:
        return StageResult()
    released: list[Output] = []
    skipped: tuple[tuple[str, int, int], ...] = ()
    waiting = False
    for found, held in t.held.scan(key(prid)):
        # Up to the next claim still waiting for its answer, in order.
        if held.awaits > decision.answers:
            waiting = True
            break
        t.held.delete(found)
        own = held.awaits == decision.answers
        hidden = bool(erased) and rules is not None and _erased(rec, held.value, rules, erased)
        if (own and decision.skipped) or (hidden and not (own and decision.rejected)):
            # A claim a rule dropped, or an event of an install forgotten later in the log,
            # resolves nowhere.
            source = held.value["source"]
            skipped = (*skipped, (NOTE_FORGOTTEN, source["partition"], source["offset"]))
            continue
        if own and decision.rejected:
            # The pool sent this claim's event to the dead letter instead.
            continue
        released.append(_resolved(held.value, rec.profile))
    if not waiting:
        # Nothing held: the counter starts over, so the state does not depend on timing.
        t.installs.put(install_key(prid), _with(rec, held_next=0))
    notes = tuple(reason for reason, _, _ in skipped)
    return StageResult(outputs=tuple(released), notes=notes, skipped=skipped)


def skip(reason: str, meta: RecordMeta) -> StageResult:
    """An input record skipped by a rule: no output, a count by reason (SPEC §5)."""
    return StageResult(notes=(reason,), skipped=((reason, meta.partition, meta.offset),))


def _erased(rec: InstallRecord, value: dict[str, Any], rules: RuleConfig, erased: Erased) -> bool:
    """Whether the install is forgotten later in the log than the record of `value`."""
    source = value["source"]
    position = (value["resolvedAt"], source["partition"], source["offset"])
    hashed = install_hash(rules.personal_key, rec.pool, rec.push_registration_id)
    return erased_later(erased, (hashed,), position)


def _new_install(event: AnyEvent, rules: RuleConfig) -> InstallRecord:
    prid = event.push_registration_id
    return InstallRecord(
        push_registration_id=prid,
        app_code=event.app_code,
        pool=rules.pool_of(event.app_code),
        segment=event.event_id,
        profile=anonymous_profile_id(prid, 1),
    )


def _inside_dedup_window(rec: InstallRecord, event: AppLaunch, rules: RuleConfig) -> bool:
    # Logged only if MORE than the window separates it from the latest logged launch.
    return rec.last_launch is not None and abs(event.timestamp - rec.last_launch) <= (
        rules.launch_dedup_ms
    )


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


def _within_cap(
    current: dict[str, Stamped], values: Any, timestamp: int, event_id: str, cap: int
) -> dict[str, Any]:
    """The writes without the new names beyond `cap` names with a value
    (PersonLimits.install_custom_attributes)."""
    present = sum(1 for s in current.values() if s.value is not None)
    kept: dict[str, Any] = {}
    for name, value in values.items():
        old = current.get(name)
        wins = old is None or old.loses_to(timestamp, event_id)
        if wins and value is not None and (old is None or old.value is None):
            if present >= cap:
                continue
            present += 1
        kept[name] = value
    return kept


def _update_data(rec: InstallRecord, event: AnyEvent, cap: int) -> tuple[InstallRecord, bool]:
    """LWW install data, launch and uninstall times; True if a fact may have changed. At most
    `cap` install custom attributes have a value."""
    ts, eid = event.timestamp, event.event_id
    changes: dict[str, Any] = {}
    system, changed = _lww(rec.system_data, event.standard_properties, ts, eid)
    if isinstance(event, Install | InstallUpdate):
        system, more = _lww(system, event.system_data, ts, eid)
        changed = changed or more
    if system is not rec.system_data:
        changes["system_data"] = system
    if isinstance(event, InstallUpdate):
        wanted = _within_cap(rec.custom_attributes, event.custom_attributes, ts, eid, cap)
        custom, more = _lww(rec.custom_attributes, wanted, ts, eid)
        changed = changed or more
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
    system: dict[str, Value] = {
        name: s.value for name, s in sorted(rec.system_data.items()) if s.value is not None
    }
    custom: dict[str, Value] = {
        name: s.value for name, s in sorted(rec.custom_attributes.items()) if s.value is not None
    }
    return InstallFacts(
        app_code=rec.app_code,
        # An install that registered for push can receive it unless its SDK said otherwise.
        push_enabled=system.get("pushRegistrationEnabled") is not False,
        primary_device=rec.primary_device is not None and rec.primary_device.value is True,
        system_data=system,
        custom_attributes=custom,
    )


def _identity(identity: UserIdentity | None) -> ClaimIdentity | None:
    if identity is None or identity.is_empty():
        return None
    return ClaimIdentity(identity.external_user_id, tuple(identity.emails), tuple(identity.phones))


def _values(mapping: Any) -> dict[str, Value]:
    return {str(k): v for k, v in mapping.items()}


def _claim(
    rec: InstallRecord,
    facts: InstallFacts,
    event: AnyEvent,
    position: tuple[int, int, int],
    raw: bytes,
    meta: RecordMeta,
) -> tuple[InstallRecord, Claim]:
    seq = rec.claim_seq + 1
    answered = event.type.value in ANSWERED_KINDS
    rec = _with(rec, claim_seq=seq, facts=facts, awaiting=seq if answered else rec.awaiting)
    body: dict[str, Any] = {}
    if isinstance(event, Personalize):
        body = {
            "identity": _identity(event.user_identity),
            "force_depersonalize": event.force_depersonalize,
            "attributes": _values(event.user_attributes.standard),
            "custom_attributes": _values(event.user_attributes.custom),
        }
    elif isinstance(event, PersonUpdate):
        body = {
            "attributes": _values(event.attributes.standard),
            "custom_attributes": _values(event.attributes.custom),
            "tags_added": tuple(event.tags_added),
            "tags_removed": tuple(event.tags_removed),
            "identities_added": _identity(event.identities_added),
            "identities_removed": _identity(event.identities_removed),
            "identities_replaced": tuple(
                (r.kind.value, r.old, r.new) for r in event.identities_replaced
            ),
        }
    elif isinstance(event, Forget):
        body = {"identity": _identity(event.user_identity)}
    claim = Claim(
        pool=rec.pool,
        position=position,
        push_registration_id=rec.push_registration_id,
        seq=seq,
        anonymous_profile=anonymous_profile_id(rec.push_registration_id, seq),
        facts=facts,
        kind=event.type.value,
        event_id=event.event_id,
        timestamp=event.timestamp,
        # Only the pool's answer needs the record, for a dead letter; facts never go there.
        raw=raw if answered else b"",
        meta=meta if answered else None,
        **body,
    )
    return rec, claim


def _resolved_value(
    event: AnyEvent, rec: InstallRecord, time: int, meta: RecordMeta
) -> dict[str, Any]:
    value = event_wire(event)
    if isinstance(event, Forget):
        # A forget's output never carries the identities it erases.
        value.pop("userIdentity", None)
    value["installId"] = rec.push_registration_id
    value["pool"] = rec.pool
    # When the input log resolved it: the record's effective time, the same in every replay.
    value["resolvedAt"] = time
    value["source"] = {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}
    return value


def _resolved(value: dict[str, Any], profile: str) -> Output:
    return Output(OutputTopic.RESOLVED_EVENTS, profile, {**value, "profileId": profile})
