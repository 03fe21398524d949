"""Messages between the resolver stages, and the output records they produce.

Domain layer. Every message names the key it is routed by, so any driver (in-process or Kafka)
delivers it to the stage instance that owns that key; per (sender, key) order is preserved.
"""

from __future__ import annotations

import base64
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


def dead_letter(raw: bytes, meta: RecordMeta | None, reason: RejectReason, detail: str) -> Output:
    """The dead-letter record of SPEC §1: original bytes untouched (base64), reason, source."""
    value: dict[str, Any] = {
        "reason": reason.value,
        "detail": detail,
        "originalBase64": base64.b64encode(raw).decode("ascii"),
        "key": None,
        "headers": [],
        "source": None,
    }
    key = ""
    if meta is not None:
        key = meta.key.decode("utf-8", "replace") if meta.key is not None else ""
        value["key"] = base64.b64encode(meta.key).decode("ascii") if meta.key is not None else None
        value["headers"] = [
            {"key": k, "valueBase64": base64.b64encode(v).decode("ascii")} for k, v in meta.headers
        ]
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
