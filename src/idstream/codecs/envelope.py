"""Input records as files: one JSON object per line, the envelope or the plain value form.

Codecs layer. The envelope says everything Kafka says of a record, so a history exported from
a broker (`idstream export`) replays in process exactly as the workers saw it:

    {"topic": "idstream.events", "partition": 3, "offset": 1842, "timestamp": 1732352400000,
     "keyBase64": "ZmNt...", "headers": [{"key": "sdk", "valueBase64": "NS4y"}],
     "valueBase64": "eyJldmVudElkIjoi..."}

Key, header values and value are base64 (a record may hold any bytes). The plain form is one
record value per line, nothing else: its partition comes from its key (the event's
pushRegistrationId) as Kafka's partitioner computes it, its offset from its line, and its
record time is its line number (docs/operations.md, "Replaying a file").
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

ENVELOPE_FIELDS = frozenset(
    {"topic", "partition", "offset", "timestamp", "keyBase64", "headers", "valueBase64"}
)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka record as read from a topic."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value: bytes


class EnvelopeError(ValueError):
    """A line that looks like an envelope but is not a valid one."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise EnvelopeError(f"{what} must be base64 text or null")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"{what}: {exc}") from exc


def encode_envelope(envelope: Envelope) -> bytes:
    """The envelope as one JSON line (with its newline)."""
    doc = {
        "topic": envelope.topic,
        "partition": envelope.partition,
        "offset": envelope.offset,
        "timestamp": envelope.timestamp,
        "keyBase64": _b64(envelope.key),
        "headers": [{"key": k, "valueBase64": _b64(v)} for k, v in envelope.headers],
        "valueBase64": _b64(envelope.value),
    }
    return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)


def is_envelope(line: bytes) -> bool:
    """Whether a line is in the envelope form (as opposed to a plain record value)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and "valueBase64" in doc and "partition" in doc


def decode_envelope(line: bytes) -> Envelope:
    """One envelope line; EnvelopeError names what is wrong."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not doc.keys() >= ENVELOPE_FIELDS:
        raise EnvelopeError(f"an envelope needs {', '.join(sorted(ENVELOPE_FIELDS))}")
    for name in ("partition", "offset", "timestamp"):
        if type(doc[name]) is not int:
            raise EnvelopeError(f"{name} must be an integer")
    if doc["partition"] < 0 or doc["offset"] < 0:
        raise EnvelopeError("partition and offset must be >= 0")
    if not isinstance(doc["topic"], str) or not isinstance(doc["headers"], list):
        raise EnvelopeError("topic must be text and headers a list")
    headers = []
    for header in doc["headers"]:
        if not isinstance(header, dict) or not isinstance(header.get("key"), str):
            raise EnvelopeError("each header needs a text key")
        headers.append((header["key"], _unb64(header.get("valueBase64"), "header") or b""))
    value = _unb64(doc["valueBase64"], "valueBase64")
    return Envelope(
        topic=doc["topic"],
        partition=doc["partition"],
        offset=doc["offset"],
        timestamp=doc["timestamp"],
        key=_unb64(doc["keyBase64"], "keyBase64"),
        headers=tuple(headers),
        value=value or b"",
    )
