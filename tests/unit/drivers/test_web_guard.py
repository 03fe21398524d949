"""The lookup API's request checks without a server: Host allowlist (DNS rebinding), tokens
and the raw scope, signed worker-to-worker forwarding, and the identity-lookup token bucket."""

from __future__ import annotations

import pytest

from idstream.drivers.faust.ratelimit import RateLimiter, TokenBucket
from idstream.drivers.faust.web_guard import (
    FORWARDED,
    Guard,
    Refused,
    RequestFacts,
    allowed_host_names,
    check_http_settings,
    host_allowed,
    host_middleware,
    host_name,
)
from idstream.errors import ConfigurationError
from idstream.settings import Settings

READ = "read-token"
RAW = "raw-token"
SECRET = "workers-only"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- Host -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:6066", "localhost"),
        ("LocalHost", "localhost"),
        ("127.0.0.1:6066", "127.0.0.1"),
        ("[::1]:6066", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("worker-1.internal:80", "worker-1.internal"),
        ("", None),
        (":6066", None),
        ("::1", None),  # an IPv6 address must be bracketed
        ("[::1", None),
        ("[::1]x", None),
        ("[nope]:1", None),
        ("localhost:http", None),
    ],
)
def test_host_names_are_parsed_without_the_port(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_loopback_names_are_allowed_by_default_and_foreign_names_are_not() -> None:
    names = allowed_host_names(Settings())
    for header in ("localhost:6066", "127.0.0.1:6066", "[::1]:6066", "127.0.0.1", "localhost"):
        assert host_allowed(header, names), header
    # A page of attacker.example rebound to 127.0.0.1 sends its own name.
    for header in ("attacker.example:6066", "localhost.attacker.example", "", None, "::1"):
        assert not host_allowed(header, names), header


def test_ip_literals_are_allowed_as_no_rebinding_can_send_them() -> None:
    names = allowed_host_names(Settings())
    assert host_allowed("10.0.0.5:6066", names) and host_allowed("[fd00::5]:6066", names)


def test_configured_names_and_the_advertised_name_are_allowed() -> None:
    names = allowed_host_names(
        Settings(http_host="0.0.0.0", http_token="t", http_allowed_hosts=("Idstream.Example",))
    )
    assert host_allowed("idstream.example:443", names)
    import socket

    # Other workers forward to the name this one is advertised by.
    assert host_allowed(f"{socket.gethostname()}:6066", names)
    assert not host_allowed("other.example", names)


def test_settings_of_the_lookup_api_are_checked() -> None:
    check_http_settings(Settings(http_raw_token=RAW, http_forward_secret=SECRET))
    bad = [
        (Settings(http_host="0.0.0.0"), "IDSTREAM_HTTP_TOKEN"),
        (Settings(http_token=READ, http_raw_token=READ), "RAW_TOKEN must differ"),
        (Settings(http_token=READ, http_forward_secret=READ), "FORWARD_SECRET"),
        (Settings(http_raw_token=RAW, http_forward_secret=RAW), "FORWARD_SECRET"),
        (Settings(http_lookup_burst=0), "burst"),
        (Settings(http_lookups_per_minute=-1), "per_minute"),
        (Settings(http_allowed_hosts=("https://x.example/",)), "not a host name"),
    ]
    for settings, message in bad:
        with pytest.raises(ConfigurationError, match=message):
            check_http_settings(settings)


# --- tokens and scope --------------------------------------------------------------------


def facts(token: str | None = None, raw: str | None = None) -> RequestFacts:
    query = {} if raw is None else {"raw": raw}
    auth = None if token is None else f"Bearer {token}"
    return RequestFacts(authorization=auth, query=query, remote="127.0.0.1")


def refusal(guard: Guard, request: RequestFacts, **kw: bool) -> tuple[int, str]:
    with pytest.raises(Refused) as caught:
        guard.admit(request, **kw)
    return caught.value.status, caught.value.error


def test_loopback_without_a_read_token_answers_masked_and_raw_needs_the_raw_token() -> None:
    guard = Guard(Settings(http_raw_token=RAW))
    access = guard.admit(facts())
    assert access.view == "masked" and access.principal.key == "address:127.0.0.1"
    assert refusal(guard, facts(raw="1")) == (403, "forbidden")
    assert refusal(guard, facts("guess", raw="1")) == (401, "unauthorized")
    assert guard.admit(facts(RAW, raw="1")).view == "raw"
    # The raw token alone does not unmask: raw values are asked for.
    assert guard.admit(facts(RAW)).view == "masked"
    assert refusal(guard, facts(RAW, raw="please")) == (400, "bad_raw")


def test_with_a_read_token_every_lookup_needs_a_token() -> None:
    guard = Guard(Settings(http_token=READ, http_raw_token=RAW))
    assert refusal(guard, facts()) == (401, "unauthorized")
    assert refusal(guard, facts("wrong")) == (401, "unauthorized")
    assert guard.admit(facts(READ)).principal.key == "token:read"
    assert refusal(guard, facts(READ, raw="true")) == (403, "forbidden")
    assert guard.admit(facts(RAW, raw="true")).raw


def test_without_a_raw_token_raw_values_are_never_granted() -> None:
    guard = Guard(Settings(http_token=READ))
    assert refusal(guard, facts(READ, raw="1")) == (403, "forbidden")
    assert refusal(guard, facts(None, raw="1")) == (401, "unauthorized")
    # No token at all on loopback: any bearer is ignored, answers masked.
    assert refusal(Guard(Settings()), facts("anything", raw="1")) == (403, "forbidden")


# --- rate limit ---------------------------------------------------------------------------


def test_a_bucket_allows_a_burst_then_its_rate() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    # Idle time refills up to the burst, no further; a clock going back refills nothing.
    assert [bucket.take(100.0) for _ in range(4)][-1] > 0
    assert bucket.take(50.0) > 0


def test_the_limiter_counts_each_key_apart_and_forgets_the_oldest() -> None:
    clock = Clock(0.0)
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_keys=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.take("b") == 0.0
    clock.now = 1.0
    assert limiter.take("a") == 0.0
    limiter.take("c")  # "b" was used least recently: dropped
    assert set(limiter._buckets) == {"a", "c"}
    assert RateLimiter(per_minute=0, burst=1).take("x") == 0.0


def test_identity_lookups_answer_429_with_retry_after_per_token_or_address() -> None:
    clock = Clock()
    settings = Settings(http_raw_token=RAW, http_lookups_per_minute=6, http_lookup_burst=2)
    guard = Guard(settings, limiter=RateLimiter(6, 2, clock=clock))
    for _ in range(2):
        guard.admit(facts(), identity_lookup=True)
    with pytest.raises(Refused) as caught:
        guard.admit(facts(), identity_lookup=True)
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "10"}
    # Other lookups are not limited; another principal has its own bucket.
    guard.admit(facts())
    guard.admit(facts(RAW), identity_lookup=True)
    other = RequestFacts(remote="127.0.0.2")
    guard.admit(other, identity_lookup=True)
    clock.now += 10
    guard.admit(facts(), identity_lookup=True)


# --- forwarding ---------------------------------------------------------------------------


def forwarded_by(sender: Guard, request: RequestFacts, target: str) -> RequestFacts:
    headers = sender.forward_headers(request, "GET", target)
    return RequestFacts(
        target=target,
        authorization=headers.get("Authorization"),
        forwarded=headers[FORWARDED],
        remote="127.0.0.1",
    )


def test_a_signed_forward_is_not_counted_again() -> None:
    clock = Clock()
    settings = Settings(http_token=READ, http_forward_secret=SECRET, http_lookup_burst=1)
    entry = Guard(settings, limiter=RateLimiter(1, 1, clock=clock), clock=clock)
    owner = Guard(settings, limiter=RateLimiter(1, 1, clock=clock), clock=clock)
    client = facts(READ)
    entry.admit(client, identity_lookup=True)
    target = "/identities/email/jo%40example.com?pool=default"
    sent = forwarded_by(entry, client, target)
    for _ in range(3):
        access = owner.admit(sent, identity_lookup=True)
        assert access.forwarded and access.trusted
    # The owner's own bucket is untouched: a direct request still passes.
    owner.admit(client, identity_lookup=True)


def test_a_forwarding_header_from_outside_is_counted_and_never_forwarded_on() -> None:
    clock = Clock()
    settings = Settings(http_token=READ, http_forward_secret=SECRET, http_lookup_burst=1)
    owner = Guard(settings, limiter=RateLimiter(1, 1, clock=clock), clock=clock)
    target = "/identities/email/jo%40example.com"
    good = forwarded_by(Guard(settings, clock=clock), facts(READ), target)
    assert good.forwarded is not None
    # A token holder signing with the token it holds.
    by_client = forwarded_by(
        Guard(Settings(http_forward_secret=READ), clock=clock), facts(READ), target
    )
    forged = [
        "1",
        f"v1 {int(clock.now)} {'0' * 64}",
        by_client.forwarded,
        "v2" + good.forwarded[2:],
    ]

    def asked(header: str | None) -> RequestFacts:
        return RequestFacts(target=target, authorization=f"Bearer {READ}", forwarded=header)

    first = owner.admit(asked(forged[0]), identity_lookup=True)
    assert first.forwarded and not first.trusted
    for header in forged[1:]:
        assert refusal(owner, asked(header), identity_lookup=True) == (429, "rate_limited")


def test_a_signature_binds_the_path_the_token_and_the_time() -> None:
    clock = Clock()
    settings = Settings(http_token=READ, http_raw_token=RAW, http_forward_secret=SECRET)
    target = "/identities/email/jo%40example.com"
    good = forwarded_by(Guard(settings, clock=clock), facts(READ), target)
    guard = Guard(settings, clock=clock)
    assert guard.verify_forward(good)
    assert not guard.verify_forward(
        RequestFacts(
            target=target + "x", authorization=good.authorization, forwarded=good.forwarded
        )
    )
    assert not guard.verify_forward(
        RequestFacts(target=target, authorization=f"Bearer {RAW}", forwarded=good.forwarded)
    )
    assert not Guard(settings, clock=Clock(clock.now + 121)).verify_forward(good)


def test_without_a_forward_secret_forwards_are_unsigned_and_counted() -> None:
    guard = Guard(Settings(http_token=READ))
    headers = guard.forward_headers(facts(READ), "GET", "/identities/phone/%2B4915")
    assert headers == {"Authorization": f"Bearer {READ}", FORWARDED: "1"}
    assert not guard.verify_forward(RequestFacts(target="/identities/phone/%2B4915", forwarded="1"))


async def test_the_host_middleware_refuses_foreign_names_with_421_but_not_on_open_paths() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[host_middleware(allowed_host_names(Settings()))])
    for path in ("/profiles/p_1", "/", "/metrics"):
        app.router.add_get(path, ok)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/profiles/p_1")).status == 200  # Host 127.0.0.1:port
        local = await client.get("/profiles/p_1", headers={"Host": "localhost:6066"})
        assert local.status == 200
        foreign = await client.get("/profiles/p_1", headers={"Host": "attacker.example:6066"})
        assert foreign.status == 421
        assert (await foreign.json())["error"] == "misdirected"
        for path in ("/", "/metrics"):
            assert (await client.get(path, headers={"Host": "attacker.example"})).status == 200
