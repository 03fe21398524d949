"""Bytes for the messages the stages send each other over internal Kafka topics.

Driver layer. A claim carries its original record bytes, so the event inside it is decoded
again on the pool side with the same decoder instead of being given a second wire format.
"""

from __future__ import annotations

from typing import Any

import msgspec

from idstream.codecs import decode
from idstream.domain.events import PoolId, ProfileId, PushRegistrationId, RecordMeta
from idstream.domain.messages import Claim, InstallFacts, LinkDecision
from idstream.domain.reasons import RejectReason
from idstream.errors import IdstreamError

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class CorruptMessageError(IdstreamError):
    """An internal-topic message could not be read: a bug or a foreign producer on that topic."""


def _meta_out(meta: RecordMeta | None) -> list[Any] | None:
    if meta is None:
        return None
    headers = [[k, v] for k, v in meta.headers]
    return [meta.topic, meta.partition, meta.offset, meta.record_timestamp, meta.key, headers]


def _meta_in(raw: list[Any] | None) -> RecordMeta | None:
    if raw is None:
        return None
    topic, partition, offset, timestamp, key, headers = raw
    return RecordMeta(topic, partition, offset, timestamp, key, tuple((k, v) for k, v in headers))


def encode_claim(claim: Claim) -> bytes:
    f = claim.facts
    return _encode(
        [
            claim.pool,
            claim.push_registration_id,
            claim.seq,
            list(claim.order),
            claim.event is not None,
            claim.segment,
            claim.anonymous_profile,
            [f.app_code, f.lifecycle, f.push_enabled, f.primary_device, dict(f.system_data)],
            claim.raw,
            _meta_out(claim.meta),
        ]
    )


def decode_claim(data: bytes) -> Claim:
    try:
        pool, prid, seq, order, has_event, segment, anon, facts, raw, meta = _decode(data)
        event = None
        if has_event:
            decoded = decode(raw)
            if not hasattr(decoded, "event_id"):
                raise CorruptMessageError(f"claim {prid}#{seq} holds an undecodable event")
            event = decoded
        app_code, lifecycle, push_enabled, primary, system_data = facts
        return Claim(
            pool=PoolId(pool),
            push_registration_id=PushRegistrationId(prid),
            seq=seq,
            order=(order[0], order[1]),
            event=event,  # type: ignore[arg-type]
            segment=segment,
            anonymous_profile=ProfileId(anon),
            facts=InstallFacts(app_code, lifecycle, push_enabled, primary, system_data),
            raw=raw,
            meta=_meta_in(meta),
        )
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CorruptMessageError(f"unreadable claim: {exc}") from exc


def encode_decision(d: LinkDecision) -> bytes:
    rejected = d.rejected.value if d.rejected is not None else None
    return _encode(
        [d.push_registration_id, d.segment, d.profile_id, d.pool_seq, d.forgotten, rejected]
    )


def decode_decision(data: bytes) -> LinkDecision:
    try:
        prid, segment, profile_id, pool_seq, forgotten, rejected = _decode(data)
        return LinkDecision(
            push_registration_id=PushRegistrationId(prid),
            segment=segment,
            profile_id=ProfileId(profile_id),
            pool_seq=pool_seq,
            forgotten=forgotten,
            rejected=RejectReason(rejected) if rejected is not None else None,
        )
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CorruptMessageError(f"unreadable link decision: {exc}") from exc
