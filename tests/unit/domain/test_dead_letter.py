"""Bounded dead letters (issue #11 item 4): the whole original up to the limit, above it a
prefix with the length and the sha256; the key and headers bounded too; always within the
dead-letter topic's max.message.bytes."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.codecs import oracle

from idstream.codecs import DEFAULT_LIMITS, Rejection, decode, encode_record
from idstream.domain.events import RecordMeta
from idstream.domain.messages import (
    DEAD_LETTER_MAX_BYTES,
    OutputTopic,
    dead_letter,
    dead_letter_topic_bytes,
)
from idstream.domain.reasons import RejectReason
from idstream.settings import Settings

META = RecordMeta(
    topic="idstream.events",
    partition=1,
    offset=7,
    record_timestamp=1_732_352_400_000,
    key=b"fcm:abc",
    headers=(("sdk", b"5.2.1"),),
)
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588  # the broker's message.max.bytes default


def letter(raw: bytes, meta: RecordMeta | None = META, **kw: Any) -> dict[str, Any]:
    output = dead_letter(raw, meta, RejectReason.OVERSIZE, "too big", **kw)
    assert output.topic is OutputTopic.DEAD_LETTER
    value = json.loads(encode_record(output.value or {}))
    if meta is not None:  # without one `source` is null, which the schema does not foresee
        oracle.validator("output/dead-letter.schema.json").validate(value)
    return value  # type: ignore[no-any-return]


def test_the_default_limit_and_topic_size_are_well_under_kafkas_default() -> None:
    assert DEAD_LETTER_MAX_BYTES == 256 * 1024 == Settings().dead_letter_max_bytes
    assert dead_letter_topic_bytes() < KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert DEFAULT_LIMITS.max_record_bytes <= DEAD_LETTER_MAX_BYTES


def test_a_small_record_is_carried_whole_with_its_length_and_hash() -> None:
    raw = b'{"type":"appLaunch",\xff'
    value = letter(raw)
    assert base64.b64decode(value["originalBase64"]) == raw
    assert value["originalLength"] == len(raw)
    assert value["originalSha256"] == hashlib.sha256(raw).hexdigest()
    assert value["truncated"] is False
    assert base64.b64decode(value["key"]) == b"fcm:abc"
    assert value["headers"] == [{"key": "sdk", "valueBase64": "NS4yLjE="}]


def test_at_the_input_limit_the_oversize_record_is_carried_whole() -> None:
    # One byte over the decoder's limit: oversize, and still whole in its dead letter.
    raw = b"{" + b" " * DEFAULT_LIMITS.max_record_bytes + b"}"
    rejection = decode(raw, META)
    assert isinstance(rejection, Rejection) and rejection.reason is RejectReason.OVERSIZE
    value = letter(raw)
    assert base64.b64decode(value["originalBase64"]) == raw
    assert value["truncated"] is False


def test_exactly_at_the_dead_letter_limit_the_record_is_whole_and_one_byte_more_is_cut() -> None:
    limit = 4096
    whole = bytes(range(256)) * (limit // 256)
    assert len(whole) == limit
    value = letter(whole, max_bytes=limit)
    assert base64.b64decode(value["originalBase64"]) == whole
    assert value["truncated"] is False

    longer = whole + b"!"
    value = letter(longer, max_bytes=limit)
    assert base64.b64decode(value["originalBase64"]) == whole  # the first `limit` bytes
    assert value["originalLength"] == limit + 1
    assert value["originalSha256"] == hashlib.sha256(longer).hexdigest()
    assert value["truncated"] is True


def test_a_5_mb_record_becomes_a_prefix_that_fits_the_topic() -> None:
    raw = b'{"type":"custom","properties":{"p":"' + b"x" * 5_000_000 + b'"}}'
    output = dead_letter(raw, META, RejectReason.OVERSIZE, "record is 5000036 bytes > 65536")
    encoded = encode_record(output.value or {})
    assert len(encoded) + len(output.key.encode()) < dead_letter_topic_bytes()
    value = json.loads(encoded)
    assert base64.b64decode(value["originalBase64"]) == raw[:DEAD_LETTER_MAX_BYTES]
    assert value["originalLength"] == len(raw)
    assert value["originalSha256"] == hashlib.sha256(raw).hexdigest()
    assert value["truncated"] is True


def test_a_huge_key_is_cut_and_headers_past_the_budget_are_left_out() -> None:
    limit = 16 * 1024  # key and headers share 1 KiB
    meta = RecordMeta(
        topic="t",
        partition=0,
        offset=0,
        record_timestamp=-1,
        key=b"k" * 5000,
        headers=(("a", b"1"),),
    )
    value = letter(b"{}", meta, max_bytes=limit)
    assert base64.b64decode(value["key"]) == b"k" * (limit // 16)
    assert value["headers"] == []  # nothing left of the budget
    assert value["truncated"] is True

    meta = RecordMeta("t", 0, 0, -1, b"fcm:1", (("a", b"1"), ("big", b"x" * 5000), ("b", b"2")))
    value = letter(b"{}", meta, max_bytes=limit)
    assert [h["key"] for h in value["headers"]] == [
        "a"
    ]  # headers are kept in order, up to one too big
    assert value["truncated"] is True


def test_odd_keys_and_headers_never_stop_the_encoder() -> None:
    meta = RecordMeta(
        topic="t",
        partition=0,
        offset=0,
        record_timestamp=-1,
        key=b"\xff\xfe\x00",
        headers=(("\ud800name", b"v"), ("\x00\x1f", None)),  # type: ignore[arg-type]
    )
    output = dead_letter(b"\xed\xa0\x80", meta, RejectReason.MALFORMED_JSON, "x")
    value = json.loads(encode_record(output.value or {}))
    assert output.key == "\ufffd\ufffd\x00"
    assert value["headers"][0]["key"] == "?name"
    assert value["headers"][1] == {"key": "\x00\x1f", "valueBase64": None}


def test_without_meta_there_is_no_key_or_source() -> None:
    value = letter(b"x" * 10, None, max_bytes=4)
    assert value["key"] is None and value["source"] is None and value["headers"] == []
    assert value["truncated"] is True and value["originalLength"] == 10


names = st.text(max_size=40)
header = st.tuples(names, st.one_of(st.none(), st.binary(max_size=3000)))


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    limit=st.sampled_from([1024, 4096, 65_536]),
    size=st.integers(0, 200_000),
    fill=st.sampled_from([b"x", b"\x00", b"\xff", b'"']),
    key=st.one_of(st.none(), st.integers(0, 20_000)),
    key_fill=st.sampled_from([b"k", b"\xff", b"\x00"]),
    headers=st.lists(header, max_size=40),
    detail=st.text(max_size=300),
)
def test_every_dead_letter_fits_its_topic(
    limit: int,
    size: int,
    fill: bytes,
    key: int | None,
    key_fill: bytes,
    headers: list[tuple[str, bytes | None]],
    detail: str,
) -> None:
    meta = RecordMeta(
        topic="t" * 249,  # Kafka's longest topic name
        partition=2**31 - 1,
        offset=2**63 - 1,
        record_timestamp=2**63 - 1,
        key=None if key is None else key_fill * key,
        headers=tuple(headers),  # type: ignore[arg-type]
    )
    raw = fill * size
    output = dead_letter(raw, meta, RejectReason.SCHEMA_VIOLATION, detail, max_bytes=limit)
    encoded = encode_record(output.value or {})
    # the value, the record key and Kafka's per-record overhead (well under 512 bytes)
    assert len(encoded) + len(output.key.encode()) + 512 <= dead_letter_topic_bytes(limit)
    value = json.loads(encoded)
    assert value["originalLength"] == size
    assert base64.b64decode(value["originalBase64"]) == raw[:limit]
    if size > limit:
        assert value["truncated"] is True
    if not value["truncated"]:  # nothing left out
        assert len(value["headers"]) == len(headers)
        assert (value["key"] is None) is (key is None)
