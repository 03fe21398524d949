"""`idstream gateway` over raw HTTP on a real broker: routes, write keys, limits, gzip, CORS,
partial batches. Each test reads back what reached the input and dead-letter topics."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from idstream.codecs import Rejection, decode
from tests.codecs import oracle
from tests.support.gateway import (
    APP_CODE,
    WRITE_KEY,
    LiveGateway,
    basic,
    gateway_settings,
    in_process_gateway,
)
from tests.support.names import UniqueNames

pytestmark = [pytest.mark.integration]

DEVICE = "dev-4f1c"


@pytest.fixture
async def gateway(kafka_bootstrap: str, names: UniqueNames) -> AsyncIterator[LiveGateway]:
    async with in_process_gateway(gateway_settings(kafka_bootstrap, names)) as live:
        yield live


def msg(kind: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": message_id,
        "anonymousId": "anon-1",
        "timestamp": "2024-11-23T09:00:00Z",
        "context": {"device": {"id": DEVICE}},
        **fields,
    }


def values(records: list[tuple[bytes | None, bytes | None]]) -> list[dict[str, Any]]:
    return [orjson.loads(v) for _, v in records if v is not None]


async def test_a_batch_is_stored_keyed_by_install_before_the_200(gateway: LiveGateway) -> None:
    batch = [
        msg("track", "m1", event="Application Opened"),
        msg("identify", "m2", userId="u-1", traits={"email": "ana@example.com"}),
        msg("track", "m3", event="Order Completed", properties={"total": 42.5}),
    ]
    response = await gateway.post("/v1/batch", {"batch": batch})
    assert response.status == 200
    assert await response.json() == {
        "success": True,
        "messages": 3,
        "produced": 3,
        "deadLettered": 0,
        "ignored": 0,
    }
    # acks=all before the answer: the records are readable now, no waiting.
    records = await gateway.events()
    assert {key for key, _ in records} == {DEVICE.encode()}
    events = values(records)
    assert [e["eventId"] for e in events] == ["m1", "m2", "m3"]
    assert [e["type"] for e in events] == ["appLaunch", "personalize", "custom"]
    assert all(e["appCode"] == APP_CODE for e in events)
    for _, value in records:
        assert value is not None and not isinstance(decode(value), Rejection)


async def test_every_single_route(gateway: LiveGateway) -> None:
    routes = {
        "identify": {"userId": "u-1"},
        "track": {"event": "Signed Out"},
        "screen": {"name": "Home"},
        "page": {"name": "Pricing"},
        "alias": {"userId": "u-2", "previousId": "u-1"},
        "group": {"groupId": "g-1"},
    }
    answers = {}
    for route, fields in routes.items():
        response = await gateway.post(f"/v1/{route}", msg("ignored-by-route", route, **fields))
        assert response.status == 200, route
        answers[route] = await response.json()
    assert answers["group"]["ignored"] == 1 and answers["group"]["produced"] == 0
    stored = {e["eventId"]: e for e in values(await gateway.events())}
    assert {k: (e["type"], e.get("definitionId")) for k, e in stored.items()} == {
        "identify": ("personalize", None),
        "track": ("depersonalize", None),
        "screen": ("custom", "screen"),
        "page": ("custom", "page"),
        "alias": ("personalize", None),
    }


async def test_v1_b_is_the_batch_route_of_segments_mobile_libraries(gateway: LiveGateway) -> None:
    response = await gateway.post("/v1/b", {"batch": [msg("track", "b1", event="x")]})
    assert response.status == 200 and (await response.json())["produced"] == 1
    assert [e["eventId"] for e in values(await gateway.events())] == ["b1"]


async def test_an_unknown_route_is_a_404(gateway: LiveGateway) -> None:
    assert (await gateway.post("/v1/import", {"batch": []})).status == 404


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},  # none, and no writeKey in the body
        basic("not-a-key"),
        {"Authorization": "Basic %%%"},
        {"Authorization": f"Bearer {WRITE_KEY}"},
    ],
    ids=["missing", "unknown", "malformed", "bearer"],
)
async def test_a_request_without_a_known_write_key_is_a_401(
    gateway: LiveGateway, headers: dict[str, str]
) -> None:
    response = await gateway.post("/v1/track", msg("track", "m", event="x"), **headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (await response.json())["code"] == "unauthorized"
    assert await gateway.events() == []


async def test_the_write_key_may_come_in_the_body(gateway: LiveGateway) -> None:
    body = {"writeKey": WRITE_KEY, "batch": [msg("track", "m", event="x")]}
    assert (await gateway.post("/v1/batch", body, Authorization="")).status == 200
    assert len(await gateway.events()) == 1


async def test_bodies_over_the_limits_are_413_and_store_nothing(gateway: LiveGateway) -> None:
    limits = gateway.settings
    huge = b'{"batch":[' + b" " * limits.gateway_max_body_bytes + b"]}"
    assert (await gateway.post("/v1/batch", huge)).status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(5):
            yield b" " * 1024 * 1024

    response = await gateway.session.post(
        gateway.url + "/v1/batch", data=chunks(), headers=basic(WRITE_KEY)
    )
    assert response.status == 413
    one = msg("track", "m", event="x", properties={"blob": "x" * limits.gateway_max_message_bytes})
    assert (await gateway.post("/v1/track", one)).status == 413
    bomb = gzip.compress(b" " * (limits.gateway_max_body_bytes + 1))
    assert (await gateway.post("/v1/batch", bomb, **{"Content-Encoding": "gzip"})).status == 413
    assert await gateway.events() == []


async def test_gzip_bodies(gateway: LiveGateway) -> None:
    body = gzip.compress(orjson.dumps({"batch": [msg("track", "m", event="x")]}))
    assert (await gateway.post("/v1/batch", body, **{"Content-Encoding": "gzip"})).status == 200
    bad = await gateway.post("/v1/batch", b"\x1f\x8bnot", **{"Content-Encoding": "gzip"})
    assert bad.status == 400 and (await bad.json())["code"] == "bad_gzip"
    brotli = await gateway.post("/v1/batch", body, **{"Content-Encoding": "br"})
    assert brotli.status == 415
    assert [e["eventId"] for e in values(await gateway.events())] == ["m"]


async def test_a_body_that_is_not_json_is_a_400(gateway: LiveGateway) -> None:
    for body in (b"{not json", b"[]", b'{"batch": 3}'):
        assert (await gateway.post("/v1/batch", body)).status == 400
    assert await gateway.events() == []


async def test_a_partly_invalid_batch_is_accepted_and_the_bad_messages_dead_lettered(
    gateway: LiveGateway,
) -> None:
    good = msg("track", "good", event="x")
    nameless = msg("track", "nameless")
    stranger = {"type": "track", "event": "x", "userId": "u-9", "messageId": "no-install"}
    response = await gateway.post("/v1/batch", {"batch": [nameless, good, stranger, "junk"]})
    assert response.status == 200
    answer = await response.json()
    assert (answer["produced"], answer["deadLettered"]) == (1, 3)
    assert [e["eventId"] for e in values(await gateway.events())] == ["good"]
    letters = await gateway.dead_letters()
    validator = oracle.validator("output/dead-letter.schema.json")
    by_index = {}
    for key, value in letters:
        assert value is not None
        letter = orjson.loads(value)
        validator.validate(letter)
        assert letter["source"]["kind"] == "gateway"
        by_index[letter["source"]["index"]] = (key, letter)
    assert sorted(by_index) == [0, 2, 3]
    key, first = by_index[0]
    assert key == DEVICE.encode() and first["detail"].startswith("$.event")
    assert orjson.loads(base64.b64decode(first["originalBase64"])) == nameless
    assert by_index[2][0] is None and "anonymousId" in by_index[2][1]["detail"]


async def test_cors_preflight_and_answer_headers(gateway: LiveGateway) -> None:
    origin = {"Origin": "https://shop.example"}
    preflight = await gateway.session.options(
        gateway.url + "/v1/batch",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"]
    assert {"Authorization", "Content-Type", "Content-Encoding"} <= {
        h.strip() for h in allowed.split(",")
    }
    response = await gateway.post("/v1/track", msg("track", "m", event="x"), **origin)
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    refused = await gateway.post("/v1/track", b"{", Authorization="", **origin)
    assert refused.headers["Access-Control-Allow-Origin"] == "*"  # browsers can read errors


async def test_cors_with_a_list_of_origins(kafka_bootstrap: str, names: UniqueNames) -> None:
    settings = gateway_settings(
        kafka_bootstrap, names, gateway_cors_origins=("https://shop.example",)
    )
    async with in_process_gateway(settings) as gateway:
        body = msg("track", "m", event="x")
        mine = await gateway.post("/v1/track", body, Origin="https://shop.example")
        assert mine.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert mine.headers["Vary"] == "Origin"
        other = await gateway.post("/v1/track", body, Origin="https://evil.example")
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_metrics_count_answers_and_outcomes(gateway: LiveGateway) -> None:
    await gateway.post("/v1/batch", {"batch": [msg("track", "a", event="x"), msg("track", "b")]})
    await gateway.post("/v1/track", msg("track", "c", event="x"), Authorization="")
    await gateway.post("/v1/group", msg("group", "d", groupId="g"))
    response = await gateway.session.get(gateway.url + "/metrics")
    text = await response.text()
    for line in (
        'idstream_gateway_responses_total{status="200"} 2',
        'idstream_gateway_responses_total{status="401"} 1',
        "idstream_gateway_events_produced_total 1",
        "idstream_gateway_messages_ignored_total 1",
        'idstream_gateway_dead_letters_total{reason="schema_violation"} 1',
    ):
        assert line in text.splitlines(), text
