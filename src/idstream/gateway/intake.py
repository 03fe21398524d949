"""One tracking-API request body -> input records to produce and dead letters; pure.

No I/O and no clock: the server passes the receive time and a request id. Request-level
faults (a body over the limit, bad gzip, not JSON) raise `RequestError`, answered with a 4xx;
a bad message inside a good request goes to the dead letter, so the rest of the batch lands.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from idstream.codecs import Limits, Rejection, decode
from idstream.domain.events import RecordMeta
from idstream.domain.reasons import RejectReason
from idstream.gateway.mapping import Ignored, Mapped, MappingConfig, Refused, map_message

# Routes whose body is one message of that type; /v1/batch holds a list of them.
SINGLE_ROUTES: Final = ("identify", "track", "screen", "page", "group", "alias")
_GZIP_WINDOW: Final = 16 + zlib.MAX_WBITS  # gzip header and trailer


class RequestError(Exception):
    """A request the gateway refuses as a whole: `status` and a `code` for the JSON answer.

    Not retriable by the client (4xx): fix the sender.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """Limits and mapping choices of one gateway, from Settings (see settings.py)."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_message_bytes: int = 32 * 1024
    max_batch_messages: int = 1_000
    sign_out_events: frozenset[str] = frozenset({"Signed Out"})
    force_depersonalize: bool = True
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes


@dataclass
class Intake:
    """What one request becomes: records for the input topic and for the dead-letter topic."""

    events: list[Record] = field(default_factory=list)
    dead_letters: list[Record] = field(default_factory=list)
    messages: int = 0
    ignored: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, for the dead letters' `source`."""

    route: str
    app_code: str
    received_at: int
    request_id: str


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing (413) once the output would pass `limit` bytes."""
    inflater = zlib.decompressobj(_GZIP_WINDOW)
    try:
        # max_length bounds the memory a gzip bomb can take; one byte more tells "too big".
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit:
            raise RequestError(413, "body_too_large", f"decompressed body is over {limit} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise RequestError(400, "bad_gzip", "body is not valid gzip") from exc
    if not inflater.eof:
        raise RequestError(400, "bad_gzip", "gzip body is truncated")
    if inflater.unused_data:
        raise RequestError(400, "bad_gzip", "one gzip member per body")
    if len(out) > limit:
        raise RequestError(413, "body_too_large", f"decompressed body is over {limit} bytes")
    return out


def parse(body: bytes) -> dict[str, Any]:
    """The request's JSON object (RequestError 400 when it is not one)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"body is not JSON: {str(exc)[:120]}") from exc
    if not isinstance(doc, dict):
        raise RequestError(400, "invalid_json", "body must be a JSON object")
    return doc


def messages_of(
    route: str, doc: dict[str, Any], body: bytes, max_messages: int = 1_000
) -> list[tuple[Any, bytes | None]]:
    """The messages of a request, each with its own bytes when the request has them."""
    if route != "batch":
        # A single-message route decides the type, whatever the body says.
        return [({**doc, "type": route}, body)]
    batch = doc.get("batch")
    if not isinstance(batch, list):
        raise RequestError(400, "invalid_batch", "$.batch: required, a list of messages")
    if len(batch) > max_messages:
        # Each message may cost a dead letter: a body of tiny junk messages must not
        # turn into many times its size in Kafka.
        raise RequestError(
            413, "too_many_messages", f"a batch holds at most {max_messages} messages"
        )
    shared = doc.get("context")
    if not isinstance(shared, dict) or not shared:
        return [(message, None) for message in batch]
    return [(_with_context(message, shared), None) for message in batch]


def _with_context(message: Any, shared: dict[str, Any]) -> Any:
    """A batch-level context applies to every message; the message's own fields win."""
    if not isinstance(message, dict):
        return message
    own = message.get("context")
    return {**message, "context": {**shared, **own} if isinstance(own, dict) else shared}


def take(
    messages: list[tuple[Any, bytes | None]],
    app_code: str,
    config: IntakeConfig,
    origin: Origin,
) -> Intake:
    """Map and validate every message; each ends as input records, a dead letter or ignored."""
    mapping = MappingConfig(app_code, config.sign_out_events, config.force_depersonalize)
    # The broker stamps the record about now: the worker's future-skew check, made early.
    meta = RecordMeta(topic="", partition=0, offset=0, record_timestamp=origin.received_at)
    intake = Intake()
    for index, (message, raw) in enumerate(messages):
        intake.messages += 1
        original = raw if raw is not None else _bytes_of(message)
        if original is None:
            why = Refused(RejectReason.SCHEMA_VIOLATION, "$: nested too deeply", None)
            _reject(intake, why, b"", origin, index, config)
            continue
        if len(original) > config.max_message_bytes:
            why = Refused(
                RejectReason.OVERSIZE,
                f"message is {len(original)} bytes > {config.max_message_bytes}",
                None,
            )
            _reject(intake, why, original, origin, index, config)
            continue
        outcome = map_message(message, mapping, origin.received_at)
        if isinstance(outcome, Ignored):
            intake.ignored += 1
        elif isinstance(outcome, Refused):
            _reject(intake, outcome, original, origin, index, config)
        else:
            _validate(intake, outcome, original, origin, index, config, meta)
    return intake


def _validate(
    intake: Intake,
    mapped: Mapped,
    original: bytes,
    origin: Origin,
    index: int,
    config: IntakeConfig,
    meta: RecordMeta,
) -> None:
    """Encode the events and run the worker's own decoder on them: all or none are produced."""
    key = mapped.key.encode()
    records = []
    for event in mapped.events:
        value = orjson.dumps(event)
        decoded = decode(value, meta, config.limits)
        if isinstance(decoded, Rejection):
            why = Refused(decoded.reason, f"as {event['type']}: {decoded.detail}", mapped.key)
            _reject(intake, why, original, origin, index, config)
            return
        records.append(Record(key, value))
    intake.events.extend(records)


def _reject(
    intake: Intake,
    why: Refused,
    original: bytes,
    origin: Origin,
    index: int,
    config: IntakeConfig,
) -> None:
    intake.rejected[why.reason.value] += 1
    value = dead_letter(why, original, origin, index, config.max_message_bytes)
    key = why.key.encode() if why.key is not None else None
    intake.dead_letters.append(Record(key, orjson.dumps(value)))


def dead_letter(
    why: Refused, original: bytes, origin: Origin, index: int, keep_bytes: int
) -> dict[str, Any]:
    """The dead-letter value of a message (schemas/output/dead-letter.schema.json).

    Above `keep_bytes` the record keeps a prefix (`truncated`), with the full length and
    sha256 always, so a dead letter always fits a Kafka record.
    """
    value: dict[str, Any] = {
        "reason": why.reason.value,
        "detail": why.detail,
        "originalBase64": _b64(original[:keep_bytes]),
        "originalLength": len(original),
        "originalSha256": hashlib.sha256(original).hexdigest(),
        "truncated": len(original) > keep_bytes,
        "key": None if why.key is None else _b64(why.key.encode()),
        "headers": [],
        "source": {
            "kind": "gateway",
            "route": f"/v1/{origin.route}",
            "appCode": origin.app_code,
            "receivedAt": origin.received_at,
            "requestId": origin.request_id,
            "index": index,
        },
    }
    return value


def _bytes_of(message: Any) -> bytes | None:
    """A batch message's bytes, written again (the request holds them only as a slice);
    None for one nested deeper than orjson writes (255 levels)."""
    try:
        return orjson.dumps(message)
    except orjson.JSONEncodeError:
        return None


def summary(intake: Intake) -> Mapping[str, Any]:
    """The JSON answer of a request that was stored."""
    return {
        "success": True,
        "messages": intake.messages,
        "produced": len(intake.events),
        "deadLettered": sum(intake.rejected.values()),
        "ignored": intake.ignored,
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
