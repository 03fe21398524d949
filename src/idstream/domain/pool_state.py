"""The pool stage's state: stored value types, tables and key layout.

Domain layer, standard library only. Stored values are frozen dataclasses of str, int, float,
bool, None, tuple, dict and nested such dataclasses (storage serializes them with msgspec), so
enums are stored as their `.value`. Every key starts with the pool and `\\x1f`, because one stage
instance may hold several pools in the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from idstream.domain.ports import StateTable, TableFactory

SEP = "\x1f"  # between key parts: sorts before every printable character
UNDO_SEP = "\x1e"  # between a claim's log key and the journaled key
_TS_OFFSET = 10**18  # order timestamps may be negative; keys must sort as numbers

Stamp = tuple[int, str]  # (event timestamp, eventId): last-writer-wins order
Order = tuple[int, str]  # Claim.order
StoredValue = str | int | float | bool | None

ANONYMOUS = "anonymous"
PERSON = "person"


@dataclass(frozen=True, slots=True)
class Entry:
    """One attribute value with the stamp of the write that set it (None: unset, kept for LWW)."""

    value: StoredValue
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class TagEntry:
    present: bool
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """A profile, anonymous or person. Identities are kept in the order they were attached."""

    kind: str  # anonymous | person
    created: Order  # order key of the claim that created it (merge survivor rule)
    created_at: int  # event time of that claim, for the snapshot
    external_user_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    attributes: dict[str, Entry] = field(default_factory=dict)
    custom_attributes: dict[str, Entry] = field(default_factory=dict)
    tags: dict[str, TagEntry] = field(default_factory=dict)
    installs: tuple[str, ...] = ()  # pushRegistrationIds linked now (uninstalled ones stay)
    segments: tuple[str, ...] = ()  # segment keys (prid SEP segment) that map to this profile
    merged_from: tuple[str, ...] = ()  # every profile merged into this one, directly or not
    merges_absorbed: int = 0  # persons merged into this one (SPEC §4.6 cap)


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """What the pool knows of an install: facts for snapshots and channels, and its link."""

    app_code: str
    lifecycle: str  # anonymous | personalized | depersonalized | uninstalled
    push_enabled: bool
    primary_device: bool
    system_data: dict[str, StoredValue]
    segment: str  # the install's current segment, as the pool decided it
    profile_id: str  # after a forget: the fresh anonymous profile the forget gave it
    was_personalized: bool = False


@dataclass(frozen=True, slots=True)
class SegmentLink:
    """Which profile a segment of an install belongs to: what a LinkDecision carries."""

    profile_id: str
    rejected: str | None = None
    forgotten: bool = False


@dataclass(frozen=True, slots=True)
class IdentityOwner:
    profile_id: str


@dataclass(frozen=True, slots=True)
class Alias:
    """A merged-away profile id -> its survivor, so stale ids still resolve."""

    survivor: str


@dataclass(frozen=True, slots=True)
class ForgetEntry:
    """Forget register: a hashed identity or install was forgotten by a claim at `order`."""

    order: Order


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    external_user_id: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredFacts:
    app_code: str
    push_enabled: bool
    primary_device: bool
    system_data: dict[str, StoredValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredClaim:
    """A Claim as the log keeps it, so rolled-back claims can be applied again.

    `kind` is "" for a facts-only claim, else the event type.
    """

    push_registration_id: str
    seq: int
    order: Order
    kind: str
    event_id: str
    timestamp: int
    segment: str
    anonymous_profile: str
    facts: StoredFacts
    identity: StoredIdentity | None = None  # personalize, forget
    force_depersonalize: bool = False
    attributes: dict[str, StoredValue] = field(default_factory=dict)
    custom_attributes: dict[str, StoredValue] = field(default_factory=dict)
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()
    identities_added: StoredIdentity | None = None
    identities_removed: StoredIdentity | None = None
    identities_replaced: tuple[tuple[str, str, str], ...] = ()  # (kind, old, new)


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """(pool, pushRegistrationId, seq) -> the claim's log key: the idempotency index."""

    log_key: str


@dataclass(frozen=True, slots=True)
class StoredOutput:
    topic: str
    key: str
    value_json: str | None  # JSON text of the record value; None: tombstone


@dataclass(frozen=True, slots=True)
class StoredDecision:
    push_registration_id: str
    segment: str
    profile_id: str
    pool_seq: int
    forgotten: bool
    rejected: str | None


@dataclass(frozen=True, slots=True)
class ClaimOutputs:
    """What a claim emitted when it arrived, re-sent as is when the same record is redelivered."""

    source: tuple[str, int, int] | None  # (topic, partition, offset) of the input record
    decisions: tuple[StoredDecision, ...] = ()
    outputs: tuple[StoredOutput, ...] = ()


@dataclass(frozen=True, slots=True)
class Counter:
    value: int


@dataclass(frozen=True, slots=True)
class LogTail:
    """The pool's largest log key, and since where every claim has a footprint.

    `tracked_after`: every claim with a larger log key has a footprint ("" for all of them;
    None in state written before footprints existed, read as "not known yet").
    """

    log_key: str
    tracked_after: str | None = None


@dataclass(frozen=True, slots=True)
class Footprint:
    """The tokens (see footprint.py) a claim read or wrote in its latest application."""

    tokens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Touch:
    """Marks an entry of the token index; everything is in the key."""


# The undo journal: per claim, the first old value of every journaled key it wrote.
@dataclass(frozen=True, slots=True)
class ProfileUndo:
    value: ProfileRecord | None


@dataclass(frozen=True, slots=True)
class InstallUndo:
    value: InstallRecord | None


@dataclass(frozen=True, slots=True)
class SegmentUndo:
    value: SegmentLink | None


@dataclass(frozen=True, slots=True)
class IdentityUndo:
    value: IdentityOwner | None


@dataclass(frozen=True, slots=True)
class AliasUndo:
    value: Alias | None


@dataclass(frozen=True, slots=True)
class ForgetUndo:
    value: ForgetEntry | None


POOL_TABLE_TYPES: Mapping[str, type] = MappingProxyType(
    {
        # logical state (journaled)
        "pool_profiles": ProfileRecord,  # pool SEP profileId
        "pool_installs": InstallRecord,  # pool SEP pushRegistrationId
        "pool_segments": SegmentLink,  # pool SEP pushRegistrationId SEP segment
        "pool_identities": IdentityOwner,  # pool SEP kind SEP value
        "pool_aliases": Alias,  # pool SEP loser profileId
        "pool_forgotten": ForgetEntry,  # pool SEP identity_hash | install_hash
        # the claims log
        "pool_claims": StoredClaim,  # pool SEP ts+1e18 (20 digits) SEP eventId SEP prid SEP seq
        "pool_claim_index": ClaimRef,  # pool SEP pushRegistrationId SEP seq (10 digits)
        # bookkeeping, not logical state
        "pool_claim_outputs": ClaimOutputs,  # log key
        "pool_undo_profiles": ProfileUndo,  # log key UNDO_SEP journaled key
        "pool_undo_installs": InstallUndo,
        "pool_undo_segments": SegmentUndo,
        "pool_undo_identities": IdentityUndo,
        "pool_undo_aliases": AliasUndo,
        "pool_undo_forgotten": ForgetUndo,
        "pool_versions": Counter,  # pool SEP profileId: change events emitted
        "pool_sequence": Counter,  # pool: LinkDecision.pool_seq
        "pool_log_tail": LogTail,  # pool: the largest log key, so in-order claims skip a scan
        "pool_footprints": Footprint,  # log key: tokens the claim touched
        "pool_touches": Touch,  # pool SEP token SEP log key after its pool SEP
    }
)

# Tables whose content depends on arrival order or is bookkeeping: left out of state digests.
DIGEST_EXCLUDED: frozenset[str] = frozenset(
    {
        "pool_claim_outputs",
        "pool_undo_profiles",
        "pool_undo_installs",
        "pool_undo_segments",
        "pool_undo_identities",
        "pool_undo_aliases",
        "pool_undo_forgotten",
        "pool_versions",
        "pool_sequence",
        "pool_log_tail",
        "pool_footprints",
        "pool_touches",
    }
)


@dataclass(frozen=True, slots=True)
class PoolTables:
    profiles: StateTable[ProfileRecord]
    installs: StateTable[InstallRecord]
    segments: StateTable[SegmentLink]
    identities: StateTable[IdentityOwner]
    aliases: StateTable[Alias]
    forgotten: StateTable[ForgetEntry]
    claims: StateTable[StoredClaim]
    claim_index: StateTable[ClaimRef]
    claim_outputs: StateTable[ClaimOutputs]
    undo_profiles: StateTable[ProfileUndo]
    undo_installs: StateTable[InstallUndo]
    undo_segments: StateTable[SegmentUndo]
    undo_identities: StateTable[IdentityUndo]
    undo_aliases: StateTable[AliasUndo]
    undo_forgotten: StateTable[ForgetUndo]
    versions: StateTable[Counter]
    sequence: StateTable[Counter]
    log_tail: StateTable[LogTail]
    footprints: StateTable[Footprint]
    touches: StateTable[Touch]


def open_pool_tables(factory: TableFactory) -> PoolTables:
    return PoolTables(
        profiles=factory("pool_profiles", ProfileRecord),
        installs=factory("pool_installs", InstallRecord),
        segments=factory("pool_segments", SegmentLink),
        identities=factory("pool_identities", IdentityOwner),
        aliases=factory("pool_aliases", Alias),
        forgotten=factory("pool_forgotten", ForgetEntry),
        claims=factory("pool_claims", StoredClaim),
        claim_index=factory("pool_claim_index", ClaimRef),
        claim_outputs=factory("pool_claim_outputs", ClaimOutputs),
        undo_profiles=factory("pool_undo_profiles", ProfileUndo),
        undo_installs=factory("pool_undo_installs", InstallUndo),
        undo_segments=factory("pool_undo_segments", SegmentUndo),
        undo_identities=factory("pool_undo_identities", IdentityUndo),
        undo_aliases=factory("pool_undo_aliases", AliasUndo),
        undo_forgotten=factory("pool_undo_forgotten", ForgetUndo),
        versions=factory("pool_versions", Counter),
        sequence=factory("pool_sequence", Counter),
        log_tail=factory("pool_log_tail", LogTail),
        footprints=factory("pool_footprints", Footprint),
        touches=factory("pool_touches", Touch),
    )


def log_key(pool: str, claim: StoredClaim) -> str:
    """Claims log key: sorts by (order, pushRegistrationId, seq)."""
    ts, event_id = claim.order
    return SEP.join(
        (
            pool,
            f"{ts + _TS_OFFSET:020d}",
            event_id,
            claim.push_registration_id,
            f"{claim.seq:010d}",
        )
    )


def index_key(pool: str, push_registration_id: str, seq: int) -> str:
    return SEP.join((pool, push_registration_id, f"{seq:010d}"))


def segment_ref(push_registration_id: str, segment: str) -> str:
    """A segment as a profile lists it (without the pool)."""
    return push_registration_id + SEP + segment


def split_segment_ref(ref: str) -> tuple[str, str]:
    prid, _, segment = ref.partition(SEP)
    return prid, segment
