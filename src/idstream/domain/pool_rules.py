"""The identity and profile rules of SPEC §4.3-4.10, applied to one stored claim.

Domain layer, standard library only. `apply_rules` changes pool state through journaled tables
and returns a `Verdict` (whole-claim rejection, identities not attached); pool.py decides what
to emit from the state diff.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from idstream.domain.config import ConflictMode, Continuity, PersonLimits, RuleConfig
from idstream.domain.events import IDENTITY_PRIORITY, EventType, IdentityKind, PoolId
from idstream.domain.identities import identity_hash, install_hash, mask, normalize_identity
from idstream.domain.ids import person_profile_id
from idstream.domain.journal import JournaledTable
from idstream.domain.pool_state import (
    ANONYMOUS,
    PERSON,
    SEP,
    Alias,
    AliasUndo,
    Entry,
    ForgetEntry,
    ForgetUndo,
    IdentityOwner,
    IdentityUndo,
    InstallRecord,
    InstallUndo,
    Order,
    ProfileRecord,
    ProfileUndo,
    SegmentLink,
    SegmentUndo,
    Stamp,
    StoredClaim,
    StoredIdentity,
    StoredValue,
    TagEntry,
    segment_ref,
)
from idstream.domain.reasons import RejectReason

LIFECYCLE_ANONYMOUS = "anonymous"
LIFECYCLE_PERSONALIZED = "personalized"
LIFECYCLE_DEPERSONALIZED = "depersonalized"
LIFECYCLE_UNINSTALLED = "uninstalled"

Identity = tuple[IdentityKind, str]
_FIELDS = {
    IdentityKind.EXTERNAL_USER_ID: "external_user_ids",
    IdentityKind.EMAIL: "emails",
    IdentityKind.PHONE: "phones",
}


@dataclass(slots=True)
class Rejected:
    """An identity of the claim that was not attached (becomes an `identity_rejected` change)."""

    reason: RejectReason
    kind: IdentityKind
    masked: str


@dataclass(slots=True)
class Verdict:
    dead: tuple[RejectReason, str] | None = None  # the whole claim goes to the dead letter
    rejected: list[Rejected] = field(default_factory=list)

    def reject(self, reason: RejectReason, kind: IdentityKind, value: str) -> None:
        self.rejected.append(Rejected(reason, kind, mask(kind, value)))


@dataclass(slots=True)
class PoolState:
    """Typed access to one pool's journaled tables (keys prefixed with the pool)."""

    pool: PoolId
    profiles: JournaledTable[ProfileRecord, ProfileUndo]
    installs: JournaledTable[InstallRecord, InstallUndo]
    segments: JournaledTable[SegmentLink, SegmentUndo]
    identities: JournaledTable[IdentityOwner, IdentityUndo]
    aliases: JournaledTable[Alias, AliasUndo]
    forgotten: JournaledTable[ForgetEntry, ForgetUndo]

    def key(self, *parts: str) -> str:
        return SEP.join((self.pool, *parts))

    def profile(self, pid: str) -> ProfileRecord | None:
        return self.profiles.get(self.key(pid)) if pid else None

    def put_profile(self, pid: str, record: ProfileRecord) -> None:
        self.profiles.put(self.key(pid), record)

    def install(self, prid: str) -> InstallRecord | None:
        return self.installs.get(self.key(prid))

    def put_install(self, prid: str, record: InstallRecord) -> None:
        if self.installs.get(self.key(prid)) != record:
            self.installs.put(self.key(prid), record)

    def owner(self, identity: Identity) -> str | None:
        found = self.identities.get(self.key(identity[0].value, identity[1]))
        return found.profile_id if found is not None else None

    def set_owner(self, identity: Identity, pid: str | None) -> None:
        key = self.key(identity[0].value, identity[1])
        if pid is None:
            self.identities.delete(key)
        else:
            self.identities.put(key, IdentityOwner(pid))

    def remember_forget(self, hashed: str, order: Order) -> None:
        old = self.forgotten.get(self.key(hashed))
        if old is None or old.order < order:
            self.forgotten.put(self.key(hashed), ForgetEntry(order))

    def forgotten_after(self, hashed: str, order: Order) -> bool:
        entry = self.forgotten.get(self.key(hashed))
        return entry is not None and entry.order > order

    def forgotten_at_or_after(self, hashed: str, order: Order) -> bool:
        entry = self.forgotten.get(self.key(hashed))
        return entry is not None and entry.order >= order


# --- identities --------------------------------------------------------------------------


def identities_of(record: ProfileRecord, kind: IdentityKind) -> tuple[str, ...]:
    values: tuple[str, ...] = getattr(record, _FIELDS[kind])
    return values


def _with_identities(
    record: ProfileRecord, kind: IdentityKind, values: tuple[str, ...]
) -> ProfileRecord:
    if kind is IdentityKind.EXTERNAL_USER_ID:
        return replace(record, external_user_ids=values)
    if kind is IdentityKind.EMAIL:
        return replace(record, emails=values)
    return replace(record, phones=values)


def _limit(limits: PersonLimits, kind: IdentityKind) -> int:
    if kind is IdentityKind.EXTERNAL_USER_ID:
        return limits.external_user_ids
    return limits.emails if kind is IdentityKind.EMAIL else limits.phones


def _raw_identities(identity: StoredIdentity | None) -> list[tuple[IdentityKind, str]]:
    if identity is None:
        return []
    raw: list[tuple[IdentityKind, str]] = []
    if identity.external_user_id is not None:
        raw.append((IdentityKind.EXTERNAL_USER_ID, identity.external_user_id))
    raw.extend((IdentityKind.EMAIL, value) for value in identity.emails)
    raw.extend((IdentityKind.PHONE, value) for value in identity.phones)
    return raw


def normalize_all(
    identity: StoredIdentity | None, config: RuleConfig, verdict: Verdict | None
) -> list[Identity]:
    """Usable identities in priority order, without duplicates; the rest recorded as rejected."""
    usable: list[Identity] = []
    for kind, raw in _raw_identities(identity):
        value, reason = normalize_identity(kind, raw, config.blocklist)
        if value is None:
            if verdict is not None and reason is not None:
                verdict.reject(reason, kind, raw)
        elif (kind, value) not in usable:
            usable.append((kind, value))
    return usable


def _attach(
    state: PoolState, pid: str, identity: Identity, config: RuleConfig, verdict: Verdict
) -> bool:
    """Give an unowned identity to `pid` unless that exceeds the person's limit."""
    record = state.profile(pid)
    assert record is not None
    kind, value = identity
    values = identities_of(record, kind)
    if value in values:
        return True
    if len(values) >= _limit(config.limits, kind):
        verdict.reject(RejectReason.LIMIT_EXCEEDED, kind, value)
        return False
    state.put_profile(pid, _with_identities(record, kind, (*values, value)))
    state.set_owner(identity, pid)
    return True


def _detach(state: PoolState, pid: str, identity: Identity) -> None:
    record = state.profile(pid)
    assert record is not None
    kind, value = identity
    values = tuple(v for v in identities_of(record, kind) if v != value)
    state.put_profile(pid, _with_identities(record, kind, values))
    state.set_owner(identity, None)


# --- links and segments ------------------------------------------------------------------


def _set_segment(
    state: PoolState,
    prid: str,
    segment: str,
    pid: str,
    *,
    rejected: str | None = None,
    forgotten: bool = False,
) -> None:
    key = state.key(prid, segment)
    ref = segment_ref(prid, segment)
    old = state.segments.get(key)
    if old is not None and old.profile_id != pid:
        previous = state.profile(old.profile_id)
        if previous is not None:
            segments = tuple(s for s in previous.segments if s != ref)
            state.put_profile(old.profile_id, replace(previous, segments=segments))
    record = state.profile(pid)
    if record is not None and ref not in record.segments:
        state.put_profile(pid, replace(record, segments=(*record.segments, ref)))
    link = SegmentLink(pid, rejected, forgotten)
    if old != link:
        state.segments.put(key, link)


def _unlink_install(state: PoolState, prid: str, pid: str) -> None:
    record = state.profile(pid)
    if record is not None and prid in record.installs:
        installs = tuple(i for i in record.installs if i != prid)
        state.put_profile(pid, replace(record, installs=installs))


def _link_install(state: PoolState, prid: str, pid: str, segment: str, lifecycle: str) -> None:
    """Link the install (and its current segment) to `pid`, unlinking it from its old profile."""
    install = state.install(prid)
    assert install is not None
    if install.profile_id and install.profile_id != pid:
        _unlink_install(state, prid, install.profile_id)
    record = state.profile(pid)
    assert record is not None
    if prid not in record.installs:
        state.put_profile(pid, replace(record, installs=tuple(sorted((*record.installs, prid)))))
    _set_segment(state, prid, segment, pid)
    if install.lifecycle != LIFECYCLE_UNINSTALLED:
        install = replace(install, lifecycle=lifecycle)
    state.put_install(
        prid,
        replace(
            install,
            profile_id=pid,
            segment=segment,
            was_personalized=install.was_personalized or lifecycle == LIFECYCLE_PERSONALIZED,
        ),
    )


def _create_profile(state: PoolState, pid: str, kind: str, claim: StoredClaim) -> None:
    if state.profile(pid) is None:
        state.put_profile(pid, ProfileRecord(kind, claim.order, claim.timestamp))


def _ensure_install(state: PoolState, claim: StoredClaim) -> InstallRecord:
    """The install's record with the claim's facts; a first claim creates its anonymous profile."""
    prid = claim.push_registration_id
    install = state.install(prid)
    facts = claim.facts
    fresh = install is None
    if install is None:
        install = InstallRecord(
            facts.app_code,
            LIFECYCLE_ANONYMOUS,
            facts.push_enabled,
            facts.primary_device,
            dict(facts.system_data),
            claim.segment,
            "",
        )
    else:
        install = replace(
            install,
            app_code=facts.app_code,
            push_enabled=facts.push_enabled,
            primary_device=facts.primary_device,
            system_data=dict(facts.system_data),
        )
    state.put_install(prid, install)
    if fresh or (not install.profile_id and claim.kind != EventType.PERSONALIZE):
        # New install, or its person was forgotten: the claim's segment is a fresh anonymous one.
        _create_profile(state, claim.anonymous_profile, ANONYMOUS, claim)
        _link_install(state, prid, claim.anonymous_profile, claim.segment, LIFECYCLE_ANONYMOUS)
    found = state.install(prid)
    assert found is not None
    return found


def _reject_segment(
    state: PoolState, claim: StoredClaim, verdict: Verdict, reason: RejectReason, detail: str
) -> None:
    """The claim opened a segment but is rejected: the segment keeps the install's profile."""
    prid = claim.push_registration_id
    install = state.install(prid)
    assert install is not None
    _set_segment(state, prid, claim.segment, install.profile_id, rejected=reason.value)
    state.put_install(prid, replace(install, segment=claim.segment))
    verdict.dead = (reason, detail)
    verdict.rejected.clear()


# --- attributes --------------------------------------------------------------------------


def _lww(
    entries: dict[str, Entry], updates: dict[str, StoredValue], stamp: Stamp
) -> dict[str, Entry]:
    merged = dict(entries)
    for key, value in updates.items():
        old = merged.get(key)
        if old is None or stamp >= old.stamp:
            merged[key] = Entry(value, stamp)
    return merged


def _apply_attributes(state: PoolState, pid: str, claim: StoredClaim, limits: PersonLimits) -> None:
    record = state.profile(pid)
    assert record is not None
    stamp = (claim.timestamp, claim.event_id)
    tags = dict(record.tags)
    for name, present in [(t, True) for t in claim.tags_added] + [
        (t, False) for t in claim.tags_removed
    ]:
        old = tags.get(name)
        if old is not None and stamp < old.stamp:
            continue
        adds = present and (old is None or not old.present)
        if adds and sum(1 for t in tags.values() if t.present) >= limits.tags:
            continue
        tags[name] = TagEntry(present, stamp)
    updated = replace(
        record,
        attributes=_lww(record.attributes, claim.attributes, stamp),
        custom_attributes=_lww(record.custom_attributes, claim.custom_attributes, stamp),
        tags=tags,
    )
    if updated != record:
        state.put_profile(pid, updated)


def _has_attributes(claim: StoredClaim) -> bool:
    return bool(
        claim.attributes or claim.custom_attributes or claim.tags_added or claim.tags_removed
    )


# --- merges ------------------------------------------------------------------------------


def _merge_entries(survivor: dict[str, Entry], loser: dict[str, Entry]) -> dict[str, Entry]:
    merged = dict(survivor)
    for key, entry in loser.items():
        if key not in merged or entry.stamp > merged[key].stamp:
            merged[key] = entry
    return merged


def _merge_tags(survivor: dict[str, TagEntry], loser: dict[str, TagEntry]) -> dict[str, TagEntry]:
    merged = dict(survivor)
    for key, entry in loser.items():
        if key not in merged or entry.stamp > merged[key].stamp:
            merged[key] = entry
    return merged


def merge_profiles(state: PoolState, loser_id: str, survivor_id: str) -> None:
    """Move everything of `loser_id` to `survivor_id` and delete the loser (SPEC §4.7)."""
    loser = state.profile(loser_id)
    survivor = state.profile(survivor_id)
    assert loser is not None and survivor is not None
    for kind in IDENTITY_PRIORITY:
        for value in identities_of(loser, kind):
            state.set_owner((kind, value), survivor_id)
    for prid in loser.installs:
        install = state.install(prid)
        if install is not None and install.profile_id == loser_id:
            state.put_install(prid, replace(install, profile_id=survivor_id))
    for ref in loser.segments:
        key = state.key(ref)
        link = state.segments.get(key)
        if link is not None:
            state.segments.put(key, replace(link, profile_id=survivor_id))
    for merged in (*loser.merged_from, loser_id):
        state.aliases.put(state.key(merged), Alias(survivor_id))
    absorbed = survivor.merges_absorbed
    if loser.kind == PERSON:
        absorbed += 1 + loser.merges_absorbed
    merged_record = replace(
        survivor,
        external_user_ids=_union(survivor.external_user_ids, loser.external_user_ids),
        emails=_union(survivor.emails, loser.emails),
        phones=_union(survivor.phones, loser.phones),
        attributes=_merge_entries(survivor.attributes, loser.attributes),
        custom_attributes=_merge_entries(survivor.custom_attributes, loser.custom_attributes),
        tags=_merge_tags(survivor.tags, loser.tags),
        installs=tuple(sorted(set(survivor.installs) | set(loser.installs))),
        segments=_union(survivor.segments, loser.segments),
        merged_from=_union(survivor.merged_from, (*loser.merged_from, loser_id)),
        merges_absorbed=absorbed,
    )
    state.put_profile(survivor_id, merged_record)
    state.profiles.delete(state.key(loser_id))


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(v for v in second if v not in first)


# --- personalize -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    target: str | None  # None: a new person
    losers: tuple[str, ...] = ()  # persons merged into the target
    conflicts: tuple[tuple[Identity, RejectReason], ...] = ()  # owned identities not attached


def _survivor_key(state: PoolState, pid: str) -> tuple[Order, str]:
    record = state.profile(pid)
    assert record is not None
    return (record.created, pid)


def _plan(
    state: PoolState, wanted: list[Identity], owners: dict[Identity, str], config: RuleConfig
) -> _Plan | RejectReason:
    """Which person the identities resolve to, and which persons merge into it (SPEC §4.4, 4.6)."""
    candidates = list(dict.fromkeys(owners[i] for i in wanted if i in owners))
    if not candidates:
        return _Plan(None)
    records = {pid: state.profile(pid) for pid in candidates}
    claimed_ext = next((v for k, v in wanted if k is IdentityKind.EXTERNAL_USER_ID), None)
    externals = {v for r in records.values() if r is not None for v in r.external_user_ids}
    if claimed_ext is not None and (IdentityKind.EXTERNAL_USER_ID, claimed_ext) not in owners:
        externals.add(claimed_ext)
    # The person owning the highest-priority identity; an unowned externalUserId is a new one.
    first = wanted[0]
    winner: str | None = candidates[0]
    if first in owners:
        winner = owners[first]
    elif first[0] is IdentityKind.EXTERNAL_USER_ID:
        winner = None
    if len(externals) > 1:
        # Protected: two different externalUserIds never merge.
        if config.rules_of(state.pool).conflict_mode is ConflictMode.STRICT:
            return RejectReason.IDENTITY_CONFLICT
        return _no_merge(winner, wanted, owners, RejectReason.IDENTITY_CONFLICT)
    survivor = min(candidates, key=lambda pid: _survivor_key(state, pid))
    losers = tuple(
        sorted((p for p in candidates if p != survivor), key=lambda p: _survivor_key(state, p))
    )
    if losers and not _merge_fits(state, survivor, losers, config.limits):
        return _no_merge(winner or candidates[0], wanted, owners, RejectReason.LIMIT_EXCEEDED)
    return _Plan(survivor, losers)


def _no_merge(
    winner: str | None, wanted: list[Identity], owners: dict[Identity, str], reason: RejectReason
) -> _Plan:
    conflicts = tuple((i, reason) for i in wanted if i in owners and owners[i] != winner)
    return _Plan(winner, (), conflicts)


def _merge_fits(
    state: PoolState, survivor: str, losers: tuple[str, ...], limits: PersonLimits
) -> bool:
    records = [state.profile(pid) for pid in (survivor, *losers)]
    absorbed = sum(1 + r.merges_absorbed for r in records[1:] if r is not None)
    if records[0] is None or records[0].merges_absorbed + absorbed > limits.merges_absorbed:
        return False
    for kind in IDENTITY_PRIORITY:
        values = {v for r in records if r is not None for v in identities_of(r, kind)}
        if len(values) > _limit(limits, kind):
            return False
    return True


def _personalize(
    state: PoolState, claim: StoredClaim, config: RuleConfig, verdict: Verdict
) -> None:
    prid = claim.push_registration_id
    wanted = normalize_all(claim.identity, config, verdict)
    if not wanted:
        blocked = verdict.rejected and all(
            r.reason is RejectReason.BLOCKED_IDENTITY for r in verdict.rejected
        )
        reason = RejectReason.BLOCKED_IDENTITY if blocked else RejectReason.INVALID_IDENTITY
        _reject_segment(state, claim, verdict, reason, "no usable identity")
        return
    install = state.install(prid)
    assert install is not None
    owners = {i: pid for i in wanted if (pid := state.owner(i)) is not None}
    current = state.profile(install.profile_id)
    anonymous: str | None = None
    if current is not None and current.kind == PERSON:
        owned = set(owners.values())
        ext = next((v for k, v in wanted if k is IdentityKind.EXTERNAL_USER_ID), None)
        other_ext = ext is not None and current.external_user_ids not in ((), (ext,))
        if owned == {install.profile_id} and not other_ext:
            # The same person again: add what it lacks.
            _attach_missing(state, install.profile_id, wanted, owners, config, verdict)
            _link_install(state, prid, install.profile_id, claim.segment, LIFECYCLE_PERSONALIZED)
            _apply_attributes(state, install.profile_id, claim, config.limits)
            return
        if not claim.force_depersonalize:
            _reject_segment(
                state, claim, verdict, RejectReason.ALREADY_PERSONALIZED, "personalized to another"
            )
            return
    elif current is not None:
        anonymous = install.profile_id
    plan = _plan(state, wanted, owners, config)
    if isinstance(plan, RejectReason):
        _reject_segment(state, claim, verdict, plan, "identities belong to protected persons")
        return
    if current is not None and current.kind == PERSON:
        # forceDepersonalize: leave the old person first; there is no anonymous period.
        _unlink_install(state, prid, install.profile_id)
        state.put_install(prid, replace(install, profile_id=""))
    target = plan.target
    if target is None:
        target = person_profile_id(state.pool, claim.event_id)
        _create_profile(state, target, PERSON, claim)
    for loser in plan.losers:
        merge_profiles(state, loser, target)
    for identity, reason in plan.conflicts:
        verdict.reject(reason, *identity)
    conflicted = {i for i, _ in plan.conflicts}
    for identity in wanted:
        if identity not in owners and identity not in conflicted:
            _attach(state, target, identity, config, verdict)
    if anonymous is not None and state.profile(anonymous) is not None:
        if config.rules_of(state.pool).continuity is Continuity.LINK:
            merge_profiles(state, anonymous, target)
        else:
            _unlink_install(state, prid, anonymous)
    _link_install(state, prid, target, claim.segment, LIFECYCLE_PERSONALIZED)
    _apply_attributes(state, target, claim, config.limits)


def _attach_missing(
    state: PoolState,
    pid: str,
    wanted: list[Identity],
    owners: dict[Identity, str],
    config: RuleConfig,
    verdict: Verdict,
) -> None:
    for identity in wanted:
        if identity not in owners:
            _attach(state, pid, identity, config, verdict)


# --- the other claims --------------------------------------------------------------------


def _depersonalize(state: PoolState, claim: StoredClaim, verdict: Verdict) -> None:
    prid = claim.push_registration_id
    install = state.install(prid)
    assert install is not None
    current = state.profile(install.profile_id)
    if current is None or current.kind != PERSON:
        _reject_segment(state, claim, verdict, RejectReason.NOT_PERSONALIZED, "not personalized")
        return
    _create_profile(state, claim.anonymous_profile, ANONYMOUS, claim)
    _link_install(state, prid, claim.anonymous_profile, claim.segment, LIFECYCLE_DEPERSONALIZED)


def _uninstall(state: PoolState, claim: StoredClaim) -> None:
    install = state.install(claim.push_registration_id)
    assert install is not None
    state.put_install(claim.push_registration_id, replace(install, lifecycle=LIFECYCLE_UNINSTALLED))


def _person_update(
    state: PoolState, claim: StoredClaim, config: RuleConfig, verdict: Verdict
) -> None:
    install = state.install(claim.push_registration_id)
    assert install is not None
    pid = install.profile_id
    record = state.profile(pid)
    if record is None:
        return
    applied = _has_attributes(claim)
    if applied:
        _apply_attributes(state, pid, claim, config.limits)
    added = normalize_all(claim.identities_added, config, verdict)
    removed = normalize_all(claim.identities_removed, config, None)
    replaced = _normalized_replacements(claim, config, verdict)
    if not (added or removed or replaced):
        if not applied and verdict.rejected:
            verdict.dead = (verdict.rejected[0].reason, "no usable identity")
            verdict.rejected.clear()
        return
    if record.kind != PERSON:
        for kind, value in [*added, *removed, *(new for _, new in replaced)]:
            verdict.reject(RejectReason.NOT_PERSONALIZED, kind, value)
        if not applied:
            verdict.dead = (RejectReason.NOT_PERSONALIZED, "identity change on anonymous install")
            verdict.rejected.clear()
        return
    for identity in removed:
        if state.owner(identity) == pid:
            _detach(state, pid, identity)
    for old, new in replaced:
        _replace_identity(state, pid, old, new, config, verdict)
    for identity in added:
        owner = state.owner(identity)
        if owner is None:
            _attach(state, pid, identity, config, verdict)
        elif owner != pid:
            verdict.reject(RejectReason.IDENTITY_CONFLICT, *identity)


def _normalized_replacements(
    claim: StoredClaim, config: RuleConfig, verdict: Verdict
) -> list[tuple[Identity, Identity]]:
    pairs: list[tuple[Identity, Identity]] = []
    for kind_value, old_raw, new_raw in claim.identities_replaced:
        kind = IdentityKind(kind_value)
        old, _ = normalize_identity(kind, old_raw, frozenset())
        new, reason = normalize_identity(kind, new_raw, config.blocklist)
        if new is None:
            verdict.reject(reason or RejectReason.INVALID_IDENTITY, kind, new_raw)
        elif old is not None:
            pairs.append(((kind, old), (kind, new)))
    return pairs


def _replace_identity(
    state: PoolState, pid: str, old: Identity, new: Identity, config: RuleConfig, verdict: Verdict
) -> None:
    """A mutable identity: the new value takes the old one's place in the same profile."""
    owner = state.owner(new)
    if owner is not None and owner != pid:
        verdict.reject(RejectReason.IDENTITY_CONFLICT, *new)
        return
    record = state.profile(pid)
    assert record is not None
    kind = old[0]
    values = identities_of(record, kind)
    if state.owner(old) != pid or old[1] not in values:
        if owner is None:
            _attach(state, pid, new, config, verdict)
        return
    if owner == pid:
        _detach(state, pid, old)
        return
    swapped = tuple(new[1] if v == old[1] else v for v in values)
    state.put_profile(pid, _with_identities(record, kind, swapped))
    state.set_owner(old, None)
    state.set_owner(new, pid)


def _forget(state: PoolState, claim: StoredClaim, config: RuleConfig, verdict: Verdict) -> None:
    prid = claim.push_registration_id
    install = state.install(prid)
    assert install is not None
    if claim.identity is not None:
        given = normalize_all(claim.identity, config, None)
        hashes = [identity_hash(state.pool, kind, value) for kind, value in given]
        targets = sorted({pid for i in given if (pid := state.owner(i)) is not None})
    else:
        hashes = [install_hash(state.pool, prid)]
        current = state.profile(install.profile_id)
        targets = [install.profile_id] if current is not None and current.kind == PERSON else []
    # Forgotten before (a rebuild that restored the register): nothing left to erase.
    known = any(state.forgotten_at_or_after(h, claim.order) for h in hashes)
    for hashed in hashes:
        state.remember_forget(hashed, claim.order)
    if not targets and not known:
        verdict.dead = (RejectReason.UNKNOWN_PERSON, "no person to forget")
    for pid in targets:
        _erase(state, pid, claim.order)
    if claim.identity is None and claim.segment != install.segment:
        # The install forgot its own person and already opened a fresh anonymous segment.
        _create_profile(state, claim.anonymous_profile, ANONYMOUS, claim)
        _link_install(state, prid, claim.anonymous_profile, claim.segment, LIFECYCLE_ANONYMOUS)


def _erase(state: PoolState, pid: str, order: Order) -> None:
    """Delete a person from every table; keep only hashes in the forget register (SPEC §4.10)."""
    record = state.profile(pid)
    assert record is not None
    for kind in IDENTITY_PRIORITY:
        for value in identities_of(record, kind):
            state.remember_forget(identity_hash(state.pool, kind, value), order)
            state.set_owner((kind, value), None)
    for prid in record.installs:
        state.remember_forget(install_hash(state.pool, prid), order)
        install = state.install(prid)
        if install is not None and install.profile_id == pid:
            lifecycle = install.lifecycle
            if lifecycle != LIFECYCLE_UNINSTALLED:
                lifecycle = LIFECYCLE_ANONYMOUS
            state.put_install(
                prid,
                replace(install, profile_id="", lifecycle=lifecycle, was_personalized=False),
            )
    for ref in record.segments:
        state.segments.put(state.key(ref), SegmentLink(pid, None, True))
    for merged in record.merged_from:
        state.aliases.delete(state.key(merged))
    state.profiles.delete(state.key(pid))


def _skipped_by_forget(state: PoolState, claim: StoredClaim, config: RuleConfig) -> bool:
    """A claim older than a registered forget of its install or identities never applies."""
    if claim.kind not in (EventType.PERSONALIZE, EventType.PERSON_UPDATE):
        return False
    if state.forgotten_after(install_hash(state.pool, claim.push_registration_id), claim.order):
        return True
    identities = [
        *normalize_all(claim.identity, config, None),
        *normalize_all(claim.identities_added, config, None),
    ]
    return any(
        state.forgotten_after(identity_hash(state.pool, kind, value), claim.order)
        for kind, value in identities
    )


def apply_rules(state: PoolState, claim: StoredClaim, config: RuleConfig) -> Verdict:
    """Apply one claim to the pool state (in fold order) and say what was rejected."""
    verdict = Verdict()
    # Claims stamped after an uninstall never get here: the install stage rejects them.
    _ensure_install(state, claim)
    if _skipped_by_forget(state, claim, config):
        if claim.kind == EventType.PERSONALIZE:
            install = state.install(claim.push_registration_id)
            assert install is not None
            ref_pid = install.profile_id
            _set_segment(state, claim.push_registration_id, claim.segment, ref_pid, forgotten=True)
        return verdict
    if claim.kind == EventType.PERSONALIZE:
        _personalize(state, claim, config, verdict)
    elif claim.kind == EventType.DEPERSONALIZE:
        _depersonalize(state, claim, verdict)
    elif claim.kind == EventType.PERSON_UPDATE:
        _person_update(state, claim, config, verdict)
    elif claim.kind == EventType.UNINSTALL:
        _uninstall(state, claim)
    elif claim.kind == EventType.FORGET:
        _forget(state, claim, config, verdict)
    return verdict
