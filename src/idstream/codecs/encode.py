"""Domain values -> output record values (orjson); codecs layer.

Shapes follow schemas/output/*.schema.json. Builders return plain dicts so a stage can
add fields; `encode_record` turns one into bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from idstream.codecs.decoder import Rejection
from idstream.domain.events import (
    AnyEvent,
    Custom,
    Forget,
    Install,
    InstallUpdate,
    Personalize,
    PersonAttributes,
    PersonUpdate,
    RecordMeta,
    UserIdentity,
)


def _default(value: Any) -> Any:
    # The domain keeps read-only mappings and sets; JSON has objects and arrays.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One output record value as compact UTF-8 JSON (read-only mappings and sets allowed).

    Raises TypeError for values JSON cannot hold (a bug in the caller, not bad input).
    """
    return orjson.dumps(record if isinstance(record, dict) else dict(record), default=_default)


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def dead_letter_record(raw: bytes, meta: RecordMeta, rejection: Rejection) -> dict[str, Any]:
    """The dead-letter value for a rejected record: original bytes untouched, as base64."""
    return {
        "reason": rejection.reason.value,
        "detail": rejection.detail,
        "originalBase64": _b64(bytes(raw)),
        "key": _b64(meta.key),
        "headers": [{"key": key, "valueBase64": _b64(value)} for key, value in meta.headers],
        "source": {
            "topic": meta.topic,
            "partition": meta.partition,
            "offset": meta.offset,
            "timestamp": meta.record_timestamp,
        },
    }


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


_COMMON_FIELDS = 5


def event_to_wire(event: AnyEvent) -> dict[str, Any]:
    """The event in its wire shape (camelCase, timestamp in ms): what decode() reads back."""
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
        if not (event.system_data or event.custom_attributes or "primaryDevice" in out):
            # The wire wants one of the three; an update that changes nothing still decodes.
            out["customAttributes"] = {}
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
        if len(out) == _COMMON_FIELDS + len(event.standard_properties):
            out["tagsAdded"] = []  # as above: the wire wants at least one field
    elif isinstance(event, Custom):
        out["definitionId"] = event.definition_id
        if event.properties:
            out["properties"] = dict(event.properties)
    elif isinstance(event, Forget) and event.user_identity is not None:
        out["userIdentity"] = _identity(event.user_identity)
    return out


def resolved_event_record(
    event: AnyEvent, profile_id: str, pool: str, resolved_at: int | None = None
) -> dict[str, Any]:
    """The resolved-events value: the event plus install, profile and pool."""
    return {
        **event_to_wire(event),
        "installId": event.push_registration_id,
        "profileId": profile_id,
        "pool": pool,
        "resolvedAt": event.timestamp if resolved_at is None else resolved_at,
    }
