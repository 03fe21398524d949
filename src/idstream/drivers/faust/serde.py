"""Bytes for the messages the stages send each other over internal Kafka topics.

Driver layer. Every value starts with one byte naming its kind, then the message as msgpack
(msgspec encodes the domain's frozen dataclasses directly). A claim carries plain values only,
so the pool never decodes an input event a second time (and no decoder setting can differ
between the two sides).

    claims topic (key: pool):         b"C" Claim | b"H" Heartbeat
    decisions topic (key: prid, or an explicit partition for progress):
                                      b"D" LinkDecision | b"P" Progress
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from idstream.domain.messages import Claim, Heartbeat, LinkDecision
from idstream.errors import IdstreamError

CLAIM = b"C"
HEARTBEAT = b"H"
DECISION = b"D"
PROGRESS = b"P"


@dataclass(frozen=True, slots=True)
class Progress:
    """pool stage -> every input partition's worker: how far a pool is in the input log.

    `watermark` is the effective time every input partition has reached for this pool;
    `waiting_on` the partitions its oldest pending claim waits for (their worker appends a
    tick when they are silent).
    """

    pool: str
    watermark: int
    waiting_on: tuple[int, ...]


class CorruptMessageError(IdstreamError):
    """An internal-topic message could not be read: a bug or a foreign producer on that topic."""


_encode = msgspec.msgpack.Encoder().encode
_claim = msgspec.msgpack.Decoder(Claim).decode
_heartbeat = msgspec.msgpack.Decoder(Heartbeat).decode
_decision = msgspec.msgpack.Decoder(LinkDecision).decode
_progress = msgspec.msgpack.Decoder(Progress).decode


def encode_pool_message(message: Claim | Heartbeat) -> bytes:
    return (CLAIM if isinstance(message, Claim) else HEARTBEAT) + _encode(message)


def decode_pool_message(data: bytes) -> Claim | Heartbeat:
    kind, body = data[:1], data[1:]
    try:
        if kind == CLAIM:
            return _claim(body)
        if kind == HEARTBEAT:
            return _heartbeat(body)
    except msgspec.DecodeError as exc:
        raise CorruptMessageError(f"unreadable claims-topic record: {exc}") from exc
    raise CorruptMessageError(f"unknown claims-topic record kind {kind!r}")


def encode_decision(decision: LinkDecision) -> bytes:
    return DECISION + _encode(decision)


def encode_progress(progress: Progress) -> bytes:
    return PROGRESS + _encode(progress)


def decode_decision_message(data: bytes) -> LinkDecision | Progress:
    kind, body = data[:1], data[1:]
    try:
        if kind == DECISION:
            return _decision(body)
        if kind == PROGRESS:
            return _progress(body)
    except msgspec.DecodeError as exc:
        raise CorruptMessageError(f"unreadable decisions-topic record: {exc}") from exc
    raise CorruptMessageError(f"unknown decisions-topic record kind {kind!r}")
