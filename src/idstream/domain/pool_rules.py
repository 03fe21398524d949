"""The identity and profile rules of SPEC §4.3-4.10, applied to one claim in log order.

Domain layer, standard library only. `apply_rules` changes pool state through tracked tables
and returns a `Verdict` (whole-claim rejection, identities not attached); pool.py decides what
to emit from the state diff. The operations it is built of are in pool_profiles.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from idstream.domain.config import ConflictMode, Continuity, PersonLimits, RuleConfig
from idstream.domain.events import IDENTITY_PRIORITY, EventType, IdentityKind
from idstream.domain.identities import mask, normalize_identity
from idstream.domain.ids import forgotten_profile_id, person_profile_id
from idstream.domain.messages import Claim, LogPosition
from idstream.domain.pool_profiles import (
    CONTINUITY,
    INSTALLS_LIMIT,
    LIFECYCLE_ANONYMOUS,
    LIFECYCLE_DEPERSONALIZED,
    LIFECYCLE_PERSONALIZED,
    LIFECYCLE_UNINSTALLED,
    LIMIT_NAMES,
    MERGES_LIMIT,
    SHARED_IDENTITY,
    Identity,
    MergeReason,
    PoolState,
    Verdict,
    apply_attributes,
    attach,
    create_profile,
    detach,
    ensure_install,
    has_attributes,
    identities_of,
    limit,
    link_install,
    merge_profiles,
    normalize_all,
    reject,
    unlink_install,
    with_identities,
)
from idstream.domain.pool_state import ANONYMOUS, PERSON
from idstream.domain.reasons import RejectReason

# --- personalize -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    target: str | None  # None: a new person
    losers: tuple[str, ...] = ()  # persons merged into the target
    # Owned identities not attached: why, and the limit a skipped merge would have exceeded.
    conflicts: tuple[tuple[Identity, RejectReason, str | None], ...] = ()


def _survivor_key(state: PoolState, pid: str) -> tuple[LogPosition, str]:
    record = state.profile(pid)
    assert record is not None
    return (record.created, pid)


def _plan(
    state: PoolState,
    wanted: list[Identity],
    owners: dict[Identity, str],
    config: RuleConfig,
    arriving: frozenset[str],
) -> _Plan | RejectReason:
    """Which person the identities resolve to, and which persons merge into it (SPEC §4.4, 4.6).

    `arriving` are the installs the claim links to the person (its own, and those of the
    anonymous profile continuity merges in): a merge must leave room for them.
    """
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
    exceeded = _merge_exceeds(state, survivor, losers, config.limits, arriving) if losers else None
    if exceeded is not None:
        return _no_merge(
            winner or candidates[0], wanted, owners, RejectReason.LIMIT_EXCEEDED, exceeded
        )
    return _Plan(survivor, losers)


def _no_merge(
    winner: str | None,
    wanted: list[Identity],
    owners: dict[Identity, str],
    reason: RejectReason,
    exceeded: str | None = None,
) -> _Plan:
    conflicts = tuple((i, reason, exceeded) for i in wanted if i in owners and owners[i] != winner)
    return _Plan(winner, (), conflicts)


def _merge_exceeds(
    state: PoolState,
    survivor: str,
    losers: tuple[str, ...],
    limits: PersonLimits,
    arriving: frozenset[str],
) -> str | None:
    """The limit the merge would exceed (LIMIT_NAMES, MERGES_LIMIT, INSTALLS_LIMIT); None: it
    fits."""
    records = [state.profile(pid) for pid in (survivor, *losers)]
    absorbed = sum(1 + r.merges_absorbed for r in records[1:] if r is not None)
    if records[0] is None or records[0].merges_absorbed + absorbed > limits.merges_absorbed:
        return MERGES_LIMIT
    for kind in IDENTITY_PRIORITY:
        values = {v for r in records if r is not None for v in identities_of(r, kind)}
        if len(values) > limit(limits, kind):
            return LIMIT_NAMES[kind]
    installs = arriving.union(*(r.installs for r in records if r is not None))
    if len(installs) > limits.installs:
        return INSTALLS_LIMIT
    return None


def _arriving(
    state: PoolState, prid: str, anonymous: str | None, config: RuleConfig
) -> frozenset[str]:
    """The installs a personalize links to its person: the install, and with continuity
    `link` those of the anonymous profile it merges in."""
    record = state.profile(anonymous) if anonymous is not None else None
    if record is None or config.rules_of(state.pool).continuity is not Continuity.LINK:
        return frozenset((prid,))
    return frozenset((prid, *record.installs))


def _room_for(state: PoolState, target: str | None, arriving: frozenset[str], cap: int) -> bool:
    """Whether linking `arriving` to `target` keeps it within the installs cap (SPEC §4.6)."""
    record = state.profile(target) if target is not None else None
    linked = record.installs if record is not None else ()
    return len(arriving.union(linked)) <= cap


def _unusable_reason(verdict: Verdict) -> RejectReason:
    """Why a claim none of whose identities can be used is rejected as a whole."""
    blocked = verdict.rejected and all(
        r.reason is RejectReason.BLOCKED_IDENTITY for r in verdict.rejected
    )
    return RejectReason.BLOCKED_IDENTITY if blocked else RejectReason.INVALID_IDENTITY


def _personalize(state: PoolState, claim: Claim, config: RuleConfig, verdict: Verdict) -> None:
    prid = claim.push_registration_id
    wanted = normalize_all(claim.identity, config, verdict)
    if not wanted:
        reject(verdict, _unusable_reason(verdict), "no usable identity")
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
            link_install(state, prid, install.profile_id, claim.event_id, LIFECYCLE_PERSONALIZED)
            apply_attributes(state, install.profile_id, claim, config.limits)
            return
        if not claim.force_depersonalize:
            reject(verdict, RejectReason.ALREADY_PERSONALIZED, "personalized to another person")
            return
    elif current is not None:
        anonymous = install.profile_id
    arriving = _arriving(state, prid, anonymous, config)
    plan = _plan(state, wanted, owners, config, arriving)
    if isinstance(plan, RejectReason):
        reject(verdict, plan, "identities belong to protected persons")
        return
    if not _room_for(state, plan.target, arriving, config.limits.installs):
        # The person has as many installs as it may: this one stays where it is (its
        # anonymous profile) and none of the identities is attached.
        for kind, value in wanted:
            verdict.reject(RejectReason.LIMIT_EXCEEDED, kind, value, limit=INSTALLS_LIMIT)
        return
    if current is not None and current.kind == PERSON:
        # forceDepersonalize: leave the old person first; there is no anonymous period.
        unlink_install(state, prid, install.profile_id)
        state.put_install(prid, replace(install, profile_id=""))
    target = plan.target
    if target is None:
        target = person_profile_id(state.pool, prid, claim.seq)
        create_profile(state, target, PERSON, claim)
    for loser in plan.losers:
        # Why: the identity of the claim it owned that ranks highest.
        kind, value = next(i for i in wanted if owners.get(i) == loser)
        verdict.merged[loser] = MergeReason(SHARED_IDENTITY, kind, mask(kind, value))
        merge_profiles(state, loser, target, config.limits)
    for identity, reason, exceeded in plan.conflicts:
        verdict.reject(reason, *identity, limit=exceeded)
    conflicted = {i for i, _, _ in plan.conflicts}
    for identity in wanted:
        if identity not in owners and identity not in conflicted:
            attach(state, target, identity, config, verdict)
    if anonymous is not None and state.profile(anonymous) is not None:
        if config.rules_of(state.pool).continuity is Continuity.LINK:
            verdict.merged[anonymous] = MergeReason(CONTINUITY)
            merge_profiles(state, anonymous, target, config.limits)
        else:
            unlink_install(state, prid, anonymous)
    link_install(state, prid, target, claim.event_id, LIFECYCLE_PERSONALIZED)
    apply_attributes(state, target, claim, config.limits)


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
            attach(state, pid, identity, config, verdict)


# --- the other claims --------------------------------------------------------------------


def _depersonalize(state: PoolState, claim: Claim, verdict: Verdict) -> None:
    prid = claim.push_registration_id
    install = state.install(prid)
    assert install is not None
    current = state.profile(install.profile_id)
    if current is None or current.kind != PERSON:
        reject(verdict, RejectReason.NOT_PERSONALIZED, "install is not personalized")
        return
    create_profile(state, claim.anonymous_profile, ANONYMOUS, claim)
    link_install(state, prid, claim.anonymous_profile, claim.event_id, LIFECYCLE_DEPERSONALIZED)


def _uninstall(state: PoolState, claim: Claim) -> None:
    install = state.install(claim.push_registration_id)
    assert install is not None
    state.put_install(claim.push_registration_id, replace(install, lifecycle=LIFECYCLE_UNINSTALLED))


def _person_update(state: PoolState, claim: Claim, config: RuleConfig, verdict: Verdict) -> None:
    install = state.install(claim.push_registration_id)
    assert install is not None
    pid = install.profile_id
    record = state.profile(pid)
    if record is None:
        return
    applied = has_attributes(claim)
    if applied:
        apply_attributes(state, pid, claim, config.limits)
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
            detach(state, pid, identity)
    for old, new in replaced:
        _replace_identity(state, pid, old, new, config, verdict)
    for identity in added:
        owner = state.owner(identity)
        if owner is None:
            attach(state, pid, identity, config, verdict)
        elif owner != pid:
            verdict.reject(RejectReason.IDENTITY_CONFLICT, *identity)


def _normalized_replacements(
    claim: Claim, config: RuleConfig, verdict: Verdict
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
            attach(state, pid, new, config, verdict)
        return
    if owner == pid:
        detach(state, pid, old)
        return
    swapped = tuple(new[1] if v == old[1] else v for v in values)
    state.put_profile(pid, with_identities(record, kind, swapped))
    state.set_owner(old, None)
    state.set_owner(new, pid)


def _forget(state: PoolState, claim: Claim, config: RuleConfig, verdict: Verdict) -> None:
    prid = claim.push_registration_id
    install = state.install(prid)
    assert install is not None
    if claim.identity is not None:
        unusable = Verdict()
        given = normalize_all(claim.identity, config, unusable)
        if not given:
            reject(verdict, _unusable_reason(unusable), "no usable identity to forget")
            return
        hashes = [state.identity_hash(identity) for identity in given]
        targets = sorted({pid for i in given if (pid := state.owner(i)) is not None})
    else:
        hashes = [state.install_hash(prid)]
        current = state.profile(install.profile_id)
        targets = [install.profile_id] if current is not None and current.kind == PERSON else []
    if not targets:
        if any(state.forgotten_after(hashed, claim.timestamp - 1) for hashed in hashes):
            # Forgotten already by this forget or a later one (a rebuild that applied the
            # forget register first): nothing is left to erase.
            verdict.skipped = True
        else:
            reject(verdict, RejectReason.UNKNOWN_PERSON, "no person to forget")
        return
    for hashed in hashes:
        state.remember_forget(hashed, claim.timestamp, claim.position)
    for pid in targets:
        _erase(state, pid, claim)


def _erase(state: PoolState, pid: str, claim: Claim) -> None:
    """Delete a person from every table; keep only hashes in the forget register (SPEC §4.10).

    Every install linked to the person moves to a fresh anonymous profile: the one the forget
    opened for the forgetting install itself, `forgotten_profile_id` for the others. The
    install stage resolves its later events there.
    """
    record = state.profile(pid)
    assert record is not None
    for kind in IDENTITY_PRIORITY:
        for value in identities_of(record, kind):
            state.remember_forget(
                state.identity_hash((kind, value)), claim.timestamp, claim.position
            )
            state.set_owner((kind, value), None)
    for prid in record.installs:
        state.remember_forget(state.install_hash(prid), claim.timestamp, claim.position)
        install = state.install(prid)
        if install is None or install.profile_id != pid:
            continue
        own = prid == claim.push_registration_id
        fresh = (
            claim.anonymous_profile
            if own
            else forgotten_profile_id(prid, claim.push_registration_id, claim.seq)
        )
        create_profile(state, fresh, ANONYMOUS, claim)
        lifecycle = install.lifecycle
        if lifecycle != LIFECYCLE_UNINSTALLED:
            lifecycle = LIFECYCLE_ANONYMOUS
        segment = claim.event_id if own else install.segment
        state.put_install(prid, replace(install, profile_id="", was_personalized=False))
        link_install(state, prid, fresh, segment, lifecycle)
    for merged in record.merged_from:
        state.aliases.delete(state.key(merged))
    state.profiles.delete(state.key(pid))


def _skipped_by_forget(state: PoolState, claim: Claim, config: RuleConfig) -> bool:
    """A claim stamped before a registered forget of its install or identities never applies:
    an offline queue delivered after the forget cannot bring the person back."""
    if claim.kind not in (EventType.PERSONALIZE, EventType.PERSON_UPDATE):
        return False
    if state.forgotten_after(state.install_hash(claim.push_registration_id), claim.timestamp):
        return True
    identities = [
        *normalize_all(claim.identity, config, None),
        *normalize_all(claim.identities_added, config, None),
    ]
    return any(
        state.forgotten_after(state.identity_hash(identity), claim.timestamp)
        for identity in identities
    )


def apply_rules(state: PoolState, claim: Claim, config: RuleConfig) -> Verdict:
    """Apply one claim to the pool state (in log order) and say what was rejected."""
    verdict = Verdict()
    # Claims stamped after an uninstall never get here: the install stage rejects them.
    ensure_install(state, claim)
    if _skipped_by_forget(state, claim, config):
        verdict.skipped = True
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
