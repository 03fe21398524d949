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

from idstream.domain.events import RecordMeta
from idstream.domain.reasons import RejectReason


class OutputTopic(StrEnum):
    """The four output streams of SPEC §1, and the forget register (names here are logical;
    settings map them to topics)."""

    RESOLVED_EVENTS = "resolved-events"
    PROFILE_CHANGES = "profile-changes"
    PROFILES = "profiles"
    DEAD_LETTER = "dead-letter"
    # Compacted, keyed by a keyed hash: what a rebuild needs to publish nothing of a forgotten
    # person again (SPEC §4.10). No raw personal data.
    FORGET_REGISTER = "forget-register"


@dataclass(frozen=True, slots=True)
class Output:
    """One record for an output topic. `value` None is a tombstone (compacted `profiles`)."""

    topic: OutputTopic
    key: str
    value: Mapping[str, Any] | None


# Where an input record sits in the input log: (effective time, input partition, offset).
# The effective time is the running maximum of the partition's record timestamps up to the
# record. The pool applies claims in this order (SPEC §5): it is fixed by Kafka and the same
# in every replay of the same log.
LogPosition = tuple[int, int, int]

# A stored attribute or system value.
Value = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class InstallFacts:
    """What the pool needs to know of an install to build profiles and channels (SPEC §4.9)."""

    app_code: str
    push_enabled: bool
    primary_device: bool
    system_data: dict[str, Value] = field(default_factory=dict)
    custom_attributes: dict[str, Value] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClaimIdentity:
    """Identities as the event sent them (the pool normalizes them)."""

    external_user_id: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()


# Event types whose claim the pool answers: the install holds the event's resolved output (and
# those after it) until the answer says where it goes, or that it went to the dead letter.
ANSWERED_KINDS = frozenset({"personalize", "depersonalize", "personUpdate", "uninstall", "forget"})


@dataclass(frozen=True, slots=True)
class Claim:
    """install stage -> pool stage (key: pool): one step of an install the pool must know.

    Sent in the input log's order per input partition (`position`). `kind` is the type of the
    event that caused it: an identity or lifecycle event (ANSWERED_KINDS, answered with a
    LinkDecision naming `seq`), or any other event that changed the install's facts (the
    install's first event included). Plain values only, so the pool never decodes an event
    again and a pending claim can be stored as it is.
    """

    pool: str
    position: LogPosition
    push_registration_id: str
    seq: int  # the install's claim counter: 1, 2, 3...
    # The anonymous profile a segment opened by this event has (the install's first event,
    # a depersonalize, a forget of its own person): anonymous_profile_id(prid, seq).
    anonymous_profile: str
    facts: InstallFacts
    kind: str
    event_id: str
    timestamp: int  # event time (device clock): attributes are last-writer-wins by it
    identity: ClaimIdentity | None = None  # personalize, forget
    force_depersonalize: bool = False
    attributes: dict[str, Value] = field(default_factory=dict)
    custom_attributes: dict[str, Value] = field(default_factory=dict)
    tags_added: tuple[str, ...] = ()
    tags_removed: tuple[str, ...] = ()
    identities_added: ClaimIdentity | None = None
    identities_removed: ClaimIdentity | None = None
    identities_replaced: tuple[tuple[str, str, str], ...] = ()  # (kind, old, new)
    # The original record, so a claim the pool rejects as a whole can go to the dead letter.
    raw: bytes = b""
    meta: RecordMeta | None = None

    @property
    def answered(self) -> bool:
        return self.kind in ANSWERED_KINDS


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """install stage -> pool stage (key: pool): input partition `source` has been processed
    through `offset`, at effective time `time`; it sends no claim before that position."""

    pool: str
    source: int
    time: int
    offset: int


@dataclass(frozen=True, slots=True)
class LinkDecision:
    """pool stage -> install stage (key: pushRegistrationId): the profile of a segment.

    `pool_seq` grows with every decision the pool sends, so an install keeps the newest.
    `answers` is the install's claim `seq` this decision answers (0: a change caused by another
    install's claim, e.g. a merge); `rejected` says that claim went to the dead letter, and
    `skipped` that a rule dropped it (an event of a forgotten person stamped before the forget).
    `forgotten`: the segment's person was erased; `profile_id` is the fresh anonymous profile
    the install moved to. `lifecycle` is the install's lifecycle as the pool holds it
    (anonymous, personalized, depersonalized, uninstalled); empty: unknown to the pool.
    """

    push_registration_id: str
    segment: str
    profile_id: str
    pool_seq: int
    answers: int = 0
    forgotten: bool = False
    rejected: RejectReason | None = None
    skipped: bool = False
    lifecycle: str = ""


Message = Claim | Heartbeat | LinkDecision


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
    # Input records skipped by a rule, as (reason, input partition, offset), so that every
    # record's one outcome can be counted (SPEC §5). The reasons are among the notes too.
    skipped: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)


# Why an input record was skipped (SPEC §5): it has no output, only a count by reason.
NOTE_LAUNCH_DROPPED = "launch_dropped"  # an appLaunch inside the dedup window (SPEC §4.2)
NOTE_DUPLICATE = "duplicate_event"  # an eventId already applied to the install (SPEC §4.1)
NOTE_TICK = "tick"  # a tick record (SPEC §5): advances its partition, carries no event
NOTE_FORGOTTEN = "forgotten_person"  # an event of a forgotten person stamped before the forget
SKIP_REASONS = (NOTE_DUPLICATE, NOTE_LAUNCH_DROPPED, NOTE_TICK, NOTE_FORGOTTEN)
