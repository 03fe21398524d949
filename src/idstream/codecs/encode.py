"""Domain values -> output record values (orjson); codecs layer.

Shapes follow schemas/output/*.schema.json. Builders return plain dicts so a stage can
add fields; `encode_record` turns one into bytes.
"""

from __future__ import annotations

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
from idstream.domain.messages import DEAD_LETTER_MAX_BYTES, dead_letter


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


def dead_letter_record(
    raw: bytes, meta: RecordMeta, rejection: Rejection, max_bytes: int = DEAD_LETTER_MAX_BYTES
) -> dict[str, Any]:
    """The dead-letter value for a rejected record (`idstream.domain.messages.dead_letter`'s:
    original bytes as base64, above `max_bytes` a prefix with the length and sha256)."""
    value = dead_letter(raw, meta, rejection.reason, rejection.detail, max_bytes=max_bytes).value
    assert value is not None
    return dict(value)


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
