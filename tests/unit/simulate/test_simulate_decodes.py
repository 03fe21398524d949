"""Simulated traffic against the real decoder: good records decode, malformed ones are rejected."""

from __future__ import annotations

from collections import Counter

from idstream.codecs import Rejection, decode
from idstream.domain.events import RecordMeta
from idstream.simulate import TrafficConfig, generate


def test_well_formed_records_decode_and_malformed_ones_are_rejected() -> None:
    config = TrafficConfig(seed=9, events=6000, malformed_share=0.1, junk_share=0.2)
    reasons: Counter[str] = Counter()
    for record in generate(config):
        meta = RecordMeta("idstream.events", 0, 0, record.record_ms, record.key)
        result = decode(record.value, meta)
        if record.malformed:
            assert isinstance(result, Rejection), (record.label, record.value[:200])
            reasons[str(result.reason)] += 1
        else:
            assert not isinstance(result, Rejection), (result, record.value[:300])
            assert str(result.type) == record.label
    assert len(reasons) >= 3
