"""Size limits the decoder enforces on every input record; codecs layer.

The defaults are written into schemas/ (maxLength, maxItems, maxProperties); a test keeps
them equal.
"""

from __future__ import annotations

from dataclasses import dataclass

# Largest epoch-ms timestamp accepted (9999-12-31T23:59:59.999Z): what a datetime can represent.
MAX_TIMESTAMP_MS = 253_402_300_799_999
# Integer and float attribute values must fit a signed 64-bit integer range, so every JSON
# library downstream (orjson included) can write them back.
MIN_NUMBER = -(2**63)
MAX_NUMBER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """What one input record may hold. Exceeding any of them rejects it as `oversize`.

    max_record_bytes: size of the raw record value (64 KiB).
    max_string_chars: any string, attribute names included, in code points (1024).
    max_attributes: entries of one attribute map (customAttributes, properties) (100).
    max_identities_per_kind: emails, phones, identitiesReplaced entries per event (20).
    max_tags: tagsAdded, tagsRemoved entries per event (50).
    max_future_skew_ms: how far an event may be stamped after its Kafka record time (24 h);
        beyond it the record is rejected as `timestamp_out_of_range`.
    """

    max_record_bytes: int = 64 * 1024
    max_string_chars: int = 1024
    max_attributes: int = 100
    max_identities_per_kind: int = 20
    max_tags: int = 50
    max_future_skew_ms: int = 24 * 60 * 60 * 1000


DEFAULT_LIMITS = Limits()
