"""The checks a request to a worker's HTTP API passes before it is answered.

Driver layer. In order: the Host header names this worker (DNS rebinding: a web page in the
user's browser must not read the API through a name it controls), the bearer token and the
scope it grants (masked values, or raw ones with the raw token), and, for identity lookups, a
rate limit per token (per client address without one). Requests one worker forwards to another
are signed with a secret the workers share, so the owner does not count them again and no
outside client can claim to be a worker. The checks read a few header values (`RequestFacts`),
so any page the worker serves can use them and tests need no server.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from aiohttp import web as aioweb
from aiohttp.typedefs import Handler, Middleware

from idstream.drivers.faust.ratelimit import RateLimiter
from idstream.errors import ConfigurationError
from idstream.settings import Settings

logger = logging.getLogger(__name__)

# Set on a request one worker forwards to another: the receiver answers, never forwards again.
# "v1 <unix seconds> <hex HMAC>" with http_forward_secret; "1" (not trusted) without it.
FORWARDED = "X-Idstream-Forwarded"
# On every lookup answer: "masked" or "raw".
VIEW = "X-Idstream-View"
# Query parameter that asks for raw values (raw=1); only the raw token grants them.
RAW_PARAM = "raw"
# Paths without personal data that stay reachable by any Host: Faust's health page and the
# Prometheus text (scrapers and probes name workers in ways no allowlist foresees).
HOST_CHECK_EXEMPT = frozenset({"/", "/metrics"})
# A signed forward older (or newer) than this, by the receiver's clock, is not trusted.
FORWARD_MAX_AGE_S = 120
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


class Refused(Exception):
    """A request the API does not answer: HTTP status, error code, detail, extra headers."""

    def __init__(
        self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


# --- settings ---------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def advertised_host(settings: Settings) -> str:
    """The name other workers use to reach this one (Faust's canonical URL)."""
    return socket.gethostname() if settings.http_host in _WILDCARDS else settings.http_host


def check_http_settings(settings: Settings) -> None:
    """Refuse settings that would expose profiles: beyond loopback without a token, a raw token
    equal to the read token, a forward secret that clients hold, a rate limit that is none."""
    if not is_loopback(settings.http_host) and not settings.http_token:
        raise ConfigurationError(
            f"IDSTREAM_HTTP_HOST={settings.http_host} serves profiles beyond this machine: set "
            "IDSTREAM_HTTP_TOKEN (clients send 'Authorization: Bearer <token>') or bind "
            "IDSTREAM_HTTP_HOST=127.0.0.1"
        )
    if settings.http_raw_token and settings.http_raw_token == settings.http_token:
        raise ConfigurationError(
            "IDSTREAM_HTTP_RAW_TOKEN must differ from IDSTREAM_HTTP_TOKEN: it grants raw values"
        )
    secret = settings.http_forward_secret
    if secret and secret in (settings.http_token, settings.http_raw_token):
        raise ConfigurationError(
            "IDSTREAM_HTTP_FORWARD_SECRET must differ from the tokens: clients hold those"
        )
    if settings.http_lookups_per_minute < 0 or settings.http_lookup_burst < 1:
        raise ConfigurationError(
            "http_lookups_per_minute must be >= 0 (0: no limit) and http_lookup_burst >= 1"
        )
    for name in settings.http_allowed_hosts:
        if "/" in name or host_name(name) is None:
            raise ConfigurationError(f"http_allowed_hosts: {name!r} is not a host name")


# --- Host -------------------------------------------------------------------------------


def host_name(header: str) -> str | None:
    """The name in a Host header value, lower-case, without port or brackets; None: malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        name, closed, rest = value[1:].partition("]")
        if not closed or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        try:
            return str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    name, colon, port = value.partition(":")
    if not name or (colon and not port.isdigit()):
        return None
    return name


def allowed_host_names(settings: Settings) -> frozenset[str]:
    """Names a request's Host may carry: localhost, the name this worker is advertised by
    (forwarded requests use it), and `http_allowed_hosts`."""
    names = {"localhost", advertised_host(settings).lower()}
    names.update(n for n in map(host_name, settings.http_allowed_hosts) if n)
    return frozenset(names)


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a Host header value is an allowed name, with any port. IP literals are allowed:
    DNS rebinding needs a name, and a browser sends an address only to the page's own server."""
    name = None if header is None else host_name(header)
    if name is None:
        return False
    if name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_middleware(names: frozenset[str]) -> Middleware:
    """An aiohttp middleware that answers 421 to a request whose Host is not allowed."""

    refusals = 0

    @aioweb.middleware
    async def check_host(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        nonlocal refusals
        # The raw header: aiohttp's request.host falls back to this machine's name.
        host = request.headers.get("Host")
        if request.path in HOST_CHECK_EXEMPT or host_allowed(host, names):
            return await handler(request)
        refusals += 1
        # The 1st, 10th, 100th…: a page in a loop must not flood the log.
        if math.log10(refusals).is_integer():
            logger.warning(
                "refused a request (%d so far): its Host is not an allowed name (%.100r)",
                refusals,
                host,
            )
        refused = Refused(
            421,
            "misdirected",
            "the Host header is not a name of this worker; add it to IDSTREAM_HTTP_ALLOWED_HOSTS",
        )
        return aioweb.json_response(refused.body(), status=refused.status)

    return check_host


# --- tokens, scope, rate limit, forwarding -----------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the checks read from a request."""

    method: str = "GET"
    target: str = "/"  # path and query as sent (percent-encoded)
    authorization: str | None = None
    forwarded: str | None = None
    remote: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)


def request_facts(request: Any) -> RequestFacts:
    """The facts of the aiohttp request Faust hands a page."""
    headers = request.headers
    return RequestFacts(
        method=request.method,
        target=request.raw_path,
        authorization=headers.get("Authorization"),
        forwarded=headers.get(FORWARDED),
        remote=request.remote,
        query=request.query,
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: `key` is what the rate limit counts by; `raw` whether it may see raw values."""

    key: str
    raw: bool = False


@dataclass(frozen=True, slots=True)
class Access:
    """What a request may do: `raw` values (asked and granted); `forwarded` by a worker (answer
    here, never forward again); `trusted` (signed: the forwarding worker counted it)."""

    principal: Principal
    raw: bool = False
    forwarded: bool = False
    trusted: bool = False

    @property
    def view(self) -> str:
        return "raw" if self.raw else "masked"


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    scheme, _, value = (authorization or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _matches(given: str, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest(given.encode(), str(secret).encode())


class Guard:
    """The checks of one worker, from its settings; `clock` (seconds) signs and verifies
    forwards, the limiter has its own monotonic clock."""

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.limiter = limiter or RateLimiter(
            settings.http_lookups_per_minute, settings.http_lookup_burst
        )
        self.clock = clock
        secret = settings.http_forward_secret
        self._forward_key = secret.encode() if secret else None

    def authenticate(self, authorization: str | None, remote: str | None) -> Principal:
        """The raw token, the read token, or (when no read token is set) the client address."""
        s = self.settings
        given = bearer(authorization)
        if given is not None:
            if _matches(given, s.http_raw_token):
                return Principal("token:raw", raw=True)
            if _matches(given, s.http_token):
                return Principal("token:read")
            if s.http_token or s.http_raw_token:
                raise Refused(401, "unauthorized", "the token is not valid")
        if s.http_token:
            raise Refused(401, "unauthorized", "send Authorization: Bearer <token>")
        return Principal(f"address:{remote or '-'}")

    def admit(self, facts: RequestFacts, *, identity_lookup: bool = False) -> Access:
        """Check a lookup: token (401), raw scope (400, 403), identity rate limit (429)."""
        principal = self.authenticate(facts.authorization, facts.remote)
        asked = facts.query.get(RAW_PARAM, "").strip().lower()
        if asked not in _TRUE | _FALSE:
            raise Refused(400, "bad_raw", "raw=1 asks for raw values, raw=0 (default) masked")
        raw = asked in _TRUE
        if raw and not principal.raw:
            raise Refused(
                403, "forbidden", "raw values need the raw token (IDSTREAM_HTTP_RAW_TOKEN)"
            )
        forwarded = facts.forwarded is not None
        trusted = forwarded and self.verify_forward(facts)
        if identity_lookup and not trusted:
            wait = self.limiter.take(principal.key)
            if wait > 0:
                s = self.settings
                raise Refused(
                    429,
                    "rate_limited",
                    f"identity lookups: {s.http_lookups_per_minute} a minute, "
                    f"bursts of {s.http_lookup_burst}",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return Access(principal, raw=raw, forwarded=forwarded, trusted=trusted)

    # --- forwarding ----------------------------------------------------------------------

    def _signature(self, key: bytes, stamp: int, method: str, target: str, auth: str) -> str:
        message = "\n".join(("idstream-forward-v1", str(stamp), method, target, auth))
        return hmac.new(key, message.encode(), sha256).hexdigest()

    def forward_headers(self, facts: RequestFacts, method: str, target: str) -> dict[str, str]:
        """Headers of a forwarded request for `target` (path and query as sent): the client's
        Authorization, and the forwarding header, signed when a forward secret is set."""
        headers: dict[str, str] = {}
        if facts.authorization is not None:
            headers["Authorization"] = facts.authorization
        if self._forward_key is None:
            headers[FORWARDED] = "1"
        else:
            stamp = int(self.clock())
            auth = facts.authorization or ""
            signature = self._signature(self._forward_key, stamp, method, target, auth)
            headers[FORWARDED] = f"v1 {stamp} {signature}"
        return headers

    def verify_forward(self, facts: RequestFacts) -> bool:
        """Whether the forwarding header was signed by a worker of this deployment, recently."""
        if self._forward_key is None or facts.forwarded is None:
            return False
        version, _, rest = facts.forwarded.partition(" ")
        stamp_text, _, signature = rest.partition(" ")
        if version != "v1" or not stamp_text.isdigit():
            return False
        stamp = int(stamp_text)
        if abs(self.clock() - stamp) > FORWARD_MAX_AGE_S:
            return False
        auth = facts.authorization or ""
        expected = self._signature(self._forward_key, stamp, facts.method, facts.target, auth)
        return hmac.compare_digest(signature.encode(), expected.encode())
