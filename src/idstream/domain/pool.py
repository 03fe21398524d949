"""The pool stage: identity and profile rules as an event-time fold of claims (SPEC §4.3-4.10).

Domain layer, standard library only. `apply_claim` keeps a key-ordered claims log; a claim with
a smaller order key than the log's tail rolls back the later claims that depend on it (undo
journal, footprints: pool_refold.py), applies, and applies them again, so the state is the fold
of the sorted claims whatever the arrival order. What it emits is the difference between the
state before and after the call. See docs/architecture.md, "The pool stage".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from idstream.domain.config import RuleConfig
from idstream.domain.events import (
    Forget,
    Personalize,
    PersonUpdate,
    PoolId,
    ProfileId,
    PushRegistrationId,
    UserIdentity,
)
from idstream.domain.footprint import store_footprint
from idstream.domain.journal import Journal
from idstream.domain.messages import (
    Claim,
    LinkDecision,
    Output,
    OutputTopic,
    StageResult,
    dead_letter,
)
from idstream.domain.pool_output import ProfileView, diff, profile_view, snapshot
from idstream.domain.pool_profiles import PoolState, Verdict
from idstream.domain.pool_refold import (
    NOTE_FULL_REFOLD,
    NOTE_LATE_CLAIM,
    NOTE_REAPPLIED,
    NOTE_REFOLD_RETRY,
    Refold,
    fold_late,
    journaled,
    refold,
    tracked_after,
)
from idstream.domain.pool_state import (
    DIGEST_EXCLUDED,
    POOL_TABLE_TYPES,
    SEP,
    ClaimOutputs,
    Counter,
    LogTail,
    PoolTables,
    StoredClaim,
    StoredDecision,
    StoredFacts,
    StoredIdentity,
    StoredOutput,
    StoredValue,
    index_key,
    log_key,
    open_pool_tables,
)
from idstream.domain.reasons import RejectReason

__all__ = [
    "DIGEST_EXCLUDED",
    "NOTE_FULL_REFOLD",
    "NOTE_LATE_CLAIM",
    "NOTE_REAPPLIED",
    "NOTE_REFOLD_RETRY",
    "POOL_TABLE_TYPES",
    "PoolTables",
    "apply_claim",
    "open_pool_tables",
    "profile_snapshot",
    "reapplied_count",
    "stored_claim",
]


def apply_claim(tables: PoolTables, claim: Claim, rules: RuleConfig) -> StageResult:
    """Fold one claim into its pool's state and return the changes it caused."""
    pool = claim.pool
    stored = stored_claim(claim)
    index = index_key(pool, stored.push_registration_id, stored.seq)
    known = tables.claim_index.get(index)
    if known is not None:
        return _redelivered(tables, known.log_key, claim)
    key = log_key(pool, stored)
    tail = tables.log_tail.get(pool)
    if tail is None or tail.log_key < key:
        # The usual case: the claim sorts last, nothing to roll back.
        tracked = "" if tail is None else tracked_after(tail)
        tables.log_tail.put(pool, LogTail(key, tracked))
        return _finish(tables, claim, stored, key, refold(tables, pool, stored, key, [], rules))
    late = fold_late(tables, pool, stored, key, tail, rules)
    result = _finish(late.tables, claim, stored, key, late.done, late.notes)
    late.keep()
    return result


def reapplied_count(result: StageResult) -> int:
    """How many later claims the call rolled back and applied again."""
    return result.notes.count(NOTE_REAPPLIED)


def _finish(
    tables: PoolTables,
    claim: Claim,
    stored: StoredClaim,
    key: str,
    done: Refold,
    notes: tuple[str, ...] = (),
) -> StageResult:
    """Store the new footprints, emit the state diff, keep the outputs for redelivery."""
    pool = done.state.pool
    for claim_key, tokens in done.footprints.items():
        old = tables.footprints.get(claim_key) if claim_key != key else None
        store_footprint(tables, pool, claim_key, tokens, old)
    result = _emit(tables, done.state, stored, done.verdict, claim)
    reapplied = len(done.footprints) - 1
    if notes or reapplied:
        result = replace(result, notes=(*result.notes, *notes, *[NOTE_REAPPLIED] * reapplied))
    tables.claim_outputs.put(key, _store(claim, result))
    return result


def profile_snapshot(tables: PoolTables, pool: PoolId, profile_id: str) -> dict[str, Any] | None:
    """The snapshot of a profile as it is now (None: no such profile), for tools and tests."""
    state = journaled(tables, pool, Journal())
    view = _view(state, profile_id, before=False)
    if view is None:
        return None
    found = tables.versions.get(state.key(profile_id))
    return snapshot(view, pool, found.value if found is not None else 0)


# --- claims as the log stores them -------------------------------------------------------


def _identity(identity: UserIdentity | None) -> StoredIdentity | None:
    if identity is None or identity.is_empty():
        return None
    return StoredIdentity(identity.external_user_id, tuple(identity.emails), tuple(identity.phones))


def _values(mapping: Any) -> dict[str, StoredValue]:
    return {str(k): v for k, v in mapping.items()}


def stored_claim(claim: Claim) -> StoredClaim:
    """The claim as the pool's log keeps it (plain values only)."""
    event = claim.event
    facts = StoredFacts(
        claim.facts.app_code,
        claim.facts.push_enabled,
        claim.facts.primary_device,
        _values(claim.facts.system_data),
    )
    base = StoredClaim(
        push_registration_id=claim.push_registration_id,
        seq=claim.seq,
        order=(claim.order[0], claim.order[1]),
        kind=event.type.value if event is not None else "",
        event_id=event.event_id if event is not None else claim.order[1],
        timestamp=event.timestamp if event is not None else claim.order[0],
        segment=claim.segment,
        anonymous_profile=claim.anonymous_profile,
        facts=facts,
    )
    if isinstance(event, Personalize):
        return _replace_claim(
            base,
            identity=_identity(event.user_identity),
            force_depersonalize=event.force_depersonalize,
            attributes=_values(event.user_attributes.standard),
            custom_attributes=_values(event.user_attributes.custom),
        )
    if isinstance(event, PersonUpdate):
        return _replace_claim(
            base,
            attributes=_values(event.attributes.standard),
            custom_attributes=_values(event.attributes.custom),
            tags_added=tuple(event.tags_added),
            tags_removed=tuple(event.tags_removed),
            identities_added=_identity(event.identities_added),
            identities_removed=_identity(event.identities_removed),
            identities_replaced=tuple(
                (r.kind.value, r.old, r.new) for r in event.identities_replaced
            ),
        )
    if isinstance(event, Forget):
        return _replace_claim(base, identity=_identity(event.user_identity))
    return base


def _replace_claim(claim: StoredClaim, **changes: Any) -> StoredClaim:
    return replace(claim, **changes)


# --- outputs -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Emitter:
    tables: PoolTables
    state: PoolState
    claim: StoredClaim

    def next_version(self, pid: str) -> int:
        key = self.state.key(pid)
        found = self.tables.versions.get(key)
        value = (found.value if found is not None else 0) + 1
        self.tables.versions.put(key, Counter(value))
        return value

    def change(self, pid: str, fields: dict[str, Any]) -> tuple[Output, int]:
        version = self.next_version(pid)
        value = {
            "profileId": pid,
            "version": version,
            **fields,
            "eventId": self.claim.event_id,
            "eventTime": self.claim.timestamp,
        }
        return Output(OutputTopic.PROFILE_CHANGES, pid, value), version


def _touched_profiles(state: PoolState) -> set[str]:
    cut = len(state.pool) + 1
    touched = {key[cut:] for key in state.profiles.before}
    for key in state.installs.before:
        for record in (state.installs.get_before(key), state.installs.get(key)):
            if record is not None and record.profile_id:
                touched.add(record.profile_id)
    return touched


def _view(state: PoolState, pid: str, *, before: bool) -> ProfileView | None:
    if before:
        record = state.profiles.get_before(state.key(pid))
        return profile_view(pid, record, lambda p: state.installs.get_before(state.key(p)))
    return profile_view(pid, state.profile(pid), state.install)


def _emit(
    tables: PoolTables, state: PoolState, stored: StoredClaim, verdict: Verdict, claim: Claim
) -> StageResult:
    emitter = _Emitter(tables, state, stored)
    outputs: list[Output] = []
    rejected_on = ""
    if verdict.rejected:
        install = state.install(stored.push_registration_id)
        rejected_on = install.profile_id if install is not None else ""
    touched = _touched_profiles(state)
    if rejected_on:
        touched.add(rejected_on)
    for pid in sorted(touched):
        outputs.extend(_profile_outputs(emitter, pid, verdict if pid == rejected_on else None))
    if verdict.dead is not None:
        reason, detail = verdict.dead
        outputs.append(dead_letter(claim.raw, claim.meta, reason, detail))
    return StageResult(tuple(_decisions(tables, state)), tuple(outputs))


def _profile_outputs(emitter: _Emitter, pid: str, verdict: Verdict | None) -> list[Output]:
    state = emitter.state
    before = _view(state, pid, before=True)
    after = _view(state, pid, before=False)
    pool = state.pool
    if after is None:
        if before is None:
            return []
        survivor = _survivor_of(state, pid, before)
        fields: dict[str, Any] = {"type": "forgotten"}
        if survivor:
            fields = {"type": "merged", "loser": pid, "survivor": survivor}
        change, _ = emitter.change(pid, fields)
        return [change, Output(OutputTopic.PROFILES, pid, None)]
    changes = diff(before, after)
    head = [changes.pop(0)] if changes and changes[0]["type"] == "created" else []
    old_merged = before.merged_from if before is not None else ()
    merged = [
        {"type": "merged", "loser": loser, "survivor": pid}
        for loser in after.merged_from
        if loser not in old_merged and state.profiles.get_before(state.key(loser)) is not None
    ]
    rejected = [
        {
            "type": "identity_rejected",
            "reason": r.reason.value,
            "kind": r.kind.value,
            "value": r.masked,
        }
        for r in (verdict.rejected if verdict is not None else [])
    ]
    outputs: list[Output] = []
    version = 0
    for fields in [*head, *merged, *changes, *rejected]:
        change, version = emitter.change(pid, fields)
        outputs.append(change)
    if outputs:
        outputs.append(Output(OutputTopic.PROFILES, pid, snapshot(after, pool, version)))
    return outputs


def _survivor_of(state: PoolState, pid: str, before: ProfileView) -> str | None:
    """Where a vanished profile went: its merge survivor, or None when it was forgotten.

    A profile also vanishes when a late claim re-folds the history so that it is never
    created (its claims now resolve to an older person); that is reported as a merge into the
    profile its segments now belong to.
    """
    alias = state.aliases.get(state.key(pid))
    if alias is not None:
        return alias.survivor
    record = state.profiles.get_before(state.key(pid))
    links = [state.segments.get(state.key(ref)) for ref in (record.segments if record else ())]
    # Forgotten: its segments now name the erased id, or their installs' fresh anonymous
    # profiles (which are not survivors), with `forgotten`.
    if any(link is not None and link.forgotten for link in links):
        return None
    for link in links:
        if link is not None and link.profile_id != pid and state.profile(link.profile_id):
            return link.profile_id
    for install in before.installs:
        found = state.install(install.push_registration_id)
        if found is not None and found.profile_id and state.profile(found.profile_id):
            return found.profile_id
    return None


def _decisions(tables: PoolTables, state: PoolState) -> list[LinkDecision]:
    decisions: list[LinkDecision] = []
    cut = len(state.pool) + 1
    for key in sorted(state.segments.changed_keys()):
        link = state.segments.get(key)
        if link is None:
            continue
        prid, _, segment = key[cut:].partition(SEP)
        found = tables.sequence.get(state.pool)
        seq = (found.value if found is not None else 0) + 1
        tables.sequence.put(state.pool, Counter(seq))
        decisions.append(
            LinkDecision(
                PushRegistrationId(prid),
                segment,
                ProfileId(link.profile_id),
                seq,
                forgotten=link.forgotten,
                rejected=RejectReason(link.rejected) if link.rejected else None,
            )
        )
    return decisions


# --- redelivery --------------------------------------------------------------------------


def _source(claim: Claim) -> tuple[str, int, int] | None:
    meta = claim.meta
    return (meta.topic, meta.partition, meta.offset) if meta is not None else None


def _store(claim: Claim, result: StageResult) -> ClaimOutputs:
    decisions = tuple(
        StoredDecision(
            m.push_registration_id,
            m.segment,
            m.profile_id,
            m.pool_seq,
            m.forgotten,
            m.rejected.value if m.rejected is not None else None,
        )
        for m in result.messages
        if isinstance(m, LinkDecision)
    )
    outputs = tuple(
        StoredOutput(
            o.topic.value,
            o.key,
            json.dumps(o.value, ensure_ascii=False) if o.value is not None else None,
        )
        for o in result.outputs
    )
    return ClaimOutputs(_source(claim), decisions, outputs)


def _redelivered(tables: PoolTables, key: str, claim: Claim) -> StageResult:
    """The same input record again (a crash before outputs were sent): send them again."""
    stored = tables.claim_outputs.get(key)
    source = _source(claim)
    if stored is None or source is None or stored.source != source:
        return StageResult()
    decisions = tuple(
        LinkDecision(
            PushRegistrationId(d.push_registration_id),
            d.segment,
            ProfileId(d.profile_id),
            d.pool_seq,
            forgotten=d.forgotten,
            rejected=RejectReason(d.rejected) if d.rejected is not None else None,
        )
        for d in stored.decisions
    )
    outputs = tuple(
        Output(
            OutputTopic(o.topic),
            o.key,
            json.loads(o.value_json) if o.value_json is not None else None,
        )
        for o in stored.outputs
    )
    return StageResult(decisions, outputs)
