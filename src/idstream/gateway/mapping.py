"""One tracking-API message (the Segment spec, which RudderStack shares) -> idstream input events.

Pure: no I/O and no clock (the receive time is an argument), so every rule is testable as a
table. docs/gateway.md states the same rules for users; keep the two together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from idstream.domain.reasons import RejectReason

# The Segment / RudderStack mobile lifecycle spec.
APPLICATION_INSTALLED: Final = "Application Installed"
APPLICATION_OPENED: Final = "Application Opened"
APPLICATION_UPDATED: Final = "Application Updated"
APPLICATION_UNINSTALLED: Final = "Application Uninstalled"

MESSAGE_TYPES: Final = frozenset({"identify", "track", "screen", "page", "group", "alias"})

# Person standard attributes and the trait names that fill them (Segment spec names first).
_STANDARD_TRAITS: Final[Mapping[str, tuple[str, ...]]] = {
    "firstName": ("firstName", "first_name", "firstname"),
    "lastName": ("lastName", "last_name", "lastname"),
    "middleName": ("middleName", "middle_name"),
    "gender": ("gender",),
    "birthday": ("birthday",),
    "preferredLanguage": ("preferredLanguage", "preferred_language"),
    "city": ("city",),
    "country": ("country",),
}
# Traits that become identities, or are read from `address`, never custom attributes.
_IDENTITY_TRAITS: Final = frozenset({"email", "phone", "address", "id", "userId"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """What the mapping needs besides the message: the write key's appCode and two choices."""

    app_code: str
    sign_out_events: frozenset[str] = field(default_factory=lambda: frozenset({"Signed Out"}))
    force_depersonalize: bool = True


@dataclass(frozen=True, slots=True)
class Mapped:
    """The message as idstream input events (one or two), all keyed by `key`."""

    key: str
    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed message idstream has no use for (a `group`): accepted, counted, not kept."""

    what: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that cannot become an event: it goes to the dead letter with this reason."""

    reason: RejectReason
    detail: str
    key: str | None = None


Outcome = Mapped | Ignored | Refused
Events = tuple[dict[str, Any], ...]
MessageMapper = Callable[[dict[str, Any], MappingConfig, dict[str, Any]], Events]


class _Refuse(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def map_message(message: Any, config: MappingConfig, received_at: int) -> Outcome:
    """Map one message; `received_at` (ms) stands in for a message without a timestamp."""
    if not isinstance(message, dict):
        return Refused(RejectReason.SCHEMA_VIOLATION, "$: a message must be a JSON object")
    key = install_key(message)
    try:
        kind = message.get("type")
        if not isinstance(kind, str):
            raise _Refuse(RejectReason.SCHEMA_VIOLATION, "$.type: required, a string")
        if kind not in MESSAGE_TYPES:
            raise _Refuse(RejectReason.UNKNOWN_TYPE, f"$.type: unknown type {kind[:64]!r}")
        if kind == "group":
            return Ignored("group")
        if key is None:
            raise _Refuse(
                RejectReason.SCHEMA_VIOLATION,
                "$.context.device.id or $.anonymousId: required (idstream keys every event "
                "by install)",
            )
        common = _common(message, config, key, received_at)
        events = _EVENTS_OF[kind](message, config, common)
    except _Refuse as exc:
        return Refused(exc.reason, exc.detail, key)
    if not events:
        return Ignored(f"{kind} without userId or traits")
    return Mapped(key, events)


def install_key(message: Mapping[str, Any]) -> str | None:
    """The pushRegistrationId: the stable `context.device.id`, else the `anonymousId`."""
    device = _part(_part(message, "context"), "device")
    return _id(device.get("id")) or _id(message.get("anonymousId"))


# ---------------------------------------------------------------- per message type


def _identify(message: dict[str, Any], config: MappingConfig, common: dict[str, Any]) -> Events:
    traits = _traits(message)
    identity: dict[str, Any] = {}
    if (user_id := _id(message.get("userId"))) is not None:
        identity["externalUserId"] = user_id
    if (email := _text(traits.get("email"))) is not None:
        identity["emails"] = [email]
    if (phone := _text(traits.get("phone"))) is not None:
        identity["phones"] = [phone]
    attributes = _person_attributes(traits)
    if identity:
        event = {**common, "type": "personalize", "userIdentity": identity}
        if attributes:
            event["userAttributes"] = attributes
        if config.force_depersonalize:
            event["forceDepersonalize"] = True
        return (event,)
    if attributes:
        return ({**common, "type": "personUpdate", "attributes": attributes},)
    return ()


def _alias(message: dict[str, Any], config: MappingConfig, common: dict[str, Any]) -> Events:
    user_id = _id(message.get("userId"))
    if user_id is None:
        raise _Refuse(RejectReason.SCHEMA_VIOLATION, "$.userId: an alias needs the new userId")
    event = {**common, "type": "personalize", "userIdentity": {"externalUserId": user_id}}
    if config.force_depersonalize:
        event["forceDepersonalize"] = True
    return (event,)


def _track(message: dict[str, Any], config: MappingConfig, common: dict[str, Any]) -> Events:
    name = message.get("event")
    if not isinstance(name, str) or not name:
        raise _Refuse(RejectReason.SCHEMA_VIOLATION, "$.event: a track needs an event name")
    properties = _object(message, "properties")
    token = _text(_part(_part(message, "context"), "device").get("token"))
    system: dict[str, Any] = {}
    if token is not None:
        system["pushToken"] = token
    if (version := _text(properties.get("version"))) is not None:
        system["applicationVersion"] = version
    if name == APPLICATION_INSTALLED:
        return ({**common, "type": "install", **({"systemData": system} if system else {})},)
    if name == APPLICATION_OPENED:
        launch = {**common, "type": "appLaunch"}
        if token is None:
            return (launch,)
        # A rotated push token reaches the install at the next open, under its own eventId.
        update_id = f"{common['eventId']}:pushToken"
        token_only = {"pushToken": token}
        return (
            launch,
            {**common, "eventId": update_id, "type": "installUpdate", "systemData": token_only},
        )
    if name == APPLICATION_UPDATED:
        return ({**common, "type": "installUpdate", "systemData": system},)
    if name == APPLICATION_UNINSTALLED:
        return ({**common, "type": "uninstall"},)
    if name in config.sign_out_events:
        return ({**common, "type": "depersonalize"},)
    return (_custom(common, name, flatten(properties)),)


def _screen_or_page(kind: str) -> MessageMapper:
    def events(message: dict[str, Any], config: MappingConfig, common: dict[str, Any]) -> Events:
        properties = flatten(_object(message, "properties"))
        for name in ("name", "category"):
            if (value := _text(message.get(name))) is not None:
                properties[name] = value
        return (_custom(common, kind, properties),)

    return events


_EVENTS_OF: Final[Mapping[str, MessageMapper]] = {
    "identify": _identify,
    "alias": _alias,
    "track": _track,
    "screen": _screen_or_page("screen"),
    "page": _screen_or_page("page"),
}


def _custom(common: dict[str, Any], definition: str, properties: dict[str, Any]) -> dict[str, Any]:
    event = {**common, "type": "custom", "definitionId": definition}
    if properties:
        event["properties"] = properties
    return event


# ---------------------------------------------------------------- fields every event has


def _common(
    message: dict[str, Any], config: MappingConfig, key: str, received_at: int
) -> dict[str, Any]:
    return {
        "eventId": event_id(message),
        "timestamp": _timestamp_ms(message, received_at),
        "appCode": config.app_code,
        "pushRegistrationId": key,
        **_standard_properties(_part(message, "context")),
    }


def event_id(message: Mapping[str, Any]) -> str:
    """The messageId, so SDK retries are idempotent; without one, a hash of the message."""
    given = _id(message.get("messageId"))
    if given is not None:
        return given
    try:
        canonical = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise _Refuse(RejectReason.SCHEMA_VIOLATION, "$: nested too deeply") from exc
    return "sha256:" + hashlib.sha256(canonical).hexdigest()[:32]


def _timestamp_ms(message: Mapping[str, Any], received_at: int) -> int:
    for name in ("timestamp", "originalTimestamp"):
        raw = message.get(name)
        if raw is None:
            continue
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and len(raw) <= 64:
            try:
                when = datetime.fromisoformat(raw)
            except ValueError:
                pass
            else:
                # The spec's timestamps are UTC; one without an offset is read as UTC.
                when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
                return (when - _EPOCH) // _MS
        raise _Refuse(RejectReason.SCHEMA_VIOLATION, f"$.{name}: not an ISO 8601 date-time")
    return received_at


def _standard_properties(context: Mapping[str, Any]) -> dict[str, str]:
    app, device, os = _part(context, "app"), _part(context, "device"), _part(context, "os")
    library = _part(context, "library")
    name, version = _text(library.get("name")), _text(library.get("version"))
    found = {
        "applicationVersion": _text(app.get("version")),
        "deviceManufacturer": _text(device.get("manufacturer")),
        "deviceModel": _text(device.get("model")),
        "osLanguage": _text(context.get("locale")),
        "osVersion": _text(os.get("version")),
        "platform": _text(os.get("name")),
        "sdkVersion": f"{name}/{version}" if name and version else (version or name),
    }
    return {k: v for k, v in found.items() if v is not None}


# ---------------------------------------------------------------- traits and properties


def _traits(message: Mapping[str, Any]) -> dict[str, Any]:
    """`traits`, over `context.traits` (where RudderStack's identify puts them)."""
    return {**_part(_part(message, "context"), "traits"), **_object(message, "traits")}


def _person_attributes(traits: Mapping[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in traits.items() if k not in _IDENTITY_TRAITS}
    standard: dict[str, Any] = {}
    for attribute, names in _STANDARD_TRAITS.items():
        for name in names:
            if name in rest and (rest[name] is None or isinstance(rest[name], str)):
                standard[attribute] = rest.pop(name)
                break
    address = traits.get("address")
    if isinstance(address, str):
        standard["address"] = address
    elif isinstance(address, dict):
        for attribute, name in (("city", "city"), ("country", "country"), ("address", "street")):
            if attribute not in standard and isinstance(address.get(name), str):
                standard[attribute] = address[name]
    out: dict[str, Any] = dict(standard)
    if custom := flatten(rest):
        out["customAttributes"] = custom
    return out


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """Nested objects become dotted keys; arrays become their JSON text; scalars stay.

    idstream attribute values are scalars. Iterative: JSON may nest deeper than recursion.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[str, Mapping[str, Any]]] = [("", values)]
    while stack:
        prefix, node = stack.pop()
        nested: list[tuple[str, Mapping[str, Any]]] = []
        for key, value in node.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                nested.append((name, value))
            elif isinstance(value, list):
                try:
                    out[name] = orjson.dumps(value).decode()
                except orjson.JSONEncodeError as exc:
                    raise _Refuse(
                        RejectReason.SCHEMA_VIOLATION, f"$.{name}: nested too deeply"
                    ) from exc
            else:
                out[name] = value
        stack.extend(reversed(nested))
    return out


# ---------------------------------------------------------------- small readers


def _part(parent: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A sub-object of the context; one of another type is ignored like a missing one."""
    value = parent.get(name)
    return value if isinstance(value, dict) else {}


def _object(message: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Refuse(RejectReason.SCHEMA_VIOLATION, f"$.{name}: must be an object")
    return value


def _id(value: Any) -> str | None:
    """An id as the SDKs send it: a non-empty string, or an integer (stringified)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _text(value: Any) -> str | None:
    """A descriptive string: strings as they are, numbers written out, anything else absent."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None
