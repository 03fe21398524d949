"""Each worker's HTTP API: profile, install and identity lookups, and /metrics.

Driver layer. Served by Faust's web server. A lookup is answered by the worker that owns the
key's partition: installs by pushRegistrationId in `install-state`; profiles and identities
by pool in `pool-state` (every pool of the settings is tried in turn). A worker that does not
own the partition forwards the request to the one that does (Faust's router gives its URL).
Answers are masked unless the raw token asks for raw values; every request passes the checks
of web_guard (Host, token, identity rate limit) first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from faust import web
from yarl import URL

from idstream.domain.events import IdentityKind
from idstream.domain.identities import normalize_identity
from idstream.domain.install_state import open_install_tables
from idstream.domain.keys import key as install_key
from idstream.domain.pool import find_profile, identity_owner
from idstream.domain.pool_state import open_pool_tables
from idstream.drivers.faust import eventlog
from idstream.drivers.faust.metrics import CONTENT_TYPE, Metrics, consumer_lag
from idstream.drivers.faust.reader import PartitionReader
from idstream.drivers.faust.web_explorer import register_explorer
from idstream.drivers.faust.web_guard import (
    RAW_PARAM,
    VIEW,
    Access,
    Guard,
    Refused,
    RequestFacts,
    advertised_host,
    allowed_host_names,
    check_http_settings,
    host_middleware,
    request_facts,
)
from idstream.explorer.view import install_view, pool_names
from idstream.masking import mask_install_view, mask_snapshot
from idstream.settings import Settings

logger = logging.getLogger(__name__)

JSON = "application/json"
# Kept here for the callers that import them from the worker's API.
__all__ = ["Api", "install_api", "install_view", "pool_names", "web_options"]


def web_options(settings: Settings) -> dict[str, Any]:
    """faust.App options: our server on http_host:http_port, Faust's own pages off."""
    check_http_settings(settings)
    return {
        "web_enabled": True,
        "web_bind": settings.http_host,
        "web_port": settings.http_port,
        # The URL other workers forward to (Faust's canonical_url).
        "web_host": advertised_host(settings),
        # The Host check in front of every route (DNS rebinding).
        "web_application_options": {"middlewares": [host_middleware(allowed_host_names(settings))]},
        # Faust's table and router pages would show state without our checks.
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
    }


def _ident(url: URL) -> tuple[str, int]:
    return (url.host or ""), int(url.port or 80)


class Api:
    """The lookups and their routing; `register` mounts them on the app."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        metrics: Metrics,
        install_state: Any,
        pool_state: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.install_state = install_state
        self.pool_state = pool_state
        self.pools = pool_names(settings)
        self.guard = Guard(settings)
        t = settings.topics
        self.lag_topics = [t.events, t.claims, t.decisions]

    # --- routing -------------------------------------------------------------------------

    def owner(self, table: Any, key: bytes) -> tuple[URL | None, int] | None:
        """(None if this worker owns the key else its owner's URL, partition); None: unknown."""
        try:
            url = self.app.router.key_store(table.name, key)
            tp = self.app.producer.key_partition(table.changelog_topic.get_topic_name(), key)
        except KeyError:
            return None  # no assignment yet (starting, rebalancing)
        local = _ident(url) == _ident(URL(str(self.app.conf.canonical_url)))
        return (None if local else url), tp.partition

    async def forward(
        self, url: URL, path: str, facts: RequestFacts, access: Access, pool: str | None
    ) -> tuple[int, str, dict[str, str]]:
        """Ask the owner; its status, body and the headers worth passing on."""
        query = {"pool": pool} if pool is not None else {}
        if access.raw:
            query[RAW_PARAM] = "1"
        target = url.with_path(path).with_query(query)
        headers = self.guard.forward_headers(facts, "GET", target.raw_path_qs)
        async with self.app.http_client.get(target, headers=headers) as response:
            passed = {k: v for k in ("Retry-After",) if (v := response.headers.get(k))}
            return response.status, await response.text(), passed

    @staticmethod
    def reply(
        view: web.View,
        access: Access,
        body: Any,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        """A lookup's answer: `body` as JSON (a str is JSON already), never cached."""
        sent = {"Cache-Control": "no-store", VIEW: access.view, **(headers or {})}
        if isinstance(body, str):
            return view.text(body, content_type=JSON, status=status, headers=sent)
        return view.json(body, status=status, headers=sent)

    async def by_pool(
        self,
        view: web.View,
        facts: RequestFacts,
        access: Access,
        path: str,
        find: Callable[[Any, str], dict[str, Any] | None],
        mask: Callable[[dict[str, Any]], dict[str, Any]] = mask_snapshot,
    ) -> web.Response:
        """Answer from the first pool whose owner finds something (`find(tables, pool)`),
        masked with `mask` unless raw values were granted."""
        asked = facts.query.get("pool")
        pools = [asked] if asked else self.pools
        unavailable = False
        for pool in pools:
            where = self.owner(self.pool_state, pool.encode())
            if where is None:
                unavailable = True
                continue
            url, partition = where
            if url is None:
                found = find(open_pool_tables(PartitionReader(self.pool_state, partition)), pool)
                if found is not None:
                    return self.reply(view, access, found if access.raw else mask(found))
            elif access.forwarded:
                unavailable = True  # assignments disagree (a rebalance): do not bounce
            else:
                status, body, headers = await self.forward(url, path, facts, access, pool)
                if status in (200, 401, 403, 429):
                    # The owner's answer, or its refusal (tokens or limits that differ).
                    return self.reply(view, access, body, status, headers)
                unavailable = unavailable or status != 404
        if unavailable:
            return self.reply(
                view, access, {"error": "unavailable", "detail": "partitions moving"}, 503
            )
        return self.reply(view, access, {"error": "not_found"}, 404)

    # --- lookups in this worker's partitions ---------------------------------------------

    @staticmethod
    def snapshot(tables: Any, pool: str, profile_id: str) -> dict[str, Any] | None:
        # A merged-away id resolves to its survivor (the same person).
        return find_profile(tables, pool, profile_id)

    def owned_by(self, kind: IdentityKind, value: str) -> Callable[[Any, str], Any]:
        secret = self.settings.personal_key()

        def find(tables: Any, pool: str) -> dict[str, Any] | None:
            owner = identity_owner(tables, pool, kind, value, secret)
            return None if owner is None else self.snapshot(tables, pool, owner)

        return find

    def install(self, partition: int, prid: str) -> dict[str, Any] | None:
        tables = open_install_tables(PartitionReader(self.install_state, partition))
        rec = tables.installs.get(install_key(prid))
        return None if rec is None else install_view(rec)

    # --- the pages -----------------------------------------------------------------------

    def register(self) -> None:
        api = self
        app = self.app

        def refused(view: web.View, exc: Refused) -> web.Response:
            return view.json(exc.body(), status=exc.status, headers=exc.headers)

        @app.page("/profiles/{profile_id}", name="idstream-profile")
        class ProfilePage(web.View):
            async def get(self, request: web.Request, profile_id: str) -> web.Response:
                facts = request_facts(request)
                try:
                    access = api.guard.admit(facts)
                except Refused as exc:
                    return refused(self, exc)
                return await api.by_pool(
                    self,
                    facts,
                    access,
                    f"/profiles/{profile_id}",
                    lambda tables, pool: api.snapshot(tables, pool, profile_id),
                )

        @app.page("/identities/{kind}/{value}", name="idstream-identity")
        class IdentityPage(web.View):
            async def get(self, request: web.Request, kind: str, value: str) -> web.Response:
                facts = request_facts(request)
                try:
                    # Counted before anything else: every answer tells something.
                    access = api.guard.admit(facts, identity_lookup=True)
                except Refused as exc:
                    return refused(self, exc)
                try:
                    identity_kind = IdentityKind(kind)
                except ValueError:
                    kinds = ", ".join(k.value for k in IdentityKind)
                    return api.reply(self, access, {"error": "bad_kind", "detail": kinds}, 400)
                rules = api.settings.rules()
                normalized, reason = normalize_identity(identity_kind, value, rules.blocklist)
                if normalized is None:
                    detail = reason.value if reason is not None else "invalid"
                    body = {"error": "bad_identity", "detail": detail}
                    return api.reply(self, access, body, 400)
                return await api.by_pool(
                    self,
                    facts,
                    access,
                    f"/identities/{kind}/{normalized}",
                    api.owned_by(identity_kind, normalized),
                )

        @app.page("/installs/{prid}", name="idstream-install")
        class InstallPage(web.View):
            async def get(self, request: web.Request, prid: str) -> web.Response:
                facts = request_facts(request)
                try:
                    access = api.guard.admit(facts)
                except Refused as exc:
                    return refused(self, exc)
                where = api.owner(api.install_state, prid.encode())
                if where is None:
                    return api.reply(self, access, {"error": "unavailable"}, 503)
                url, partition = where
                if url is not None:
                    if access.forwarded:
                        return api.reply(self, access, {"error": "unavailable"}, 503)
                    path = f"/installs/{prid}"
                    status, body, headers = await api.forward(url, path, facts, access, None)
                    return api.reply(self, access, body, status, headers)
                found = api.install(partition, prid)
                if found is None:
                    return api.reply(self, access, {"error": "not_found"}, 404)
                return api.reply(self, access, found if access.raw else mask_install_view(found))

        @app.page("/metrics", name="idstream-metrics")
        class MetricsPage(web.View):
            async def get(self, request: web.Request) -> web.Response:
                try:
                    api.guard.authenticate(request.headers.get("Authorization"), None)
                except Refused as exc:
                    return refused(self, exc)
                api.metrics.set_lag(await consumer_lag(app, api.lag_topics))
                return self.text(api.metrics.render(), content_type=CONTENT_TYPE)

        register_explorer(api, refused)


def install_api(
    app: Any, settings: Settings, metrics: Metrics, install_state: Any, pool_state: Any
) -> Api:
    """Mount the lookups and /metrics on `app` (its web server is configured by web_options);
    the worker logs its settings when it starts."""
    api = Api(app, settings, metrics, install_state, pool_state)
    api.register()
    eventlog.log_start(app, settings)
    return api
