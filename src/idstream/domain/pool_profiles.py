"""Operations on pool state that the rules are made of: identities, links, attributes, merges.

Domain layer, standard library only. Every write goes through the tracked tables of
`PoolState`, which remember each key's value from before the claim, so pool.py can emit the
difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from idstream.domain import keys
from idstream.domain.config import PersonLimits, RuleConfig
from idstream.domain.erasure import ForgetEntry
from idstream.domain.events import IDENTITY_PRIORITY, IdentityKind
from idstream.domain.identities import identity_hash, install_hash, mask, normalize_identity
from idstream.domain.messages import Claim, ClaimIdentity, LogPosition, Value
from idstream.domain.pool_state import (
    ANONYMOUS,
    PERSON,
    Alias,
    Entry,
    IdentityOwner,
    InstallRecord,
    ProfileRecord,
    Stamp,
    TagEntry,
)
from idstream.domain.ports import StateTable
from idstream.domain.reasons import RejectReason

V = TypeVar("V")
E = TypeVar("E", Entry, TagEntry)

# Ids of anonymous profiles start with this (domain/ids.py).
ANONYMOUS_PREFIX = "a_"

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
    limit: str | None = None  # limit_exceeded: which (LIMIT_NAMES, MERGES_LIMIT, INSTALLS_LIMIT)


# Why a profile was merged into another (the `merged` change's `reason`).
SHARED_IDENTITY = "shared_identity"  # the personalize carried an identity the loser owned
CONTINUITY = "continuity"  # the install's anonymous period joins the person (Continuity.LINK)


@dataclass(frozen=True, slots=True)
class MergeReason:
    reason: str  # SHARED_IDENTITY | CONTINUITY
    kind: IdentityKind | None = None  # shared_identity: the identity that matched, masked
    masked: str = ""


@dataclass(slots=True)
class Verdict:
    dead: tuple[RejectReason, str] | None = None  # the whole claim goes to the dead letter
    rejected: list[Rejected] = field(default_factory=list)
    skipped: bool = False  # dropped by a rule (stamped before a forget of its person)
    merged: dict[str, MergeReason] = field(default_factory=dict)  # loser -> why

    def reject(
        self, reason: RejectReason, kind: IdentityKind, value: str, *, limit: str | None = None
    ) -> None:
        self.rejected.append(Rejected(reason, kind, mask(kind, value), limit))


class TrackedTable(Generic[V]):
    """A StateTable that remembers the first old value of every key written through it, so
    the state before a claim can be read back (`get_before`) and compared."""

    def __init__(self, table: StateTable[V]) -> None:
        self._table = table
        self.before: dict[str, V | None] = {}

    def get(self, key: str) -> V | None:
        return self._table.get(key)

    def get_before(self, key: str) -> V | None:
        """The value the key had when the claim began."""
        if key in self.before:
            return self.before[key]
        return self._table.get(key)

    def put(self, key: str, value: V) -> None:
        if key not in self.before:
            self.before[key] = self._table.get(key)
        self._table.put(key, value)

    def delete(self, key: str) -> None:
        if key not in self.before:
            old = self._table.get(key)
            if old is None:
                return
            self.before[key] = old
        self._table.delete(key)

    def changed_keys(self) -> Iterator[str]:
        """Keys written during the claim whose value differs from the one before."""
        for key, old in self.before.items():
            if self._table.get(key) != old:
                yield key


@dataclass(slots=True)
class PoolState:
    """Typed access to one pool's tracked tables (keys start with the pool)."""

    pool: str
    secret: bytes  # the deployment's key for hashes of personal data (RuleConfig)
    profiles: TrackedTable[ProfileRecord]
    installs: TrackedTable[InstallRecord]
    identities: TrackedTable[IdentityOwner]
    aliases: TrackedTable[Alias]
    forgotten: TrackedTable[ForgetEntry]
    prefix: str = ""  # keys.key(pool), set on creation

    def __post_init__(self) -> None:
        self.prefix = keys.key(self.pool)

    def key(self, part: str) -> str:
        """The key of `part` in this pool: keys.key(pool, part)."""
        return f"{self.prefix}{len(part)}:{part}"

    def profile(self, pid: str) -> ProfileRecord | None:
        return self.profiles.get(self.key(pid)) if pid else None

    def put_profile(self, pid: str, record: ProfileRecord) -> None:
        self.profiles.put(self.key(pid), record)

    def install(self, prid: str) -> InstallRecord | None:
        return self.installs.get(self.key(prid))

    def put_install(self, prid: str, record: InstallRecord) -> None:
        if self.installs.get(self.key(prid)) != record:
            self.installs.put(self.key(prid), record)

    def identity_hash(self, identity: Identity) -> str:
        return identity_hash(self.secret, self.pool, identity[0], identity[1])

    def install_hash(self, prid: str) -> str:
        return install_hash(self.secret, self.pool, prid)

    def owner(self, identity: Identity) -> str | None:
        found = self.identities.get(self.key(self.identity_hash(identity)))
        return found.profile_id if found is not None else None

    def set_owner(self, identity: Identity, pid: str | None) -> None:
        key = self.key(self.identity_hash(identity))
        if pid is None:
            self.identities.delete(key)
        else:
            self.identities.put(key, IdentityOwner(pid))

    def remember_forget(self, hashed: str, timestamp: int, position: LogPosition) -> None:
        old = self.forgotten.get(self.key(hashed))
        if old is None or old.timestamp < timestamp:
            self.forgotten.put(self.key(hashed), ForgetEntry(timestamp, position))

    def forgotten_after(self, hashed: str, timestamp: int) -> bool:
        """A forget of `hashed` stamped after `timestamp` is registered."""
        entry = self.forgotten.get(self.key(hashed))
        return entry is not None and entry.timestamp > timestamp


# --- identities --------------------------------------------------------------------------


def identities_of(record: ProfileRecord, kind: IdentityKind) -> tuple[str, ...]:
    values: tuple[str, ...] = getattr(record, _FIELDS[kind])
    return values


def with_identities(
    record: ProfileRecord, kind: IdentityKind, values: tuple[str, ...]
) -> ProfileRecord:
    if kind is IdentityKind.EXTERNAL_USER_ID:
        return replace(record, external_user_ids=values)
    if kind is IdentityKind.EMAIL:
        return replace(record, emails=values)
    return replace(record, phones=values)


# The name of each per-person limit, as an `identity_rejected` change names it (`limit`).
LIMIT_NAMES = {
    IdentityKind.EXTERNAL_USER_ID: "externalUserIds",
    IdentityKind.EMAIL: "emails",
    IdentityKind.PHONE: "phones",
}
MERGES_LIMIT = "merges"
INSTALLS_LIMIT = "installs"


def limit(limits: PersonLimits, kind: IdentityKind) -> int:
    if kind is IdentityKind.EXTERNAL_USER_ID:
        return limits.external_user_ids
    return limits.emails if kind is IdentityKind.EMAIL else limits.phones


def _raw_identities(identity: ClaimIdentity | None) -> list[tuple[IdentityKind, str]]:
    if identity is None:
        return []
    raw: list[tuple[IdentityKind, str]] = []
    if identity.external_user_id is not None:
        raw.append((IdentityKind.EXTERNAL_USER_ID, identity.external_user_id))
    raw.extend((IdentityKind.EMAIL, value) for value in identity.emails)
    raw.extend((IdentityKind.PHONE, value) for value in identity.phones)
    return raw


def normalize_all(
    identity: ClaimIdentity | None, config: RuleConfig, verdict: Verdict | None
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


def attach(
    state: PoolState, pid: str, identity: Identity, config: RuleConfig, verdict: Verdict
) -> bool:
    """Give an unowned identity to `pid` unless that exceeds the person's limit."""
    record = state.profile(pid)
    assert record is not None
    kind, value = identity
    values = identities_of(record, kind)
    if value in values:
        return True
    if len(values) >= limit(config.limits, kind):
        verdict.reject(RejectReason.LIMIT_EXCEEDED, kind, value, limit=LIMIT_NAMES[kind])
        return False
    state.put_profile(pid, with_identities(record, kind, (*values, value)))
    state.set_owner(identity, pid)
    return True


def detach(state: PoolState, pid: str, identity: Identity) -> None:
    record = state.profile(pid)
    assert record is not None
    kind, value = identity
    values = tuple(v for v in identities_of(record, kind) if v != value)
    state.put_profile(pid, with_identities(record, kind, values))
    state.set_owner(identity, None)


# --- links -------------------------------------------------------------------------------


def unlink_install(state: PoolState, prid: str, pid: str) -> None:
    record = state.profile(pid)
    if record is not None and prid in record.installs:
        installs = tuple(i for i in record.installs if i != prid)
        state.put_profile(pid, replace(record, installs=installs))


def link_install(state: PoolState, prid: str, pid: str, segment: str, lifecycle: str) -> None:
    """Link the install (and its current segment) to `pid`, unlinking it from its old profile."""
    install = state.install(prid)
    assert install is not None
    if install.profile_id and install.profile_id != pid:
        unlink_install(state, prid, install.profile_id)
    record = state.profile(pid)
    assert record is not None
    if prid not in record.installs:
        state.put_profile(pid, replace(record, installs=tuple(sorted((*record.installs, prid)))))
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


def create_profile(state: PoolState, pid: str, kind: str, claim: Claim) -> None:
    if state.profile(pid) is None:
        state.put_profile(pid, ProfileRecord(kind, claim.position, claim.timestamp))


def ensure_install(state: PoolState, claim: Claim) -> InstallRecord:
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
            dict(facts.custom_attributes),
            claim.event_id,
            "",
        )
    elif (
        install.app_code,
        install.push_enabled,
        install.primary_device,
        install.system_data,
        install.custom_attributes,
    ) != (
        facts.app_code,
        facts.push_enabled,
        facts.primary_device,
        facts.system_data,
        facts.custom_attributes,
    ):
        install = replace(
            install,
            app_code=facts.app_code,
            push_enabled=facts.push_enabled,
            primary_device=facts.primary_device,
            system_data=dict(facts.system_data),
            custom_attributes=dict(facts.custom_attributes),
        )
    state.put_install(prid, install)
    if fresh:
        # The install's first event opened its first segment, anonymous: the install stage
        # resolved it to this profile without asking (install.py).
        create_profile(state, claim.anonymous_profile, ANONYMOUS, claim)
        link_install(state, prid, claim.anonymous_profile, claim.event_id, LIFECYCLE_ANONYMOUS)
    found = state.install(prid)
    assert found is not None
    return found


def reject(verdict: Verdict, reason: RejectReason, detail: str) -> None:
    """The whole claim goes to the dead letter; the install keeps its segment and profile."""
    verdict.dead = (reason, detail)
    verdict.rejected.clear()


# --- attributes --------------------------------------------------------------------------


def _lww(entries: dict[str, Entry], updates: dict[str, Value], stamp: Stamp) -> dict[str, Entry]:
    merged = dict(entries)
    for key, value in updates.items():
        old = merged.get(key)
        if old is None or stamp >= old.stamp:
            merged[key] = Entry(value, stamp)
    return merged


def _within_cap(
    entries: dict[str, Entry], updates: dict[str, Value], stamp: Stamp, cap: int
) -> dict[str, Value]:
    """The LWW updates without the new names beyond `cap` names with a value (PersonLimits)."""
    present = sum(1 for e in entries.values() if e.value is not None)
    kept: dict[str, Value] = {}
    for name, value in updates.items():
        old = entries.get(name)
        wins = old is None or stamp >= old.stamp
        if wins and value is not None and (old is None or old.value is None):
            if present >= cap:
                continue
            present += 1
        kept[name] = value
    return kept


def apply_attributes(state: PoolState, pid: str, claim: Claim, limits: PersonLimits) -> None:
    record = state.profile(pid)
    assert record is not None
    stamp = (claim.timestamp, claim.event_id)
    custom = _within_cap(
        record.custom_attributes, claim.custom_attributes, stamp, limits.custom_attributes
    )
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
        custom_attributes=_lww(record.custom_attributes, custom, stamp),
        tags=tags,
    )
    if updated != record:
        state.put_profile(pid, updated)


def has_attributes(claim: Claim) -> bool:
    return bool(
        claim.attributes or claim.custom_attributes or claim.tags_added or claim.tags_removed
    )


# --- merges ------------------------------------------------------------------------------


def _has_value(entry: Entry | TagEntry) -> bool:
    return entry.present if isinstance(entry, TagEntry) else entry.value is not None


def _merge_entries(survivor: dict[str, E], loser: dict[str, E], cap: int | None) -> dict[str, E]:
    """LWW union; names with a value the survivor lacks join only up to `cap` (None: no cap)."""
    merged = dict(survivor)
    present = sum(1 for e in merged.values() if _has_value(e))
    for key, entry in loser.items():
        old = merged.get(key)
        if old is None or entry.stamp > old.stamp:
            if cap is not None and _has_value(entry) and (old is None or not _has_value(old)):
                if present >= cap:
                    continue
                present += 1
            merged[key] = entry
    return merged


def merge_profiles(state: PoolState, loser_id: str, survivor_id: str, limits: PersonLimits) -> None:
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
    # A profile created by this same claim was never announced to consumers (no `created`
    # change), so nothing refers to it: it leaves no alias and no mergedFrom entry.
    announced = state.profiles.get_before(state.key(loser_id)) is not None
    gone = (*loser.merged_from, loser_id) if announced else loser.merged_from
    for merged in gone:
        state.aliases.put(state.key(merged), Alias(survivor_id))
    absorbed = survivor.merges_absorbed
    if loser.kind == PERSON:
        absorbed += 1 + loser.merges_absorbed
    merged_record = replace(
        survivor,
        external_user_ids=union(survivor.external_user_ids, loser.external_user_ids),
        emails=union(survivor.emails, loser.emails),
        phones=union(survivor.phones, loser.phones),
        attributes=_merge_entries(survivor.attributes, loser.attributes, None),
        custom_attributes=_merge_entries(
            survivor.custom_attributes, loser.custom_attributes, limits.custom_attributes
        ),
        tags=_merge_entries(survivor.tags, loser.tags, limits.tags),
        installs=tuple(sorted(set(survivor.installs) | set(loser.installs))),
        merged_from=union(survivor.merged_from, gone),
        merges_absorbed=absorbed,
    )
    state.put_profile(survivor_id, _forget_oldest_anonymous(state, merged_record))
    state.profiles.delete(state.key(loser_id))


# Anonymous periods a person keeps in `mergedFrom` (and as aliases): every logout and login
# absorbs one, so without a bound a person's record would grow with its traffic. Persons
# merged in are bounded by the merge cap and all kept.
MAX_ANONYMOUS_MERGED = 20


def _forget_oldest_anonymous(state: PoolState, record: ProfileRecord) -> ProfileRecord:
    anonymous = [pid for pid in record.merged_from if pid.startswith(ANONYMOUS_PREFIX)]
    if len(anonymous) <= MAX_ANONYMOUS_MERGED:
        return record
    dropped = set(anonymous[: len(anonymous) - MAX_ANONYMOUS_MERGED])
    for pid in dropped:
        state.aliases.delete(state.key(pid))
    return replace(record, merged_from=tuple(p for p in record.merged_from if p not in dropped))


def union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(v for v in second if v not in first)
