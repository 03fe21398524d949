"""bytes -> domain event, or a Rejection saying why not; codecs layer. Never raises.

The fast path is one msgspec typed decode (types, required and unknown fields, sizes, all
in C); only a record that fails it is parsed again, with orjson, to name the reason in the
order the contract gives: size, JSON, type, schema. bench/decode.py holds the measurement
that chose msgspec; docs/decoding.md the numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

import msgspec
import orjson
from msgspec import UNSET

from idstream.codecs.limits import DEFAULT_LIMITS, MAX_TIMESTAMP_MS, Limits
from idstream.codecs.wire import RFC3339_PATTERN, wire_types
from idstream.domain.events import (
    EMPTY,
    NO_PROPERTIES,
    PERSON_STANDARD_ATTRIBUTES,
    STANDARD_PROPERTIES,
    SYSTEM_DATA_FIELDS,
    AnyEvent,
    AppCode,
    AppLaunch,
    AttributeValue,
    Custom,
    Depersonalize,
    EventId,
    EventType,
    Forget,
    IdentityKind,
    IdentityReplacement,
    Install,
    InstallUpdate,
    Personalize,
    PersonAttributes,
    PersonUpdate,
    PushRegistrationId,
    RecordMeta,
    Uninstall,
    UserIdentity,
)
from idstream.domain.identities import forbidden_character
from idstream.domain.reasons import RejectReason

# A detail quotes at most this much of what the producer sent.
_MAX_DETAIL = 300
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_KNOWN_TYPES: Final = frozenset(t.value for t in EventType)
_RFC3339: Final = re.compile(RFC3339_PATTERN)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record cannot become an event: a reason code and a detail naming the field."""

    reason: RejectReason
    detail: str


def decode(
    value: bytes, meta: RecordMeta | None = None, limits: Limits = DEFAULT_LIMITS
) -> AnyEvent | Rejection:
    """Decode one input record value. Returns the event or a Rejection; never raises.

    With `meta`, an event stamped more than `limits.max_future_skew_ms` after the Kafka
    record time is rejected (`timestamp_out_of_range`); events from the past are not.
    """
    if len(value) > limits.max_record_bytes:
        return Rejection(
            RejectReason.OVERSIZE, f"record is {len(value)} bytes > {limits.max_record_bytes}"
        )
    types = wire_types(limits)
    try:
        wire = types.decoder.decode(value)
    except msgspec.ValidationError as exc:
        return _explain(value, str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(RejectReason.MALFORMED_JSON, _clip(f"invalid JSON: {exc}"))
    except RecursionError:
        # msgspec recurses to skip nested values it has no type for (before the tag).
        return Rejection(RejectReason.MALFORMED_JSON, "invalid JSON: nested too deeply")
    if _has_duplicate_keys(value, wire):
        return Rejection(RejectReason.MALFORMED_JSON, "invalid JSON: duplicate object key")
    try:
        # Raw controls are invalid JSON, so without a backslash (escapes) or DEL no ASCII
        # string holds a forbidden character: most records skip the look, and the rest look
        # only at non-ASCII strings unless the record holds escapes.
        escapes = 92 in value or 127 in value
        if (escapes or not value.isascii()) and (
            escapes
            or wire.__class__.__name__ in _NAME_FIELDS
            or not (wire.eventId + wire.appCode + wire.pushRegistrationId).isascii()
        ):
            _check_names(wire, escapes)
        event = _CONVERTERS[wire.__class__.__name__](wire)
    except ValueError as exc:
        # _Invalid: a rule msgspec cannot state. Any other ValueError would be a value we
        # failed to foresee; it still rejects the record rather than stop the processor.
        return Rejection(RejectReason.SCHEMA_VIOLATION, _clip(str(exc)))
    # A negative record timestamp means the broker kept none (old message format): no check.
    if (
        meta is not None
        and meta.record_timestamp >= 0
        and event.timestamp - meta.record_timestamp > limits.max_future_skew_ms
    ):
        return Rejection(
            RejectReason.TIMESTAMP_OUT_OF_RANGE,
            f"$.timestamp: {event.timestamp} is more than {limits.max_future_skew_ms} ms "
            f"after the record timestamp {meta.record_timestamp}",
        )
    return event


class _Invalid(ValueError):
    """A rule msgspec cannot state; the message starts with the field path."""


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _explain(value: bytes, message: str) -> Rejection:
    """Name the reason for a record msgspec refused, in contract order."""
    # msgspec stops at the first bad field: the rest may not even be JSON.
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection(RejectReason.MALFORMED_JSON, _clip(f"invalid JSON: {exc}"))
    if _colons_outside_strings(value) != _parsed_keys(doc):
        return Rejection(RejectReason.MALFORMED_JSON, "invalid JSON: duplicate object key")
    if not isinstance(doc, dict):
        return Rejection(RejectReason.SCHEMA_VIOLATION, _clip(f"$: {message}"))
    event_type = doc.get("type")
    if not isinstance(event_type, str):
        what = "is required" if "type" not in doc else "must be a string"
        return Rejection(RejectReason.SCHEMA_VIOLATION, f"$.type: {what}")
    if event_type not in _KNOWN_TYPES:
        return Rejection(RejectReason.UNKNOWN_TYPE, _clip(f"$.type: unknown type {event_type!r}"))
    if "of length <=" in message:
        return Rejection(RejectReason.OVERSIZE, _clip(message))
    return Rejection(RejectReason.SCHEMA_VIOLATION, _clip(message))


# ---------------------------------------------------------------- duplicate keys

# Whole JSON strings (escapes included); on valid JSON, scanning from the start keeps the
# match aligned on string boundaries, since no character between strings is a quote.
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
# Wire fields that hold objects (structs, maps, or tuples of structs): their keys count too.
_OBJECT_FIELDS: Final = frozenset(
    {
        "systemData",
        "userIdentity",
        "userAttributes",
        "attributes",
        "identitiesAdded",
        "identitiesRemoved",
        "identitiesReplaced",
        "customAttributes",
        "properties",
    }
)
_object_fields_of: dict[type, tuple[str, ...]] = {}


def _count_keys(wire: Any) -> int:
    """Object keys msgspec kept: fields present (not UNSET), map entries, nested structs."""
    values = msgspec.structs.astuple(wire)
    count = len(values) - values.count(UNSET)
    names = _object_fields_of.get(type(wire))
    if names is None:
        names = tuple(f for f in wire.__struct_fields__ if f in _OBJECT_FIELDS)
        _object_fields_of[type(wire)] = names
    for name in names:
        v = getattr(wire, name)
        if v is UNSET:
            continue
        if type(v) is dict:
            count += len(v)
        elif type(v) is tuple:
            count += sum(_count_keys(item) for item in v)
        else:
            count += _count_keys(v)
    return count


def _has_duplicate_keys(value: bytes, wire: Any) -> bool:
    """True when an object repeats a key (msgspec keeps the last one silently).

    On valid JSON each key is followed by exactly one colon outside strings, so those
    colons outnumber the keys msgspec kept only when a key repeats.
    """
    keys = 1 + _count_keys(wire)  # the `type` tag is no struct field
    # Fast screen: with no whitespace before any colon, every key ends in `":`, and any
    # other `":` (inside a string) only raises the count; so equality proves no repeat.
    # Raw tabs and line breaks cannot occur inside JSON strings, so they mean formatting.
    if (
        value.count(b'":') == keys
        and b" :" not in value
        and b"\n" not in value
        and b"\t" not in value
        and b"\r" not in value
    ):
        return False
    return _colons_outside_strings(value) != keys


def _colons_outside_strings(value: bytes) -> int:
    """Structural colons of valid JSON: one per object key."""
    outside = (
        # An escaped quote breaks the split; strip whole strings instead (slower).
        _JSON_STRING.sub(b"", value)
        if b'\\"' in value
        # Without escaped quotes, every other piece between quotes is outside strings.
        else b"".join(value.split(b'"')[::2])
    )
    return outside.count(b":")


def _parsed_keys(doc: Any) -> int:
    """Object keys in a parsed JSON value (iterative: orjson nests deeper than recursion)."""
    count, stack = 0, [doc]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            count += len(node)
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return count


# ---------------------------------------------------------------- ids and names

# Per wire type, the fields besides the three common ids that hold ids or names: a string, a
# list of strings (tags), a map (its keys) or person attributes (their custom map's keys).
_NAME_FIELDS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "WireInstallUpdate": (("customAttributes", "keys"),),
    "WirePersonalize": (("userAttributes", "person"),),
    "WirePersonUpdate": (
        ("tagsAdded", "items"),
        ("tagsRemoved", "items"),
        ("attributes", "person"),
    ),
    "WireCustom": (("definitionId", "string"), ("properties", "keys")),
}


def _refuse(path: str, value: str, at: int) -> _Invalid:
    return _Invalid(
        f"{path}: U+{ord(value[at]):04X} at index {at} is a control or format character, a "
        "surrogate or a non-character, which no id or name may hold"
    )


def _check_names(wire: Any, escapes: bool) -> None:
    """Refuse the event when an id or a name holds a forbidden character (the whole event:
    an id cannot be half used). Identity values are judged one by one by the resolver.

    `escapes`: the record holds a backslash or DEL, so ASCII strings are looked at too;
    otherwise only non-ASCII ones (str.isascii() is O(1): CPython knows it of every string).
    """
    if escapes or not (wire.eventId + wire.appCode + wire.pushRegistrationId).isascii():
        for name in ("eventId", "appCode", "pushRegistrationId"):
            value = getattr(wire, name)
            if (at := forbidden_character(value)) >= 0:
                raise _refuse(f"$.{name}", value, at)
    for name, kind in _NAME_FIELDS.get(type(wire).__name__, ()):
        found = getattr(wire, name)
        if found is UNSET:
            continue
        if kind == "person":
            name, found = f"{name}.customAttributes", found.customAttributes
            if found is UNSET:
                continue
        items = (found,) if kind == "string" else found
        if not escapes and all(map(str.isascii, items)):
            continue
        for index, item in enumerate(items):
            if (at := forbidden_character(item)) >= 0:
                where = {"string": "", "items": f"[{index}]"}.get(kind, "[...] (a key)")
                raise _refuse(f"$.{name}{where}", item, at)


# ---------------------------------------------------------------- timestamps


def _timestamp_ms(raw: int | str) -> int:
    if isinstance(raw, int):
        return raw
    # msgspec checked the pattern with re.search, where `$` also matches before a final
    # newline; fullmatch does not. Then the layout is YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM).
    if not _RFC3339.fullmatch(raw):
        raise _Invalid(f"$.timestamp: not an RFC 3339 date-time: {raw!r}")
    try:
        local = datetime.fromisoformat(raw[:19]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise _Invalid(f"$.timestamp: not a valid date-time: {raw!r}") from exc
    rest = raw[19:]
    millis = 0
    if rest.startswith("."):
        end = 1
        while rest[end].isdigit():
            end += 1
        millis = int(rest[1:end][:3].ljust(3, "0"))
        rest = rest[end:]
    offset_ms = 0
    if rest != "Z":
        hours, minutes = int(rest[1:3]), int(rest[4:6])
        if hours > 23 or minutes > 59:
            raise _Invalid(f"$.timestamp: invalid UTC offset {rest!r}")
        offset_ms = (hours * 60 + minutes) * 60_000 * (1 if rest[0] == "+" else -1)
    ms: int = (local - _EPOCH) // _MS + millis - offset_ms
    # The range integers have (the wire types say it); an offset can carry a date across it.
    if not 0 <= ms <= MAX_TIMESTAMP_MS:
        raise _Invalid(
            f"$.timestamp: {raw!r} is {ms} ms since the epoch, outside 0 … {MAX_TIMESTAMP_MS}"
        )
    return ms


# ---------------------------------------------------------------- wire -> domain


def _mapping(raw: Any) -> Any:
    return EMPTY if raw is UNSET or not raw else MappingProxyType(raw)


def _standard_properties(wire: Any) -> Any:
    found = {name: v for name in STANDARD_PROPERTIES if (v := getattr(wire, name)) is not UNSET}
    return MappingProxyType(found) if found else NO_PROPERTIES


def _common(wire: Any) -> dict[str, Any]:
    return {
        "event_id": EventId(wire.eventId),
        "timestamp": _timestamp_ms(wire.timestamp),
        "app_code": AppCode(wire.appCode),
        "push_registration_id": PushRegistrationId(wire.pushRegistrationId),
        "standard_properties": _standard_properties(wire),
    }


def _system_data(raw: Any) -> Any:
    if raw is UNSET:
        return EMPTY
    found = {name: v for name in SYSTEM_DATA_FIELDS if (v := getattr(raw, name)) is not UNSET}
    return MappingProxyType(found) if found else EMPTY


def _identity(raw: Any, path: str) -> UserIdentity:
    external = None if raw.externalUserId is UNSET else raw.externalUserId
    identity = UserIdentity(
        external_user_id=external,
        emails=() if raw.emails is UNSET else raw.emails,
        phones=() if raw.phones is UNSET else raw.phones,
    )
    if identity.is_empty():
        raise _Invalid(f"{path}: needs at least one of externalUserId, emails, phones")
    return identity


def _person_attributes(raw: Any) -> PersonAttributes:
    if raw is UNSET:
        return PersonAttributes()
    standard: dict[str, AttributeValue] = {
        name: v for name in PERSON_STANDARD_ATTRIBUTES if (v := getattr(raw, name)) is not UNSET
    }
    return PersonAttributes(
        standard=MappingProxyType(standard) if standard else EMPTY,
        custom=_mapping(raw.customAttributes),
    )


def _require_one(wire: Any, names: tuple[str, ...]) -> None:
    if all(getattr(wire, name) is UNSET for name in names):
        raise _Invalid(f"$: needs at least one of {', '.join(names)}")


def _install(wire: Any) -> AnyEvent:
    return Install(**_common(wire), system_data=_system_data(wire.systemData))


def _app_launch(wire: Any) -> AnyEvent:
    return AppLaunch(**_common(wire))


def _install_update(wire: Any) -> AnyEvent:
    _require_one(wire, ("systemData", "customAttributes", "primaryDevice"))
    return InstallUpdate(
        **_common(wire),
        system_data=_system_data(wire.systemData),
        custom_attributes=_mapping(wire.customAttributes),
        primary_device=None if wire.primaryDevice is UNSET else wire.primaryDevice,
    )


def _personalize(wire: Any) -> AnyEvent:
    return Personalize(
        **_common(wire),
        user_identity=_identity(wire.userIdentity, "$.userIdentity"),
        user_attributes=_person_attributes(wire.userAttributes),
        force_depersonalize=wire.forceDepersonalize is True,
    )


def _depersonalize(wire: Any) -> AnyEvent:
    return Depersonalize(**_common(wire))


_PERSON_UPDATE_FIELDS = (
    "attributes",
    "tagsAdded",
    "tagsRemoved",
    "identitiesAdded",
    "identitiesRemoved",
    "identitiesReplaced",
)


def _person_update(wire: Any) -> AnyEvent:
    _require_one(wire, _PERSON_UPDATE_FIELDS)
    added, removed, replaced = wire.identitiesAdded, wire.identitiesRemoved, wire.identitiesReplaced
    return PersonUpdate(
        **_common(wire),
        attributes=_person_attributes(wire.attributes),
        tags_added=() if wire.tagsAdded is UNSET else wire.tagsAdded,
        tags_removed=() if wire.tagsRemoved is UNSET else wire.tagsRemoved,
        identities_added=(
            UserIdentity() if added is UNSET else _identity(added, "$.identitiesAdded")
        ),
        identities_removed=(
            UserIdentity() if removed is UNSET else _identity(removed, "$.identitiesRemoved")
        ),
        identities_replaced=()
        if replaced is UNSET
        else tuple(IdentityReplacement(IdentityKind(r.kind), r.old, r.new) for r in replaced),
    )


def _custom(wire: Any) -> AnyEvent:
    return Custom(
        **_common(wire), definition_id=wire.definitionId, properties=_mapping(wire.properties)
    )


def _uninstall(wire: Any) -> AnyEvent:
    return Uninstall(**_common(wire))


def _forget(wire: Any) -> AnyEvent:
    raw = wire.userIdentity
    return Forget(
        **_common(wire),
        user_identity=None if raw is UNSET else _identity(raw, "$.userIdentity"),
    )


def _wire_name(event_type: EventType) -> str:
    return f"Wire{event_type.value[0].upper()}{event_type.value[1:]}"


_CONVERTERS: Final = {
    _wire_name(EventType.INSTALL): _install,
    _wire_name(EventType.APP_LAUNCH): _app_launch,
    _wire_name(EventType.INSTALL_UPDATE): _install_update,
    _wire_name(EventType.PERSONALIZE): _personalize,
    _wire_name(EventType.DEPERSONALIZE): _depersonalize,
    _wire_name(EventType.PERSON_UPDATE): _person_update,
    _wire_name(EventType.CUSTOM): _custom,
    _wire_name(EventType.UNINSTALL): _uninstall,
    _wire_name(EventType.FORGET): _forget,
}
