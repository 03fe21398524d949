"""The gateway's HTTP edge (aiohttp): routes, write keys, body limits, gzip, CORS, answers.

Entry-point layer. Every request body is attacker-controlled: sizes are checked before and
while reading and after unzipping, and nothing of a body or a write key is logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson
from aiohttp import web

from idstream.gateway.config import GatewayConfig
from idstream.gateway.intake import (
    SINGLE_ROUTES,
    Origin,
    Record,
    RequestError,
    gunzip,
    messages_of,
    parse,
    summary,
    take,
)
from idstream.gateway.kafka import DeliveryError

logger = logging.getLogger(__name__)

ROUTES = ("batch", *SINGLE_ROUTES)
# Segment's newer mobile libraries post batches to <apiHost>/b, apiHost being "<host>/v1".
_ALIASES = {"b": "batch"}
# Run the app with these (web.AppRunner(app, **RUNNER_OPTIONS)): the gateway unzips bodies
# itself, with its own cap, and counts the compressed bytes against the body limit.
RUNNER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "access_log": None}
_ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding"
_READ_CHUNK = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Sink(Protocol):
    async def deliver(self, events: Sequence[Record], dead_letters: Sequence[Record]) -> None:
        """Return once every record is stored; raise DeliveryError otherwise."""


class Stats:
    """Counters for /metrics (Prometheus text format)."""

    def __init__(self) -> None:
        self.responses: Counter[int] = Counter()
        self.produced = 0
        self.ignored = 0
        self.dead_letters: Counter[str] = Counter()

    def text(self) -> str:
        lines = [
            "# TYPE idstream_gateway_responses_total counter",
            *(
                f'idstream_gateway_responses_total{{status="{s}"}} {n}'
                for s, n in sorted(self.responses.items())
            ),
            "# TYPE idstream_gateway_events_produced_total counter",
            f"idstream_gateway_events_produced_total {self.produced}",
            "# TYPE idstream_gateway_messages_ignored_total counter",
            f"idstream_gateway_messages_ignored_total {self.ignored}",
            "# TYPE idstream_gateway_dead_letters_total counter",
            *(
                f'idstream_gateway_dead_letters_total{{reason="{r}"}} {n}'
                for r, n in sorted(self.dead_letters.items())
            ),
        ]
        return "\n".join(lines) + "\n"


def create_app(
    config: GatewayConfig, sink: Sink, clock: Callable[[], float] = time.time
) -> web.Application:
    """The aiohttp application; `clock` (seconds) stamps messages that carry no timestamp."""
    stats = Stats()
    app = web.Application(middlewares=[_cors(config.cors_origins), _count(stats)])

    async def track(request: web.Request) -> web.Response:
        route = request.match_info["route"]
        route = _ALIASES.get(route, route)
        if route not in ROUTES:
            raise web.HTTPNotFound()
        try:
            return await _handle(request, route, config, sink, stats, clock)
        except RequestError as exc:
            logger.info("refused %s request: %s %s", route, exc.status, exc.code)
            headers = {"WWW-Authenticate": 'Basic realm="idstream"'} if exc.status == 401 else {}
            return _json({"code": exc.code, "message": exc.message}, exc.status, headers)

    async def health(request: web.Request) -> web.Response:
        return _json({"status": "ok"}, 200)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=stats.text(), content_type="text/plain")

    app.router.add_post("/v1/{route}", track)
    app.router.add_route("OPTIONS", "/v1/{route}", _preflight)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def _handle(
    request: web.Request,
    route: str,
    config: GatewayConfig,
    sink: Sink,
    stats: Stats,
    clock: Callable[[], float],
) -> web.Response:
    limits = config.intake
    # A single message may not be bigger than a message; a batch, than a body.
    limit = limits.max_body_bytes if route == "batch" else limits.max_message_bytes
    app_code = _header_app_code(request, config)
    body = await _read(request, limit)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding == "gzip":
        body = gunzip(body, limit)
    elif encoding != "identity":
        raise RequestError(415, "unsupported_encoding", "Content-Encoding: gzip or none")
    doc = parse(body)
    if app_code is None:
        app_code = _body_app_code(doc, config)
    received_at = int(clock() * 1000)
    origin = Origin(route, app_code, received_at, uuid.uuid4().hex)
    messages = messages_of(route, doc, body, limits.max_batch_messages)
    intake = take(messages, app_code, config.intake, origin)
    if intake.events or intake.dead_letters:
        try:
            await sink.deliver(intake.events, intake.dead_letters)
        except DeliveryError as exc:
            logger.warning("request %s not stored, answered 503: %s", origin.request_id, exc)
            return _json({"code": "unavailable", "message": "Kafka unavailable; retry"}, 503)
    stats.produced += len(intake.events)
    stats.ignored += intake.ignored
    stats.dead_letters.update(intake.rejected)
    if intake.rejected:
        logger.info(
            "request %s: %d message(s) dead-lettered (%s)",
            origin.request_id,
            sum(intake.rejected.values()),
            ", ".join(f"{r} {n}" for r, n in sorted(intake.rejected.items())),
        )
    return _json(summary(intake), 200)


async def _read(request: web.Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(413, "body_too_large", f"body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "body_too_large", f"body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _header_app_code(request: web.Request, config: GatewayConfig) -> str | None:
    """The appCode of the Basic-auth write key (user name; password empty), None if no header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise RequestError(401, "unauthorized", "use HTTP Basic with the write key as user name")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RequestError(401, "unauthorized", "malformed Basic credentials") from exc
    return _known(config, decoded.partition(":")[0])


def _body_app_code(doc: dict[str, Any], config: GatewayConfig) -> str:
    """Segment also takes the write key as `writeKey` in the body (browsers, no header)."""
    key = doc.get("writeKey")
    if not isinstance(key, str):
        raise RequestError(401, "unauthorized", "missing write key")
    return _known(config, key)


def _known(config: GatewayConfig, write_key: str) -> str:
    app_code = config.app_code(write_key)
    if app_code is None:
        raise RequestError(401, "unauthorized", "unknown write key")
    return app_code


def _json(value: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(value),
        status=status,
        content_type="application/json",
        headers=headers,
    )


# ---------------------------------------------------------------- middlewares


async def _preflight(request: web.Request) -> web.Response:
    # The CORS middleware adds the allow headers; an unknown route is still a 404.
    if request.match_info["route"] not in (*ROUTES, *_ALIASES):
        raise web.HTTPNotFound()
    return web.Response(status=204)


def _cors(origins: tuple[str, ...]) -> Any:
    """CORS for browser SDKs: the allowed origins (or `*`), POST, and the headers SDKs send."""
    any_origin = "*" in origins

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        origin = request.headers.get("Origin")
        if origin is not None and request.path.startswith("/v1/"):
            if any_origin:
                response.headers["Access-Control-Allow-Origin"] = "*"
            elif origin in origins:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = _ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = "86400"
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return cors


def _count(stats: Stats) -> Any:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            stats.responses[exc.status] += 1
            raise
        stats.responses[response.status] += 1
        return response

    return count
