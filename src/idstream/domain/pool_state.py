"""The pool stage's state: stored value types, tables and key layout.

Domain layer, standard library only. Stored values are frozen dataclasses of str, int, float,
bool, None, tuple, dict and nested such dataclasses (storage serializes them with msgspec), so
enums are stored as their `.value`. Keys are built with `keys.key` and start with the pool,
because one stage instance may hold several pools in the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from idstream.domain.erasure import ForgetEntry
from idstream.domain.keys import key, number
from idstream.domain.messages import Claim, LogPosition, Value
from idstream.domain.ports import StateTable, TableFactory

Stamp = tuple[int, str]  # (event timestamp, eventId): last-writer-wins order

ANONYMOUS = "anonymous"
PERSON = "person"

# The effective time of an input partition the pool has not heard from yet: before any other.
BEFORE_ALL = -(2**63)


@dataclass(frozen=True, slots=True)
class Entry:
    """One attribute value with the stamp of the write that set it (None: unset, kept for LWW)."""

    value: Value
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class TagEntry:
    present: bool
    stamp: Stamp


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """A profile, anonymous or person. Identities are kept in the order they were attached."""

    kind: str  # anonymous | person
    created: LogPosition  # where in the input log it was created (merge survivor rule)
    created_at: int  # event time of that claim, for the snapshot
    version: int = 0  # change events emitted for it
    external_user_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    attributes: dict[str, Entry] = field(default_factory=dict)
    custom_attributes: dict[str, Entry] = field(default_factory=dict)
    tags: dict[str, TagEntry] = field(default_factory=dict)
    installs: tuple[str, ...] = ()  # pushRegistrationIds linked now (uninstalled ones stay)
    merged_from: tuple[str, ...] = ()  # every profile merged into this one, directly or not
    merges_absorbed: int = 0  # persons merged into this one (SPEC §4.6 cap)


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """What the pool knows of an install: facts for snapshots and channels, and its link."""

    app_code: str
    lifecycle: str  # anonymous | personalized | depersonalized | uninstalled
    push_enabled: bool
    primary_device: bool
    system_data: dict[str, Value]
    custom_attributes: dict[str, Value]
    segment: str  # eventId that opened the install's current segment
    profile_id: str  # the current segment's profile
    was_personalized: bool = False


@dataclass(frozen=True, slots=True)
class IdentityOwner:
    profile_id: str


@dataclass(frozen=True, slots=True)
class Alias:
    """A merged-away profile id -> its survivor, so stale ids still resolve."""

    survivor: str


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change in a profile's history (pool_history.py): what the explorer shows of it, with
    no raw personal value (identities masked, attribute names without values)."""

    profile_id: str  # the profile it happened on (a profile merged in keeps its own id)
    version: int
    kind: str
    event_id: str
    event_time: int
    fields: dict[str, str] = field(default_factory=dict)  # loser, reason, maskedValue, ...
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # attributes, tags, ...
    more: int = 0  # names left out (each list keeps at most a few)


@dataclass(frozen=True, slots=True)
class HistoryHead:
    """How many entries a profile's history holds per section, and how many it let go."""

    changes: int = 0
    rejections: int = 0
    changes_dropped: int = 0
    rejections_dropped: int = 0
    merges_dropped: int = 0


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the pool is in the input log (``pool_cursor``, key: ``key(pool)``).

    Per input partition: the position of the last claim or heartbeat received from it
    (effective time and offset; BEFORE_ALL / -1 until it says anything). `head` is the
    position of the oldest pending claim; `decisions` the last LinkDecision.pool_seq.
    """

    times: tuple[int, ...]
    offsets: tuple[int, ...]
    pending: int = 0
    head: LogPosition | None = None
    decisions: int = 0


PROFILES = "pool_profiles"
INSTALLS = "pool_installs"
IDENTITIES = "pool_identities"
ALIASES = "pool_aliases"
FORGOTTEN = "pool_forgotten"
PENDING = "pool_pending"
CURSOR = "pool_cursor"
HISTORY = "pool_history"
HISTORY_HEADS = "pool_history_heads"
FORGOTTEN_PROFILES = "pool_forgotten_profiles"

POOL_TABLE_TYPES: Mapping[str, type] = MappingProxyType(
    {
        PROFILES: ProfileRecord,  # key(pool, profileId)
        INSTALLS: InstallRecord,  # key(pool, pushRegistrationId)
        IDENTITIES: IdentityOwner,  # key(pool, identity_hash): a keyed MAC, no raw identity
        ALIASES: Alias,  # key(pool, loser profileId)
        FORGOTTEN: ForgetEntry,  # key(pool, identity_hash | install_hash)
        PENDING: Claim,  # key(pool, number(time), number(partition), number(offset))
        CURSOR: Cursor,  # key(pool)
        HISTORY: HistoryEntry,  # key(pool, profileId, section, T, p, o, origin, version)
        HISTORY_HEADS: HistoryHead,  # key(pool, profileId)
        FORGOTTEN_PROFILES: ForgetEntry,  # key(pool, profile_hash)
    }
)

# Claims waiting for the other input partitions, and where each partition is: they depend on
# how far delivery has come, not on the input log alone.
DIGEST_EXCLUDED: frozenset[str] = frozenset({PENDING, CURSOR})


@dataclass(frozen=True, slots=True)
class PoolTables:
    profiles: StateTable[ProfileRecord]
    installs: StateTable[InstallRecord]
    identities: StateTable[IdentityOwner]
    aliases: StateTable[Alias]
    forgotten: StateTable[ForgetEntry]
    pending: StateTable[Claim]
    cursor: StateTable[Cursor]
    history: StateTable[HistoryEntry]
    history_heads: StateTable[HistoryHead]
    forgotten_profiles: StateTable[ForgetEntry]


def open_pool_tables(factory: TableFactory) -> PoolTables:
    return PoolTables(
        profiles=factory(PROFILES, ProfileRecord),
        installs=factory(INSTALLS, InstallRecord),
        identities=factory(IDENTITIES, IdentityOwner),
        aliases=factory(ALIASES, Alias),
        forgotten=factory(FORGOTTEN, ForgetEntry),
        pending=factory(PENDING, Claim),
        cursor=factory(CURSOR, Cursor),
        history=factory(HISTORY, HistoryEntry),
        history_heads=factory(HISTORY_HEADS, HistoryHead),
        forgotten_profiles=factory(FORGOTTEN_PROFILES, ForgetEntry),
    )


def pending_key(pool: str, position: LogPosition) -> str:
    time, partition, offset = position
    return key(pool, number(time), number(partition), number(offset))
