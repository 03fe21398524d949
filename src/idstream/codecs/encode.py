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
    InstallUpdate,
    PersonUpdate,
    RecordMeta,
)
from idstream.domain.install_state import event_wire


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


_COMMON_FIELDS = 5


def event_to_wire(event: AnyEvent) -> dict[str, Any]:
    """The event in its wire shape (camelCase, timestamp in ms): what decode() reads back.

    The domain's `event_wire` (which resolved events use) plus what the input schema needs
    so that any event value decodes again.
    """
    out = event_wire(event)
    if isinstance(event, InstallUpdate) and not (
        event.system_data or event.custom_attributes or event.primary_device is not None
    ):
        # The wire wants one of the three; an update that changes nothing still decodes.
        out["customAttributes"] = {}
    elif isinstance(event, PersonUpdate) and len(out) == _COMMON_FIELDS + len(
        event.standard_properties
    ):
        out["tagsAdded"] = []  # as above: the wire wants at least one field
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
