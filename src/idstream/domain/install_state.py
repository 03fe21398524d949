"""State of the install stage: its tables, their keys and value records.

Domain layer. Keys are built with `keys.key` (injective: any character may occur in a
pushRegistrationId or an eventId). One install's rows start with ``key(prid)``; the rows of one
input partition (its position, its eventId expiry index) start with ``key(number(partition))``.
Values are frozen dataclasses of plain data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
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
from idstream.domain.keys import key, number
from idstream.domain.messages import InstallFacts
from idstream.domain.ports import StateTable, TableFactory


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
    """One install (table ``install_installs``, key: ``key(prid)``).

    `segment` and `profile` are what the pool last decided for the install (a personalize,
    depersonalize or forget changes them only once the pool has answered it); before the
    first answer, the install's anonymous profile, which it derives itself.
    """

    push_registration_id: str
    app_code: str
    pool: str
    segment: str  # eventId that opened the current segment
    profile: str  # the current segment's profile
    pool_seq: int = 0  # the newest LinkDecision applied
    lifecycle: str = "anonymous"  # as the pool last decided it
    claim_seq: int = 0  # claims sent
    awaiting: int = 0  # seq of the newest claim sent that the pool answers
    answered: int = 0  # seq of the newest answer received; outputs are held while < awaiting
    held_next: int = 0  # counter of held outputs (their key)
    uninstalled_at: int | None = None  # smallest timestamp of an applied uninstall
    # System data and standard properties, one LWW map (they share field names).
    system_data: dict[str, Stamped] = field(default_factory=dict)
    custom_attributes: dict[str, Stamped] = field(default_factory=dict)  # value None: unset
    primary_device: Stamped | None = None
    last_launch: int | None = None  # largest timestamp of a logged appLaunch
    dropped_launches: int = 0  # launches dropped by the dedup window (a metric)
    facts: InstallFacts | None = None  # the facts last sent to the pool


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """A resolved-event output waiting for the pool's answer (``install_held``,
    key: ``key(prid, number(n))``). `awaits` is the claim seq when the event is that claim's
    own event (it goes to the dead letter instead if the pool rejects the claim), else 0."""

    awaits: int
    value: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """The last input record applied from one input partition and the partition's effective
    time there (``install_sources``, key: ``key(number(partition))``): redeliveries at or
    before it are recognised, and the effective time carries on after a restart."""

    offset: int
    time: int


@dataclass(frozen=True, slots=True)
class Seen:
    """An eventId applied to an install, at the effective time of its record (``install_seen``,
    key: ``key(number(partition), number(bucket), prid, eventId)``, `seen_key`).

    The bucket is the effective time divided by the dedup window, so a duplicate inside the
    window is in the record's bucket or the one before, and whole buckets are swept in key
    order: one write per event, no separate index by time.
    """

    time: int


INSTALLS = "install_installs"
HELD = "install_held"
SOURCES = "install_sources"
SEEN = "install_seen"

INSTALL_TABLE_TYPES: Mapping[str, type] = MappingProxyType(
    {
        INSTALLS: InstallRecord,
        HELD: HeldEvent,
        SOURCES: SourcePosition,
        SEEN: Seen,
    }
)

# Bookkeeping: where each partition is, and which eventIds are inside the dedup window (its
# entries past the window are deleted whenever the driver sweeps, so their number depends on
# batch boundaries; the dedup decision itself does not).
DIGEST_EXCLUDED: frozenset[str] = frozenset({SOURCES, SEEN})


@dataclass(frozen=True, slots=True)
class InstallTables:
    installs: StateTable[InstallRecord]
    held: StateTable[HeldEvent]
    sources: StateTable[SourcePosition]
    seen: StateTable[Seen]


def open_install_tables(factory: TableFactory) -> InstallTables:
    return InstallTables(
        installs=factory(INSTALLS, InstallRecord),
        held=factory(HELD, HeldEvent),
        sources=factory(SOURCES, SourcePosition),
        seen=factory(SEEN, Seen),
    )


def install_key(prid: str) -> str:
    return key(prid)


@cache  # a handful of partitions, asked twice per record
def source_key(partition: int) -> str:
    return key(number(partition))


def held_key(prid: str, n: int) -> str:
    return key(prid, number(n))


def seen_bucket(time: int, window_ms: int) -> int:
    """The `install_seen` bucket of an effective time: one per dedup window."""
    return time // max(window_ms, 1)


def seen_key(partition: int, bucket: int, prid: str, event_id: str) -> str:
    return key(number(partition), number(bucket), prid, event_id)


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
