"""The lookup API and the profile explorer over in-process state: what `idstream demo --keep`
serves when no broker could be had.

Driver layer. The same routes, checks and masking as a worker's (drivers/faust/web.py,
web_explorer.py): the Host allowlist, the tokens, the identity rate limit (web_guard), masked
answers unless the raw token asks for raw values. One process holds every partition, so
nothing is forwarded. Serve only while nothing writes the tables (the run is over).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from idstream.domain.config import RuleConfig
from idstream.domain.events import IdentityKind
from idstream.domain.identities import normalize_identity
from idstream.domain.install_state import InstallTables
from idstream.domain.keys import key
from idstream.domain.pool import PoolTables, find_profile, identity_owner
from idstream.drivers.faust.web_guard import (
    VIEW,
    Access,
    Guard,
    Refused,
    allowed_host_names,
    check_http_settings,
    host_middleware,
    request_facts,
)
from idstream.explorer.assets import HEADERS, PAGE, asset
from idstream.explorer.view import explore, install_view, mask_view, pool_names
from idstream.masking import mask_install_view, mask_snapshot
from idstream.settings import Settings

Find = Callable[[str], dict[str, Any] | None]


def _json(access: Access | None, body: Any, status: int = 200, **headers: str) -> web.Response:
    sent = {"Cache-Control": "no-store", **headers}
    if access is not None:
        sent[VIEW] = access.view
    return web.json_response(body, status=status, headers=sent)


def _file(name: str) -> web.Response:
    found = asset(name)
    if found is None:
        return web.json_response({"error": "not_found"}, status=404, headers=HEADERS)
    body, content_type = found
    return web.Response(body=body, headers={**HEADERS, "Content-Type": content_type})


def make_app(
    settings: Settings, pool: PoolTables, install: InstallTables, rules: RuleConfig
) -> web.Application:
    """An aiohttp app that answers lookups and serves the explorer from these tables, which
    the in-process driver filled with `rules` (its blocklist, history bounds, personal key);
    `settings` give the HTTP checks."""
    check_http_settings(settings)
    guard = Guard(settings)
    pools = pool_names(settings)

    def admitted(request: web.Request, *, identity_lookup: bool = False) -> Access:
        return guard.admit(request_facts(request), identity_lookup=identity_lookup)

    def first_found(
        access: Access, find: Find, mask: Callable[[Mapping[str, Any]], dict[str, Any]]
    ) -> web.Response:
        for name in pools:
            found = find(name)
            if found is not None:
                return _json(access, found if access.raw else mask(found))
        return _json(access, {"error": "not_found"}, 404)

    async def profile(request: web.Request) -> web.Response:
        access = admitted(request)
        pid = request.match_info["profile_id"]
        return first_found(access, lambda p: find_profile(pool, p, pid), mask_snapshot)

    async def history(request: web.Request) -> web.Response:
        access = admitted(request)
        pid = request.match_info["profile_id"]
        return first_found(access, lambda p: explore(pool, p, pid, rules.history), mask_view)

    async def identity(request: web.Request) -> web.Response:
        access = admitted(request, identity_lookup=True)
        try:
            kind = IdentityKind(request.match_info["kind"])
        except ValueError:
            detail = ", ".join(k.value for k in IdentityKind)
            return _json(access, {"error": "bad_kind", "detail": detail}, 400)
        value, reason = normalize_identity(kind, request.match_info["value"], rules.blocklist)
        if value is None:
            detail = reason.value if reason is not None else "invalid"
            return _json(access, {"error": "bad_identity", "detail": detail}, 400)

        def owned(name: str) -> dict[str, Any] | None:
            owner = identity_owner(pool, name, kind, value, rules.personal_key)
            return None if owner is None else find_profile(pool, name, owner)

        return first_found(access, owned, mask_snapshot)

    async def installs(request: web.Request) -> web.Response:
        access = admitted(request)
        rec = install.installs.get(key(request.match_info["prid"]))
        if rec is None:
            return _json(access, {"error": "not_found"}, 404)
        found = install_view(rec)
        return _json(access, found if access.raw else mask_install_view(found))

    @web.middleware
    async def refusals(
        request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except Refused as exc:
            return _json(None, exc.body(), exc.status, **exc.headers)
        return response

    async def page(request: web.Request) -> web.Response:
        return _file(PAGE)

    async def explorer_file(request: web.Request) -> web.Response:
        return _file(request.match_info["name"])

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "OK"})

    app = web.Application(middlewares=[host_middleware(allowed_host_names(settings)), refusals])
    app.router.add_get("/", health)
    app.router.add_get("/explorer", page)
    app.router.add_get("/explorer/", page)
    app.router.add_get("/explorer/{name}", explorer_file)
    app.router.add_get("/profiles/{profile_id}", profile)
    app.router.add_get("/profiles/{profile_id}/history", history)
    app.router.add_get("/identities/{kind}/{value}", identity)
    app.router.add_get("/installs/{prid}", installs)
    return app


async def start(
    settings: Settings, pool: PoolTables, install: InstallTables, rules: RuleConfig
) -> tuple[web.AppRunner, int]:
    """Serve on settings.http_host:http_port (port 0: any free one); the runner and the port."""
    runner = web.AppRunner(make_app(settings, pool, install, rules), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    return runner, int(runner.addresses[0][1])
