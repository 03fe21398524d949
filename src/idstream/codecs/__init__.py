"""Bytes <-> domain values: the one input decoder and the output encoders; codecs layer."""

from __future__ import annotations

from idstream.codecs.decoder import Rejection, decode
from idstream.codecs.encode import (
    dead_letter_record,
    encode_record,
    event_to_wire,
    resolved_event_record,
)
from idstream.codecs.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "Rejection",
    "dead_letter_record",
    "decode",
    "encode_record",
    "event_to_wire",
    "resolved_event_record",
]
