"""A request body -> records and dead letters: limits, gzip, partial batches (pure, no I/O)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib
from typing import Any

import orjson
import pytest
from tests.codecs import oracle

from idstream.gateway.intake import (
    IntakeConfig,
    Origin,
    RequestError,
    gunzip,
    messages_of,
    parse,
    take,
)

NOW = 1_732_352_400_000
ORIGIN = Origin("batch", "shop-ios", NOW, "req-1")
CONFIG = IntakeConfig()


def track(message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "anonymousId": f"anon-{message_id}",
        "timestamp": "2024-11-23T09:00:00Z",
        **fields,
    }


def batch(*messages: Any) -> list[tuple[Any, bytes | None]]:
    body = orjson.dumps({"batch": list(messages)})
    return messages_of("batch", parse(body), body)


# ---------------------------------------------------------------- gzip


def test_gunzip_returns_the_body() -> None:
    assert gunzip(gzip.compress(b'{"a":1}'), 100) == b'{"a":1}'


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)  # 50 MB that packs to about 50 KB
    assert len(bomb) < 100_000
    with pytest.raises(RequestError) as caught:
        gunzip(bomb, 4 * 1024 * 1024)
    assert caught.value.status == 413


def test_a_body_exactly_at_the_limit_passes() -> None:
    assert len(gunzip(gzip.compress(b"x" * 1000), 1000)) == 1000
    with pytest.raises(RequestError):
        gunzip(gzip.compress(b"x" * 1001), 1000)


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(b'{"a":1}')[:-6],  # truncated
        gzip.compress(b"{}") + gzip.compress(b"{}"),  # two members
        zlib.compress(b"{}"),  # zlib, not gzip
    ],
    ids=["garbage", "truncated", "two-members", "zlib"],
)
def test_bad_gzip_is_a_400(body: bytes) -> None:
    with pytest.raises(RequestError) as caught:
        gunzip(body, 1000)
    assert (caught.value.status, caught.value.code) == (400, "bad_gzip")


# ---------------------------------------------------------------- request shape


@pytest.mark.parametrize("body", [b"{", b"[]", b'"x"', b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_a_body_that_is_no_json_object_is_a_400(body: bytes) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body)
    assert caught.value.status == 400


def test_a_batch_needs_a_list() -> None:
    with pytest.raises(RequestError) as caught:
        messages_of("batch", {"batch": {"type": "track"}}, b"")
    assert caught.value.code == "invalid_batch"


def test_a_batch_holds_a_bounded_number_of_messages() -> None:
    doc = {"batch": [{}] * 11}
    assert len(messages_of("batch", doc, b"", max_messages=11)) == 11
    with pytest.raises(RequestError) as caught:
        messages_of("batch", doc, b"", max_messages=10)
    assert (caught.value.status, caught.value.code) == (413, "too_many_messages")


def test_a_single_route_decides_the_type_and_keeps_the_body_bytes() -> None:
    body = orjson.dumps({"type": "identify", "event": "x", "anonymousId": "a"})
    [(message, raw)] = messages_of("track", parse(body), body)
    assert message["type"] == "track" and raw == body


def test_batch_context_applies_to_every_message_and_the_message_wins() -> None:
    body = orjson.dumps(
        {
            "context": {"locale": "en-US", "os": {"name": "iOS"}},
            "batch": [track("1"), track("2", context={"locale": "pt-PT"}), "junk"],
        }
    )
    first, second, junk = (m for m, _ in messages_of("batch", parse(body), body))
    assert first["context"] == {"locale": "en-US", "os": {"name": "iOS"}}
    assert second["context"] == {"locale": "pt-PT", "os": {"name": "iOS"}}
    assert junk == "junk"


# ---------------------------------------------------------------- partial batches


def dead_letters(intake: Any) -> list[dict[str, Any]]:
    values = [orjson.loads(r.value) for r in intake.dead_letters]
    validator = oracle.validator("output/dead-letter.schema.json")
    for value in values:
        validator.validate(value)
    return values


def test_valid_messages_are_produced_and_invalid_ones_dead_lettered() -> None:
    bad = {"type": "track", "anonymousId": "anon-x", "messageId": "m-bad"}
    intake = take(batch(track("1"), bad, track("2"), 42), "shop-ios", CONFIG, ORIGIN)
    assert [r.key for r in intake.events] == [b"anon-1", b"anon-2"]
    assert [orjson.loads(r.value)["eventId"] for r in intake.events] == ["1", "2"]
    assert intake.messages == 4 and intake.rejected == {"schema_violation": 2}
    first, second = dead_letters(intake)
    assert [r.key for r in intake.dead_letters] == [b"anon-x", None]
    assert first["source"] == {
        "kind": "gateway",
        "route": "/v1/batch",
        "appCode": "shop-ios",
        "receivedAt": NOW,
        "requestId": "req-1",
        "index": 1,
    }
    assert first["detail"].startswith("$.event")
    assert orjson.loads(base64.b64decode(first["originalBase64"])) == bad
    assert first["truncated"] is False
    assert first["originalLength"] == len(base64.b64decode(first["originalBase64"]))
    assert second["source"]["index"] == 3


def test_an_oversize_message_keeps_a_prefix_its_length_and_sha256() -> None:
    big = track("big", properties={"blob": "x" * 40_000})
    raw = orjson.dumps(big)
    intake = take(batch(big), "shop-ios", CONFIG, ORIGIN)
    assert not intake.events
    [letter] = dead_letters(intake)
    assert letter["reason"] == "oversize"
    assert base64.b64decode(letter["originalBase64"]) == raw[: CONFIG.max_message_bytes]
    assert letter["originalLength"] == len(raw)
    assert letter["originalSha256"] == hashlib.sha256(raw).hexdigest()
    assert letter["truncated"] is True


def test_the_workers_decoder_judges_the_mapped_event() -> None:
    long_name = track("long", properties={"note": "y" * 2_000})
    future = track("future", timestamp="2024-11-25T09:00:00.001Z")  # 48 h after receipt
    intake = take(batch(long_name, future), "shop-ios", CONFIG, ORIGIN)
    assert not intake.events
    reasons = [(d["reason"], d["detail"].split(":")[0]) for d in dead_letters(intake)]
    assert reasons == [("oversize", "as custom"), ("timestamp_out_of_range", "as custom")]


def test_a_message_that_maps_to_two_events_is_stored_whole_or_not_at_all() -> None:
    opened = track(
        "o",
        event="Application Opened",
        context={"device": {"id": "d-1", "token": "t" * 2_000}},  # token over 1024 chars
    )
    intake = take(batch(opened), "shop-ios", CONFIG, ORIGIN)
    assert not intake.events
    assert dead_letters(intake)[0]["reason"] == "oversize"


def test_ignored_messages_are_counted_not_produced() -> None:
    group = {"type": "group", "groupId": "g", "anonymousId": "a", "messageId": "g1"}
    intake = take(batch(group, track("1")), "shop-ios", CONFIG, ORIGIN)
    assert intake.ignored == 1 and len(intake.events) == 1 and not intake.dead_letters


def test_a_message_nested_too_deep_to_write_again_is_dead_lettered() -> None:
    # 300 levels: orjson reads up to 1024 but writes only 255, so it cannot be written again.
    body = b'{"batch":[{"type":"track","anonymousId":"a","x":' + b"[" * 300 + b"]" * 300 + b"}]}"
    intake = take(messages_of("batch", parse(body), body), "shop-ios", CONFIG, ORIGIN)
    [letter] = dead_letters(intake)
    assert letter["reason"] == "schema_violation" and "nested" in letter["detail"]
