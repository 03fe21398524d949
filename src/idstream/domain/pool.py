"""The pool stage: identity and profile rules applied to claims in input-log order (SPEC §4, §5).

Domain layer, standard library only. `receive` takes a claim or a heartbeat, keeps claims
pending until every input partition has passed them (pool_order.py), then applies them in log
order with `apply_claim`. What a claim emits is the difference between the pool's state before
and after it: changes, snapshots, and LinkDecisions for the installs whose profile changed,
one of them the answer to the claim. See docs/architecture.md, "The pool stage".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from idstream.domain import pool_history, pool_order
from idstream.domain.config import HistoryLimits, RuleConfig
from idstream.domain.erasure import NOTHING_ERASED, Erased, erased_later, register_record
from idstream.domain.events import IdentityKind
from idstream.domain.identities import identity_hash
from idstream.domain.keys import key, parts
from idstream.domain.messages import (
    Claim,
    Heartbeat,
    LinkDecision,
    LogPosition,
    Output,
    OutputTopic,
    StageResult,
    dead_letter,
)
from idstream.domain.pool_output import ProfileView, diff, profile_view, snapshot
from idstream.domain.pool_profiles import PoolState, TrackedTable, Verdict, normalize_all
from idstream.domain.pool_rules import apply_rules
from idstream.domain.pool_state import (
    DIGEST_EXCLUDED,
    POOL_TABLE_TYPES,
    Cursor,
    PoolTables,
    open_pool_tables,
    pending_key,
)

ApplyClaim = Callable[[PoolTables, Claim, RuleConfig, Cursor], tuple[StageResult, Cursor]]

__all__ = [
    "DIGEST_EXCLUDED",
    "POOL_TABLE_TYPES",
    "PoolTables",
    "apply_claim",
    "find_profile",
    "identity_owner",
    "open_pool_tables",
    "profile_snapshot",
    "receive",
]


def receive(
    tables: PoolTables,
    message: Claim | Heartbeat,
    rules: RuleConfig,
    sources: int,
    apply: ApplyClaim | None = None,
) -> StageResult:
    """Take one claim or heartbeat of a pool; apply every claim it makes ready, in log order.

    `sources` is the number of input partitions: each of them must have passed a claim before
    it is applied. `apply` applies one claim (default `apply_claim`; a driver passes one that
    isolates a claim whose processing raises).
    """
    pool = message.pool
    cursor_key = key(pool)
    cursor = tables.cursor.get(cursor_key) or pool_order.start(sources)
    if len(cursor.times) != sources:
        raise ValueError(
            f"pool {pool!r} was ordered over {len(cursor.times)} input partitions, now "
            f"{sources}: the partition count of a deployment cannot change (rebuild instead)"
        )
    if isinstance(message, Claim):
        time, source, offset = message.position
    else:
        time, source, offset = message.time, message.source, message.offset
    moved = pool_order.advance(cursor, source, time, offset)
    if moved is None:
        # Received before: a redelivery after a crash. Its outputs were delivered then.
        return StageResult()
    cursor = moved
    if isinstance(message, Claim):
        tables.pending.put(pending_key(pool, message.position), message)
        cursor = pool_order.with_pending(cursor, message.position)
    result = StageResult()
    if cursor.head is not None and pool_order.releasable(cursor, cursor.head):
        result, cursor = _release(tables, cursor, pool, rules, apply or apply_claim)
    tables.cursor.put(cursor_key, cursor)
    return result


def _release(
    tables: PoolTables, cursor: Cursor, pool: str, rules: RuleConfig, apply: ApplyClaim
) -> tuple[StageResult, Cursor]:
    """Apply the pending claims every source has passed, oldest first."""
    messages: list[Any] = []
    outputs: list[Output] = []
    notes: list[str] = []
    head = None
    # From the oldest pending claim on: the applied ones before it are deleted, and a scan
    # from the pool's first key would step over every one of them (RocksDB tombstones).
    begin = pending_key(pool, cursor.head) if cursor.head is not None else ""
    for found, claim in tables.pending.scan(key(pool), start=begin):
        if not pool_order.releasable(cursor, claim.position):
            head = claim.position
            break
        tables.pending.delete(found)
        cursor = Cursor(
            cursor.times, cursor.offsets, cursor.pending - 1, cursor.head, cursor.decisions
        )
        done, cursor = apply(tables, claim, rules, cursor)
        messages.extend(done.messages)
        outputs.extend(done.outputs)
        notes.extend(done.notes)
    cursor = Cursor(cursor.times, cursor.offsets, cursor.pending, head, cursor.decisions)
    return StageResult(tuple(messages), tuple(outputs), tuple(notes)), cursor


def apply_claim(
    tables: PoolTables,
    claim: Claim,
    rules: RuleConfig,
    cursor: Cursor,
    erased: Erased = NOTHING_ERASED,
) -> tuple[StageResult, Cursor]:
    """Apply one claim, in log order: the changes it caused and the decisions it sends.

    `erased` is a forget register given to a replay before it started: a claim of a person
    forgotten later in the log changes the state as it did the first time, but publishes
    nothing of that person (docs/architecture.md, "Forget").
    """
    state = _tracked(tables, claim.pool, rules.personal_key)
    verdict = apply_rules(state, claim, rules)
    outputs = _emit(tables, state, claim, verdict, rules.history)
    hidden = False
    if erased:
        outputs, hidden = _hide_erased(state, claim, verdict, outputs, rules, erased)
    decisions, cursor = _decisions(state, claim, verdict, cursor, hidden)
    return StageResult(tuple(decisions), tuple(outputs)), cursor


def _hide_erased(
    state: PoolState,
    claim: Claim,
    verdict: Verdict,
    outputs: list[Output],
    rules: RuleConfig,
    erased: Erased,
) -> tuple[list[Output], bool]:
    """The outputs that say nothing of a person forgotten later in the log; and whether the
    claim itself is that person's (its event then resolves nowhere, its dead letter goes)."""
    position = claim.position
    claimed = [state.install_hash(claim.push_registration_id)]
    for identity in (claim.identity, claim.identities_added, claim.identities_removed):
        claimed.extend(state.identity_hash(i) for i in normalize_all(identity, rules, None))
    own = erased_later(erased, claimed, position)
    install = state.install(claim.push_registration_id)
    if install is not None and _profile_erased(state, install.profile_id, erased, position):
        own = True
    kept: list[Output] = []
    for output in outputs:
        if output.topic is OutputTopic.FORGET_REGISTER:
            kept.append(output)
        elif output.topic is OutputTopic.DEAD_LETTER:
            if not own:
                kept.append(output)
        elif not _profile_erased(state, output.key, erased, position):
            kept.append(output)
    return kept, own


def _profile_erased(state: PoolState, pid: str, erased: Erased, position: LogPosition) -> bool:
    """Whether the profile, as it was before the claim or is after it, holds an identity or an
    install forgotten later in the log."""
    for record in (state.profiles.get_before(state.key(pid)), state.profile(pid)):
        if record is None:
            continue
        hashes = [state.install_hash(prid) for prid in record.installs]
        for kind, name in _IDENTITY_FIELDS:
            hashes.extend(state.identity_hash((kind, v)) for v in getattr(record, name))
        if erased_later(erased, hashes, position):
            return True
    return False


_IDENTITY_FIELDS = (
    (IdentityKind.EXTERNAL_USER_ID, "external_user_ids"),
    (IdentityKind.EMAIL, "emails"),
    (IdentityKind.PHONE, "phones"),
)


def profile_snapshot(tables: PoolTables, pool: str, profile_id: str) -> dict[str, Any] | None:
    """The snapshot of a profile as it is now (None: no such profile), for tools and tests."""
    state = _tracked(tables, pool, b"")
    record = state.profile(profile_id)
    view = profile_view(profile_id, record, state.install)
    if view is None or record is None:
        return None
    return snapshot(view, pool, record.version)


def find_profile(tables: PoolTables, pool: str, profile_id: str) -> dict[str, Any] | None:
    """The snapshot of a profile, or of its merge survivor when it was merged away."""
    found = profile_snapshot(tables, pool, profile_id)
    if found is None:
        alias = tables.aliases.get(key(pool, profile_id))
        if alias is not None:
            found = profile_snapshot(tables, pool, alias.survivor)
    return found


def identity_owner(
    tables: PoolTables, pool: str, kind: IdentityKind, value: str, secret: bytes
) -> str | None:
    """The profile that owns a normalized identity in a pool, if any."""
    owner = tables.identities.get(key(pool, identity_hash(secret, pool, kind, value)))
    return None if owner is None else owner.profile_id


def _tracked(tables: PoolTables, pool: str, secret: bytes) -> PoolState:
    return PoolState(
        pool,
        secret,
        TrackedTable(tables.profiles),
        TrackedTable(tables.installs),
        TrackedTable(tables.identities),
        TrackedTable(tables.aliases),
        TrackedTable(tables.forgotten),
    )


# --- outputs -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Changes:
    """The change events of one profile, numbered from its version before the claim."""

    claim: Claim
    profile_id: str
    version: int
    outputs: list[Output]

    def add(self, fields: dict[str, Any]) -> None:
        self.version += 1
        value = {
            "profileId": self.profile_id,
            "version": self.version,
            **fields,
            "eventId": self.claim.event_id,
            "eventTime": self.claim.timestamp,
        }
        self.outputs.append(Output(OutputTopic.PROFILE_CHANGES, self.profile_id, value))


def _touched_profiles(state: PoolState) -> set[str]:
    touched = {key_to_id(state, k) for k in state.profiles.before}
    for k in state.installs.before:
        for record in (state.installs.get_before(k), state.installs.get(k)):
            if record is not None and record.profile_id:
                touched.add(record.profile_id)
    return touched


def key_to_id(state: PoolState, profile_key: str) -> str:
    """The profile id in a `pool_profiles` key (the part after the pool)."""
    return parts(profile_key)[1]


def _view(state: PoolState, pid: str, *, before: bool) -> ProfileView | None:
    if before:
        record = state.profiles.get_before(state.key(pid))
        return profile_view(pid, record, lambda p: state.installs.get_before(state.key(p)))
    return profile_view(pid, state.profile(pid), state.install)


def _emit(
    tables: PoolTables, state: PoolState, claim: Claim, verdict: Verdict, limits: HistoryLimits
) -> list[Output]:
    install = state.install(claim.push_registration_id)
    rejected_on = install.profile_id if verdict.rejected and install is not None else ""
    touched = _touched_profiles(state)
    if rejected_on:
        touched.add(rejected_on)
    outputs: list[Output] = []
    for pid in sorted(touched):
        rejected = pid == rejected_on
        outputs.extend(_profile_outputs(tables, state, claim, pid, verdict, rejected, limits))
    if verdict.dead is not None:
        reason, detail = verdict.dead
        outputs.append(dead_letter(claim.raw, claim.meta, reason, detail))
    for register_key in state.forgotten.changed_keys():
        entry = state.forgotten.get(register_key)
        if entry is not None:
            outputs.append(register_record(state.pool, parts(register_key)[1], entry))
    return outputs


def _merge_reason(claim: Claim, verdict: Verdict, loser: str) -> dict[str, Any]:
    """The `merged` change's why: the identity that matched the loser, or continuity."""
    why = verdict.merged.get(loser)
    if why is None:
        return {}
    fields = {"reason": why.reason, "pushRegistrationId": claim.push_registration_id}
    if why.kind is not None:
        fields |= {"identityKind": why.kind.value, "maskedValue": why.masked}
    return fields


def _profile_outputs(
    tables: PoolTables,
    state: PoolState,
    claim: Claim,
    pid: str,
    verdict: Verdict,
    rejected: bool,
    limits: HistoryLimits,
) -> list[Output]:
    before_record = state.profiles.get_before(state.key(pid))
    before = _view(state, pid, before=True)
    after = _view(state, pid, before=False)
    changes = _Changes(claim, pid, before_record.version if before_record else 0, [])
    if after is None:
        if before is None:
            return []
        alias = state.aliases.get(state.key(pid))
        if alias is not None:
            why = _merge_reason(claim, verdict, pid)
            changes.add({"kind": "merged", "loser": pid, "survivor": alias.survivor, **why})
            survivor = state.profile(alias.survivor)
            merged_from = survivor.merged_from if survivor is not None else ()
            pool_history.move(tables, state.pool, pid, alias.survivor, merged_from, limits)
        else:
            changes.add({"kind": "forgotten"})
            gone = before.merged_from
            pool_history.erase(tables, state.pool, pid, gone, claim.timestamp, claim.position)
        return [*changes.outputs, Output(OutputTopic.PROFILES, pid, None)]
    found = diff(before, after, state.pool)
    head = [found.pop(0)] if found and found[0]["kind"] == "created" else []
    old_merged = before.merged_from if before is not None else ()
    merged = [
        {"kind": "merged", "loser": loser, "survivor": pid, **_merge_reason(claim, verdict, loser)}
        for loser in after.merged_from
        if loser not in old_merged and state.profiles.get_before(state.key(loser)) is not None
    ]
    rejections = [
        {
            "kind": "identity_rejected",
            "reason": r.reason.value,
            "identityKind": r.kind.value,
            "maskedValue": r.masked,
            **({"limit": r.limit} if r.limit is not None else {}),
        }
        for r in (verdict.rejected if rejected else [])
    ]
    for fields in [*head, *merged, *found, *rejections]:
        changes.add(fields)
    if not changes.outputs:
        return []
    grew = after.merged_from if after.merged_from != old_merged else None
    emitted = [o.value for o in changes.outputs if o.value is not None]
    pool_history.record(tables, state.pool, pid, claim.position, emitted, grew, limits)
    record = state.profile(pid)
    assert record is not None
    # The version is bookkeeping of the outputs: written past the tracked tables.
    tables.profiles.put(state.key(pid), replace(record, version=changes.version))
    latest = snapshot(after, state.pool, changes.version)
    return [*changes.outputs, Output(OutputTopic.PROFILES, pid, latest)]


def _decisions(
    state: PoolState, claim: Claim, verdict: Verdict, cursor: Cursor, hidden: bool = False
) -> tuple[list[LinkDecision], Cursor]:
    """The answer to an answered claim, and a decision for every other install whose profile
    or segment changed. A `hidden` claim (its person is forgotten later in the log, see
    `_hide_erased`) is answered as skipped: its event resolves nowhere."""
    decisions: list[LinkDecision] = []
    seq = cursor.decisions
    changed = set(state.installs.changed_keys())
    own = state.key(claim.push_registration_id)
    if claim.answered:
        changed.add(own)
    forget = claim.kind == "forget" and verdict.dead is None and not verdict.skipped
    for install_key in sorted(changed):
        after = state.installs.get(install_key)
        before = state.installs.get_before(install_key)
        if after is None:
            continue
        answer = install_key == own and claim.answered
        moved = before is not None and (
            before.profile_id,
            before.segment,
            before.lifecycle,
        ) != (after.profile_id, after.segment, after.lifecycle)
        if not (answer or moved):
            continue
        seq += 1
        prid = parts(install_key)[1]
        decisions.append(
            LinkDecision(
                prid,
                after.segment,
                after.profile_id,
                seq,
                answers=claim.seq if answer else 0,
                forgotten=forget and after.profile_id != (before.profile_id if before else ""),
                rejected=(
                    verdict.dead[0] if answer and verdict.dead is not None and not hidden else None
                ),
                skipped=answer and (verdict.skipped or hidden),
                lifecycle=after.lifecycle,
            )
        )
    return decisions, Cursor(cursor.times, cursor.offsets, cursor.pending, cursor.head, seq)
