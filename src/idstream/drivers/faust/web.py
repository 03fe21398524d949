"""Each worker's HTTP API: profile, install and identity lookups, and /metrics.

Driver layer. Served by Faust's web server. A lookup is answered by the worker that owns the
key's partition: installs by pushRegistrationId in `install-state`; profiles and identities
by pool in `pool-state` (every pool of the settings is tried in turn). A worker that does not
own the partition forwards the request to the one that does (Faust's router gives its URL).
Bound to loopback by default; beyond loopback a bearer token is required.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from faust import web
from yarl import URL

from idstream.domain.config import DEFAULT_POOL
from idstream.domain.events import IdentityKind
from idstream.domain.identities import normalize_identity
from idstream.domain.install_state import InstallRecord, open_install_tables
from idstream.domain.keys import key as install_key
from idstream.domain.pool import find_profile, identity_owner
from idstream.domain.pool_state import open_pool_tables
from idstream.drivers.faust import eventlog
from idstream.drivers.faust.metrics import CONTENT_TYPE, Metrics, consumer_lag
from idstream.drivers.faust.reader import PartitionReader
from idstream.errors import ConfigurationError
from idstream.settings import Settings

logger = logging.getLogger(__name__)

JSON = "application/json"
# Set on a request one worker forwards to another: the receiver answers, never forwards again.
FORWARDED = "X-Idstream-Forwarded"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_http_settings(settings: Settings) -> None:
    """Refuse to serve profiles beyond loopback without a token."""
    if not is_loopback(settings.http_host) and not settings.http_token:
        raise ConfigurationError(
            f"IDSTREAM_HTTP_HOST={settings.http_host} serves profiles beyond this machine: set "
            "IDSTREAM_HTTP_TOKEN (clients send 'Authorization: Bearer <token>') or bind "
            "IDSTREAM_HTTP_HOST=127.0.0.1"
        )


def web_options(settings: Settings) -> dict[str, Any]:
    """faust.App options: our server on http_host:http_port, Faust's own pages off."""
    check_http_settings(settings)
    wildcard = settings.http_host in ("0.0.0.0", "::", "")
    return {
        "web_enabled": True,
        "web_bind": settings.http_host,
        "web_port": settings.http_port,
        # The URL other workers forward to (Faust's canonical_url).
        "web_host": socket.gethostname() if wildcard else settings.http_host,
        # Faust's table and router pages would show state without our checks.
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
    }


def pool_names(settings: Settings) -> list[str]:
    """Every pool a profile can live in: the configured ones and the default."""
    named = {*settings.pools.values(), *settings.continuity, *settings.conflict_mode}
    return [DEFAULT_POOL, *sorted(named - {DEFAULT_POOL})]


def install_view(rec: InstallRecord) -> dict[str, Any]:
    """What /installs/{pushRegistrationId} answers."""
    return {
        "pushRegistrationId": rec.push_registration_id,
        "appCode": rec.app_code,
        "pool": rec.pool,
        "profileId": rec.profile,
        # The pool has not answered an identity event of the install yet.
        "pending": rec.answered < rec.awaiting,
        "uninstalledAt": rec.uninstalled_at,
        "primaryDevice": None if rec.primary_device is None else rec.primary_device.value,
        "systemData": {k: s.value for k, s in sorted(rec.system_data.items())},
        "customAttributes": {
            k: s.value for k, s in sorted(rec.custom_attributes.items()) if s.value is not None
        },
        "lastLaunch": rec.last_launch,
        "droppedLaunches": rec.dropped_launches,
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
        t = settings.topics
        self.lag_topics = [t.events, t.claims, t.decisions]

    # --- checks and routing --------------------------------------------------------------

    def authorized(self, request: web.Request) -> bool:
        token = self.settings.http_token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), token.encode())

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
        self, url: URL, path: str, request: web.Request, pool: str | None
    ) -> tuple[int, str]:
        target = url.with_path(path)
        if pool is not None:
            target = target.with_query({"pool": pool})
        headers = {FORWARDED: "1"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with self.app.http_client.get(target, headers=headers) as response:
            return response.status, await response.text()

    async def by_pool(
        self,
        view: web.View,
        request: web.Request,
        path: str,
        find: Callable[[Any, str], dict[str, Any] | None],
    ) -> web.Response:
        """Answer from the first pool whose owner finds something (`find(tables, pool)`)."""
        asked = request.query.get("pool")
        pools = [asked] if asked else self.pools
        forwarded = FORWARDED in request.headers
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
                    return view.json(found)
            elif forwarded:
                unavailable = True  # assignments disagree (a rebalance): do not bounce
            else:
                status, body = await self.forward(url, path, request, pool)
                if status == 200:
                    return view.text(body, content_type=JSON)
                unavailable = unavailable or status != 404
        if unavailable:
            return view.json({"error": "unavailable", "detail": "partitions moving"}, status=503)
        return view.json({"error": "not_found"}, status=404)

    # --- lookups in this worker's partitions ---------------------------------------------

    @staticmethod
    def snapshot(tables: Any, pool: str, profile_id: str) -> dict[str, Any] | None:
        # A merged-away id resolves to its survivor (the same person).
        return find_profile(tables, pool, profile_id)

    @classmethod
    def owned_by(cls, kind: IdentityKind, value: str) -> Callable[[Any, str], Any]:
        def find(tables: Any, pool: str) -> dict[str, Any] | None:
            owner = identity_owner(tables, pool, kind, value)
            return None if owner is None else cls.snapshot(tables, pool, owner)

        return find

    def install(self, partition: int, prid: str) -> dict[str, Any] | None:
        tables = open_install_tables(PartitionReader(self.install_state, partition))
        rec = tables.installs.get(install_key(prid))
        return None if rec is None else install_view(rec)

    # --- the pages -----------------------------------------------------------------------

    def register(self) -> None:
        api = self
        app = self.app

        def denied(view: web.View) -> web.Response:
            return view.json(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <token>"},
                status=401,
            )

        @app.page("/profiles/{profile_id}", name="idstream-profile")
        class ProfilePage(web.View):
            async def get(self, request: web.Request, profile_id: str) -> web.Response:
                if not api.authorized(request):
                    return denied(self)
                return await api.by_pool(
                    self,
                    request,
                    f"/profiles/{profile_id}",
                    lambda tables, pool: api.snapshot(tables, pool, profile_id),
                )

        @app.page("/identities/{kind}/{value}", name="idstream-identity")
        class IdentityPage(web.View):
            async def get(self, request: web.Request, kind: str, value: str) -> web.Response:
                if not api.authorized(request):
                    return denied(self)
                try:
                    identity_kind = IdentityKind(kind)
                except ValueError:
                    kinds = ", ".join(k.value for k in IdentityKind)
                    return self.json({"error": "bad_kind", "detail": kinds}, status=400)
                rules = api.settings.rules()
                normalized, reason = normalize_identity(identity_kind, value, rules.blocklist)
                if normalized is None:
                    detail = reason.value if reason is not None else "invalid"
                    return self.json({"error": "bad_identity", "detail": detail}, status=400)
                return await api.by_pool(
                    self,
                    request,
                    f"/identities/{kind}/{normalized}",
                    api.owned_by(identity_kind, normalized),
                )

        @app.page("/installs/{prid}", name="idstream-install")
        class InstallPage(web.View):
            async def get(self, request: web.Request, prid: str) -> web.Response:
                if not api.authorized(request):
                    return denied(self)
                where = api.owner(api.install_state, prid.encode())
                if where is None:
                    return self.json({"error": "unavailable"}, status=503)
                url, partition = where
                if url is not None:
                    if FORWARDED in request.headers:
                        return self.json({"error": "unavailable"}, status=503)
                    status, body = await api.forward(url, f"/installs/{prid}", request, None)
                    return self.text(body, content_type=JSON, status=status)
                found = api.install(partition, prid)
                if found is None:
                    return self.json({"error": "not_found"}, status=404)
                return self.json(found)

        @app.page("/metrics", name="idstream-metrics")
        class MetricsPage(web.View):
            async def get(self, request: web.Request) -> web.Response:
                if not api.authorized(request):
                    return denied(self)
                api.metrics.set_lag(await consumer_lag(app, api.lag_topics))
                return self.text(api.metrics.render(), content_type=CONTENT_TYPE)


def install_api(
    app: Any, settings: Settings, metrics: Metrics, install_state: Any, pool_state: Any
) -> Api:
    """Mount the lookups and /metrics on `app` (its web server is configured by web_options);
    the worker logs its settings when it starts."""
    api = Api(app, settings, metrics, install_state, pool_state)
    api.register()
    eventlog.log_start(app, settings)
    return api
