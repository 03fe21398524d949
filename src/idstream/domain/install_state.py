"""State of the install stage: its tables, their keys and value records.

Domain layer. Every table is keyed by pushRegistrationId first (``prid US rest``), so one
install's rows are one key range. Values are frozen dataclasses of plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from idstream.domain.events import (
    AnyEvent,
    AttributeValue,
    Custom,
    Forget,
    Install,
    InstallUpdate,
    Personalize,
    PersonAttributes,
    PersonUpdate,
    UserIdentity,
)
from idstream.domain.messages import InstallFacts
from idstream.domain.ports import StateTable, TableFactory

SEP = "\x1f"  # unit separator: never part of a pushRegistrationId or eventId

ANONYMOUS = "anonymous"
PERSONALIZED = "personalized"
DEPERSONALIZED = "depersonalized"
UNINSTALLED = "uninstalled"

SEGMENT_ANONYMOUS = "anonymous"
SEGMENT_PERSON = "person"


@dataclass(frozen=True, slots=True)
class Stamped:
    """A last-writer-wins value: the write with the larger (timestamp, eventId) wins."""

    value: AttributeValue
    timestamp: int
    event_id: str

    def loses_to(self, timestamp: int, event_id: str) -> bool:
        return (self.timestamp, self.event_id) <= (timestamp, event_id)


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """One install (table ``install_installs``, key: pushRegistrationId)."""

    push_registration_id: str
    app_code: str
    pool: str
    segment: str  # eventId that opened the current segment
    anonymous_profile: str  # profile of the install's latest anonymous segment
    linked: bool = False  # personalized by its own events and not since depersonalized
    ever_personalized: bool = False
    uninstalled_at: int | None = None  # smallest timestamp of an applied uninstall
    # System data and standard properties, one LWW map (they share field names).
    system_data: dict[str, Stamped] = field(default_factory=dict)
    custom_attributes: dict[str, Stamped] = field(default_factory=dict)  # value None: unset
    primary_device: Stamped | None = None
    last_launch: int | None = None  # largest timestamp of a logged appLaunch
    dropped_launches: int = 0  # launches dropped by the dedup window (a metric)
    claim_seq: int = 0
    claim_max_timestamp: int | None = None
    facts: InstallFacts | None = None  # the facts last sent to the pool

    @property
    def lifecycle(self) -> str:
        if self.uninstalled_at is not None:
            return UNINSTALLED
        if self.linked:
            return PERSONALIZED
        return DEPERSONALIZED if self.ever_personalized else ANONYMOUS


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """A segment of an install (``install_segments``, key: prid US segment)."""

    kind: str  # SEGMENT_ANONYMOUS | SEGMENT_PERSON
    profile_id: str | None  # None while the pool's decision is pending
    rejected: str | None = None  # the claim that opened it was rejected (reason code)


@dataclass(frozen=True, slots=True)
class LinkSeq:
    """Newest pool_seq applied to a segment (``install_link_seqs``; not in the digest:
    pool sequence numbers depend on arrival order)."""

    pool_seq: int


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """A resolved event waiting for its segment's link (``install_held``,
    key: prid US segment US 10-digit counter)."""

    event_id: str
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Released:
    """The resolved events a decision released (``install_released``, key: prid US segment;
    the last release only), so a redelivered decision (same pool_seq) re-sends them."""

    pool_seq: int
    profile_id: str
    events: tuple[HeldEvent, ...]


@dataclass(frozen=True, slots=True)
class SentClaim:
    """A claim as sent, without the event and record (those come back with a redelivery)."""

    pool: str
    seq: int
    order: tuple[int, str]
    with_event: bool
    segment: str
    anonymous_profile: str
    facts: InstallFacts


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """What an applied eventId did (``install_applied``, key: prid US eventId), so a
    duplicate is a no-op and a crash redelivery (same source offset) re-sends the same."""

    source: tuple[str, int, int] | None  # topic, partition, offset
    claims: tuple[SentClaim, ...] = ()
    profile_id: str | None = None  # where its resolved event went (None: held or none)
    pool: str = ""
    segment: str = ""
    dead_letter: tuple[str, str] | None = None  # reason, detail
    dropped: bool = False  # a launch inside the dedup window


INSTALLS = "install_installs"
SEGMENTS = "install_segments"
LINK_SEQS = "install_link_seqs"
HELD = "install_held"
APPLIED = "install_applied"
RELEASED = "install_released"

INSTALL_TABLE_TYPES: Mapping[str, type] = MappingProxyType(
    {
        INSTALLS: InstallRecord,
        SEGMENTS: SegmentRecord,
        LINK_SEQS: LinkSeq,
        HELD: HeldEvent,
        APPLIED: AppliedEvent,
        RELEASED: Released,
    }
)

# Tables whose content depends on arrival order or source offsets, not on the input alone.
DIGEST_EXCLUDED: frozenset[str] = frozenset({LINK_SEQS, APPLIED, RELEASED})


@dataclass(frozen=True, slots=True)
class InstallTables:
    installs: StateTable[InstallRecord]
    segments: StateTable[SegmentRecord]
    link_seqs: StateTable[LinkSeq]
    held: StateTable[HeldEvent]
    applied: StateTable[AppliedEvent]
    released: StateTable[Released]


def open_install_tables(factory: TableFactory) -> InstallTables:
    return InstallTables(
        installs=factory(INSTALLS, InstallRecord),
        segments=factory(SEGMENTS, SegmentRecord),
        link_seqs=factory(LINK_SEQS, LinkSeq),
        held=factory(HELD, HeldEvent),
        applied=factory(APPLIED, AppliedEvent),
        released=factory(RELEASED, Released),
    )


def key(*parts: str) -> str:
    return SEP.join(parts)


def _identity(identity: UserIdentity) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if identity.external_user_id is not None:
        out["externalUserId"] = identity.external_user_id
    if identity.emails:
        out["emails"] = list(identity.emails)
    if identity.phones:
        out["phones"] = list(identity.phones)
    return out


def _attributes(attributes: PersonAttributes) -> dict[str, Any]:
    out: dict[str, Any] = dict(attributes.standard)
    if attributes.custom:
        out["customAttributes"] = dict(attributes.custom)
    return out


def event_wire(event: AnyEvent) -> dict[str, Any]:
    """The event in its wire shape (camelCase), as resolved events carry it; codecs'
    `event_to_wire` builds on it."""
    out: dict[str, Any] = {
        "eventId": event.event_id,
        "type": event.type.value,
        "timestamp": event.timestamp,
        "appCode": event.app_code,
        "pushRegistrationId": event.push_registration_id,
        **event.standard_properties,
    }
    if isinstance(event, Install | InstallUpdate) and event.system_data:
        out["systemData"] = dict(event.system_data)
    if isinstance(event, InstallUpdate):
        if event.custom_attributes:
            out["customAttributes"] = dict(event.custom_attributes)
        if event.primary_device is not None:
            out["primaryDevice"] = event.primary_device
    elif isinstance(event, Personalize):
        out["userIdentity"] = _identity(event.user_identity)
        if not event.user_attributes.is_empty():
            out["userAttributes"] = _attributes(event.user_attributes)
        out["forceDepersonalize"] = event.force_depersonalize
    elif isinstance(event, PersonUpdate):
        if not event.attributes.is_empty():
            out["attributes"] = _attributes(event.attributes)
        if event.tags_added:
            out["tagsAdded"] = list(event.tags_added)
        if event.tags_removed:
            out["tagsRemoved"] = list(event.tags_removed)
        if not event.identities_added.is_empty():
            out["identitiesAdded"] = _identity(event.identities_added)
        if not event.identities_removed.is_empty():
            out["identitiesRemoved"] = _identity(event.identities_removed)
        if event.identities_replaced:
            out["identitiesReplaced"] = [
                {"kind": r.kind.value, "old": r.old, "new": r.new}
                for r in event.identities_replaced
            ]
    elif isinstance(event, Custom):
        out["definitionId"] = event.definition_id
        if event.properties:
            out["properties"] = dict(event.properties)
    elif isinstance(event, Forget) and event.user_identity is not None:
        out["userIdentity"] = _identity(event.user_identity)
    return out
