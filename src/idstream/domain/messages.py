"""Messages between the resolver stages, and the output records they produce.

Domain layer. Every message names the key it is routed by, so any driver (in-process or Kafka)
delivers it to the stage instance that owns that key; per (sender, key) order is preserved.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from idstream.domain.events import AnyEvent, PoolId, ProfileId, PushRegistrationId, RecordMeta
from idstream.domain.reasons import RejectReason


class OutputTopic(StrEnum):
    """The four output streams of SPEC §1 (names here are logical; settings map them to topics)."""

    RESOLVED_EVENTS = "resolved-events"
    PROFILE_CHANGES = "profile-changes"
    PROFILES = "profiles"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True, slots=True)
class Output:
    """One record for an output topic. `value` None is a tombstone (compacted `profiles`)."""

    topic: OutputTopic
    key: str
    value: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class InstallFacts:
    """What the pool needs to know of an install to build profiles and channels (SPEC §4.9)."""

    app_code: str
    lifecycle: str  # anonymous | personalized | depersonalized | uninstalled
    push_enabled: bool
    primary_device: bool
    system_data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claim:
    """install stage -> pool stage (key: pool): an identity-relevant step of one install.

    Sent in install order. `order` is the event-time order key the pool sorts by:
    (max timestamp of this install's claims so far, eventId), monotone per install, so an
    install's own order is kept while different installs are ordered by event time.
    `event` is None for a pure facts update (install first seen, push/primary change).
    """

    pool: PoolId
    push_registration_id: PushRegistrationId
    seq: int  # per-install claim counter, 1, 2, 3...
    order: tuple[int, str]
    event: AnyEvent | None
    segment: str  # eventId that opened the install's current segment (see architecture.md)
    anonymous_profile: ProfileId  # the profile the install's current anonymous segment uses
    facts: InstallFacts
    # The original record, so a claim the pool rejects as a whole can go to the dead letter.
    raw: bytes = b""
    meta: RecordMeta | None = None


@dataclass(frozen=True, slots=True)
class LinkDecision:
    """pool stage -> install stage (key: pushRegistrationId): which profile a segment belongs to.

    `pool_seq` grows with every decision the pool sends, so an install keeps the newest.
    `forgotten`: the segment's person was erased; `profile_id` is then the fresh anonymous
    profile the pool gave the install (for its current segment) or the erased id (older ones).
    """

    push_registration_id: PushRegistrationId
    segment: str
    profile_id: ProfileId
    pool_seq: int
    forgotten: bool = False
    rejected: RejectReason | None = None  # the claim opening `segment` was rejected as a whole


Message = Claim | LinkDecision


# Original bytes a dead letter carries at most (a setting, `dead_letter_max_bytes`): well under
# Kafka's default max.message.bytes (1 MiB) even as base64 with the key and the headers.
DEAD_LETTER_MAX_BYTES = 256 * 1024
# A header's cost against the key-and-headers budget besides its value: its JSON wrapper and
# its name at the worst JSON escaping (a control character is written as 6 bytes).
_HEADER_OVERHEAD = 40
_ESCAPED = 6


def dead_letter_topic_bytes(max_bytes: int = DEAD_LETTER_MAX_BYTES) -> int:
    """The `max.message.bytes` a dead-letter topic needs for records `dead_letter` builds with
    `max_bytes`: the value as base64 (4/3), the key and headers (at most max_bytes/16, written
    as base64, escaped JSON and the record key), the detail and the rest (under 64 KiB)."""
    return 2 * max_bytes + 64 * 1024


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def dead_letter(
    raw: bytes,
    meta: RecordMeta | None,
    reason: RejectReason,
    detail: str,
    *,
    max_bytes: int = DEAD_LETTER_MAX_BYTES,
) -> Output:
    """The dead-letter record of SPEC §1: original bytes untouched (base64), reason, source.

    Above `max_bytes` the record carries the first `max_bytes` bytes of the original value,
    with its full length and sha256 (`truncated`: true), so it always fits a topic of
    `dead_letter_topic_bytes(max_bytes)`. The key and the headers share max_bytes/16: the key
    beyond it is cut to that prefix, headers past it are left out (`truncated` too).
    """
    raw = bytes(raw)
    cut = len(raw) > max_bytes
    value: dict[str, Any] = {
        "reason": reason.value,
        "detail": detail,
        "originalBase64": _b64(raw[:max_bytes] if cut else raw),
        "originalLength": len(raw),
        "originalSha256": hashlib.sha256(raw).hexdigest(),
        "truncated": cut,
        "key": None,
        "headers": [],
        "source": None,
    }
    key = ""
    if meta is not None:
        budget = max_bytes // 16
        original_key = meta.key
        if original_key is not None:
            if len(original_key) > budget:
                original_key, value["truncated"] = original_key[:budget], True
            budget -= len(original_key)
            key = original_key.decode("utf-8", "replace")
            value["key"] = _b64(original_key)
        for name, header in meta.headers:
            # A name is text already; one that UTF-8 cannot hold would stop the encoder.
            encoded = name.encode("utf-8", "replace")
            cost = _HEADER_OVERHEAD + _ESCAPED * len(encoded) + 2 * len(header or b"")
            if cost > budget:
                value["truncated"] = True
                break
            budget -= cost
            value["headers"].append({"key": encoded.decode("utf-8"), "valueBase64": _b64(header)})
        value["source"] = {
            "topic": meta.topic,
            "partition": meta.partition,
            "offset": meta.offset,
            "timestamp": meta.record_timestamp,
        }
    return Output(OutputTopic.DEAD_LETTER, key, value)


@dataclass(frozen=True, slots=True)
class StageResult:
    """What a stage returns for one input: messages for other stages and output records."""

    messages: tuple[Message, ...] = ()
    outputs: tuple[Output, ...] = ()
    # What the stage decided that leaves no output, for metrics (NOTE_* values). Not part of
    # equality: two results that send the same things are the same result.
    notes: tuple[str, ...] = field(default=(), compare=False)


NOTE_LAUNCH_DROPPED = "launch_dropped"  # an appLaunch inside the dedup window (SPEC §4.2)
NOTE_DUPLICATE = "duplicate_event"  # an eventId already applied to the install (SPEC §4.1)
