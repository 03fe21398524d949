"""The profile explorer on a worker's HTTP server: the page, its files and the history lookup.

Driver layer. The page and its files (idstream/explorer/assets, in the package) hold no data:
like every route but `/` and `/metrics` they pass the Host check, and they need no token (the
page asks the user for it). `/profiles/{profileId}/history` is a lookup like the others (the
checks of web_guard, routed to the pool's owner, masked unless raw values are granted); the
page draws the profile, its graph and its history from it. See docs/explorer.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faust import web

from idstream.drivers.faust.web_guard import Refused, request_facts
from idstream.explorer.assets import HEADERS, PAGE, asset
from idstream.explorer.view import explore, mask_view

if TYPE_CHECKING:
    from idstream.drivers.faust.web import Api


def file_response(view: web.View, name: str) -> web.Response:
    """One of the explorer's files with its security headers (404 for any other name)."""
    found = asset(name)
    if found is None:
        return view.json({"error": "not_found"}, status=404, headers=HEADERS)
    body, content_type = found
    return view.bytes(body, headers={**HEADERS, "Content-Type": content_type})


def register_explorer(api: Api, refused: Callable[[web.View, Refused], web.Response]) -> None:
    """Mount the explorer's routes on the worker's app."""
    app = api.app
    limits = api.settings.rules().history

    @app.page("/explorer", name="idstream-explorer")
    class ExplorerPage(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return file_response(self, PAGE)

    @app.page("/explorer/", name="idstream-explorer-slash")
    class ExplorerPageSlash(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return file_response(self, PAGE)

    @app.page("/explorer/{name}", name="idstream-explorer-file")
    class ExplorerFile(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            return file_response(self, name)

    @app.page("/profiles/{profile_id}/history", name="idstream-profile-history")
    class HistoryPage(web.View):
        async def get(self, request: web.Request, profile_id: str) -> web.Response:
            facts = request_facts(request)
            try:
                access = api.guard.admit(facts)
            except Refused as exc:
                return refused(self, exc)

            def find(tables: Any, pool: str) -> dict[str, Any] | None:
                return explore(tables, pool, profile_id, limits)

            path = f"/profiles/{profile_id}/history"
            return await api.by_pool(self, facts, access, path, find, mask_view)
