"""Input events as typed, immutable values: what the decoder produces and the stages consume.

Domain layer: standard library only. The wire shape (JSON names) lives in codecs/ and schemas/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar, NewType

EventId = NewType("EventId", str)
PushRegistrationId = NewType("PushRegistrationId", str)
AppCode = NewType("AppCode", str)
PoolId = NewType("PoolId", str)
ProfileId = NewType("ProfileId", str)

# A custom or standard attribute value. None unsets the attribute. Dates travel as
# ISO 8601 strings (YYYY-MM-DD or RFC 3339); the schema marks them, the domain keeps the string.
AttributeValue = str | int | float | bool | None

EMPTY: Mapping[str, AttributeValue] = MappingProxyType({})
NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})


def _empty() -> Mapping[str, AttributeValue]:
    return EMPTY


def _no_properties() -> Mapping[str, str]:
    return NO_PROPERTIES


# Fields an SDK puts on every event (SPEC §3); the install keeps the latest of each.
STANDARD_PROPERTIES: tuple[str, ...] = (
    "applicationVersion",
    "deviceManufacturer",
    "deviceModel",
    "osLanguage",
    "osVersion",
    "platform",
    "sdkVersion",
)

# Install system data that only `install` / `installUpdate` carry (seed 004).
SYSTEM_DATA_FIELDS: Mapping[str, type] = MappingProxyType(
    {
        "platform": str,
        "sdkVersion": str,
        "osVersion": str,
        "deviceManufacturer": str,
        "deviceModel": str,
        "applicationVersion": str,
        "appVersion": str,
        "osLanguage": str,
        "pushRegistrationEnabled": bool,
        "registrationsEnabled": bool,
        "geofencingEnabled": bool,
        "deviceSecure": bool,
        "notificationsEnabled": bool,
        # The current push token; the install id (pushRegistrationId) stays when it rotates.
        "pushToken": str,
    }
)

# Standard person attributes (SPEC §2); anything else goes in custom attributes.
PERSON_STANDARD_ATTRIBUTES: tuple[str, ...] = (
    "firstName",
    "lastName",
    "middleName",
    "gender",
    "birthday",
    "preferredLanguage",
    "city",
    "country",
    "address",
)


class EventType(StrEnum):
    INSTALL = "install"
    APP_LAUNCH = "appLaunch"
    INSTALL_UPDATE = "installUpdate"
    PERSONALIZE = "personalize"
    DEPERSONALIZE = "depersonalize"
    PERSON_UPDATE = "personUpdate"
    CUSTOM = "custom"
    UNINSTALL = "uninstall"
    FORGET = "forget"


class IdentityKind(StrEnum):
    """Kinds of unique person identity, in priority order (SPEC §4.4)."""

    EXTERNAL_USER_ID = "externalUserId"
    EMAIL = "email"
    PHONE = "phone"


IDENTITY_PRIORITY: tuple[IdentityKind, ...] = tuple(IdentityKind)


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """Identities as the SDK sent them (not yet normalized or checked)."""

    external_user_id: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return self.external_user_id is None and not self.emails and not self.phones


@dataclass(frozen=True, slots=True)
class IdentityReplacement:
    """personUpdate: replace one identity value by another of the same kind (mutable identity)."""

    kind: IdentityKind
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class PersonAttributes:
    """Standard and custom person attributes carried by personalize / personUpdate."""

    standard: Mapping[str, AttributeValue] = field(default_factory=_empty)
    custom: Mapping[str, AttributeValue] = field(default_factory=_empty)

    def is_empty(self) -> bool:
        return not self.standard and not self.custom


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every SDK event has (SPEC §3). `timestamp` is client time in ms since the epoch."""

    type: ClassVar[EventType]

    event_id: EventId
    timestamp: int
    app_code: AppCode
    push_registration_id: PushRegistrationId
    standard_properties: Mapping[str, str] = field(default_factory=_no_properties)

    @property
    def order_key(self) -> tuple[int, str]:
        """Event-time order used wherever installs compete: timestamp, then eventId."""
        return (self.timestamp, self.event_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Install(Event):
    type: ClassVar[EventType] = EventType.INSTALL
    system_data: Mapping[str, AttributeValue] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppLaunch(Event):
    type: ClassVar[EventType] = EventType.APP_LAUNCH


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallUpdate(Event):
    type: ClassVar[EventType] = EventType.INSTALL_UPDATE
    system_data: Mapping[str, AttributeValue] = field(default_factory=_empty)
    custom_attributes: Mapping[str, AttributeValue] = field(default_factory=_empty)
    primary_device: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Personalize(Event):
    type: ClassVar[EventType] = EventType.PERSONALIZE
    user_identity: UserIdentity
    user_attributes: PersonAttributes = PersonAttributes()
    force_depersonalize: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Depersonalize(Event):
    type: ClassVar[EventType] = EventType.DEPERSONALIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonUpdate(Event):
    type: ClassVar[EventType] = EventType.PERSON_UPDATE
    attributes: PersonAttributes = PersonAttributes()
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()
    identities_added: UserIdentity = UserIdentity()
    identities_removed: UserIdentity = UserIdentity()
    identities_replaced: tuple[IdentityReplacement, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Custom(Event):
    type: ClassVar[EventType] = EventType.CUSTOM
    definition_id: str
    properties: Mapping[str, AttributeValue] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class Uninstall(Event):
    type: ClassVar[EventType] = EventType.UNINSTALL


@dataclass(frozen=True, slots=True, kw_only=True)
class Forget(Event):
    """Erase a person (GDPR). Without `user_identity`, the person linked to the install."""

    type: ClassVar[EventType] = EventType.FORGET
    user_identity: UserIdentity | None = None


AnyEvent = (
    Install
    | AppLaunch
    | InstallUpdate
    | Personalize
    | Depersonalize
    | PersonUpdate
    | Custom
    | Uninstall
    | Forget
)

EVENT_CLASSES: Mapping[EventType, type[Event]] = MappingProxyType(
    {
        cls.type: cls
        for cls in (
            Install,
            AppLaunch,
            InstallUpdate,
            Personalize,
            Depersonalize,
            PersonUpdate,
            Custom,
            Uninstall,
            Forget,
        )
    }
)


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """Where an input record came from.

    `record_timestamp` is the Kafka record time in ms: input, not a clock.
    """

    topic: str
    partition: int
    offset: int
    record_timestamp: int
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
