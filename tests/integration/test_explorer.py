"""The profile explorer in a real browser (headless Chromium over the DevTools protocol) against
a real worker on a real broker, fed a scripted history: a merge, rejections (a conflict, a
blocked value, a limit) and a forget, with values made to break out of HTML and script. The
page shows why the persons merged and why identities were not attached, masks unless the raw
token asks, redirects a merged-away id, says "forgotten" for a forgotten one, runs none of
the injected markup, and the browser reports no error."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_operate import start_worker
from tests.support.browser import BrowserMissingError, Page, chromium, find_chromium
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READ = "explorer-read-token"
RAW = "explorer-raw-token"
# Values that would run script if any of them reached the page as markup.
IMG = "<img src=x onerror=window.__xss=1>"
SCRIPT = '"><script>window.__xss=2</script>'
TAG_IMG = "<img src=x onerror=window.__xss=3>"
ATTR_NAME = "<img src=x onerror=window.__xss=4>"
PRID_A = 'fcm:"><img src=x onerror=window.__xss=5>'
EVENT_ID = 'upd"><img src=x onerror=window.__xss=6>'
PHONE = "+385912345678"


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    """The system Chromium; without one the test fails (before a broker is started), saying how
    to install it."""
    try:
        return find_chromium()
    except BrowserMissingError as exc:
        pytest.fail(str(exc), pytrace=False)


class Script:
    """SDK events of a few installs, stamped in order (within the last hour)."""

    def __init__(self) -> None:
        self.now = int(time.time() * 1000) - 3_600_000
        self.n = 0

    def event(self, kind: str, prid: str, event_id: str | None = None, **fields: Any) -> bytes:
        self.n += 1
        self.now += 1_000
        value = {
            "eventId": event_id or f"e{self.n}",
            "type": kind,
            "timestamp": self.now,
            "appCode": "shop",
            "pushRegistrationId": prid,
            **fields,
        }
        return orjson.dumps(value)


def records(*pairs: tuple[str, bytes]) -> list[tuple[bytes, bytes]]:
    return [(prid.encode(), value) for prid, value in pairs]


def get(port: int, path: str, token: str) -> tuple[int, Any, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
        kind = response.headers.get("Content-Type", "")
        return response.status, json.loads(body) if "json" in kind else body, response.headers


def owner(port: int, kind: str, value: str) -> str:
    status, body, _ = get(port, f"/identities/{kind}/{urllib.parse.quote(value, safe='')}", READ)
    assert status == 200, body
    return str(body["profileId"])


@pytest.fixture
async def scripted(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """A worker fed the scripted history; its port and the profile ids."""
    topo = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=2, http_token=READ)
    env = {"IDSTREAM_HTTP_TOKEN": READ, "IDSTREAM_HTTP_RAW_TOKEN": RAW}

    async def run() -> tuple[int, dict[str, str]]:
        await topo.create_input()
        _, port = await start_worker(topo, 0, **env)
        s = Script()
        system = {"platform": "Android", "deviceModel": IMG}
        # Persons A (email, externalUserId), B (phone), D and E; nothing shared yet.
        await topo.send(
            records(
                *(
                    (p, s.event("install", p, systemData=system))
                    for p in (PRID_A, "B", "C", "D", "E")
                ),
                (
                    PRID_A,
                    s.event(
                        "personalize",
                        PRID_A,
                        userIdentity={"externalUserId": SCRIPT, "emails": ["ana@example.com"]},
                        userAttributes={"firstName": IMG, "customAttributes": {ATTR_NAME: SCRIPT}},
                    ),
                ),
                ("B", s.event("personalize", "B", userIdentity={"phones": [PHONE]})),
                ("D", s.event("personalize", "D", userIdentity={"emails": ["dora@example.com"]})),
                ("E", s.event("personalize", "E", userIdentity={"emails": ["eve@example.com"]})),
            )
        )
        await topo.wait_done()
        ids = {
            "A": owner(port, "email", "ana@example.com"),
            "B": owner(port, "phone", PHONE),
            "D": owner(port, "email", "dora@example.com"),
            "E": owner(port, "email", "eve@example.com"),
        }
        # C logs in with A's email and B's phone: B merges into A (the older person).
        login = {"emails": ["ana@example.com"], "phones": [PHONE]}
        await topo.send(records(("C", s.event("personalize", "C", userIdentity=login))))
        await topo.wait_done()
        # A's tags carry markup; a second externalUserId (the limit), a blocked email and D's
        # email (a conflict) are not attached; E's person is forgotten.
        update = s.event(
            "personUpdate",
            PRID_A,
            EVENT_ID,
            attributes={"city": "Split"},
            tagsAdded=[TAG_IMG, SCRIPT],
            identitiesAdded={"externalUserId": "second", "emails": ["null", "dora@example.com"]},
        )
        await topo.send(records((PRID_A, update), ("E", s.event("forget", "E"))))
        await topo.wait_done()
        return port, ids

    yield await run()
    topo.stop_all()


async def open_explorer(page: Page, port: int, target: str, token: str) -> None:
    """Open the page on `target`; it asks for the token once."""
    await page.goto(f"http://127.0.0.1:{port}/explorer#{urllib.parse.quote(target, safe='')}")
    await page.wait_for("!document.getElementById('token-panel').hidden", message="token prompt")
    await enter_token(page, token)


async def enter_token(page: Page, token: str) -> None:
    await page.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('token-form').requestSubmit(); true"
    )
    await page.wait_for("document.getElementById('token-panel').hidden", message="token taken")


async def showing(page: Page, profile_id: str) -> str:
    """Wait until the page shows `profile_id` with its timeline; its text."""
    await page.wait_for(
        "!document.getElementById('result').hidden && "
        f"document.querySelector('#summary .pid')?.textContent === {json.dumps(profile_id)} && "
        "document.querySelectorAll('#timeline li').length > 0",
        message=f"the page to show {profile_id}",
    )
    return await page.text()


async def nothing_ran(page: Page) -> None:
    """No injected markup became an element, and none of it ran."""
    assert await page.evaluate("window.__xss === undefined")
    assert await page.evaluate("document.querySelectorAll('img, iframe, object').length") == 0
    assert await page.evaluate("document.scripts.length") == 1


async def search(page: Page, text: str) -> None:
    await page.evaluate(
        f"document.getElementById('search-text').value = {json.dumps(text)};"
        "document.getElementById('search').requestSubmit(); true"
    )


async def test_the_explorer_explains_a_merged_person_masks_and_runs_no_injected_markup(
    chromium_binary: str, scripted: tuple[int, dict[str, str]]
) -> None:
    port, ids = scripted
    # The page and its files: a strict policy, shipped in the package, no data without a token.
    status, html, headers = get(port, "/explorer", "")
    csp = headers["Content-Security-Policy"]
    assert status == 200 and b"explorer.js" in html
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"

    async with chromium(chromium_binary) as browser:
        page = await browser.new_page()
        # A merged-away id redirects to its survivor; the token is asked for once.
        await open_explorer(page, port, ids["B"], READ)
        text = await showing(page, ids["A"])
        assert await page.evaluate("location.hash") == "#" + ids["A"]
        assert f"{ids['B']} was merged into {ids['A']}" in text
        # Why merged: the identity that matched, masked.
        assert (
            f"why: install C personalized with phone +38********78, which {ids['B']} owned" in text
        )
        # Why not attached, and which limit.
        assert "externalUserId s***d not attached (limit_exceeded)" in text
        assert "the externalUserIds limit" in text
        assert "email d***@e***.com not attached (identity_conflict)" in text
        assert "not attached (blocked_identity)" in text
        # The graph: identities, installs, the merged person with its reason.
        graph = await page.evaluate("document.querySelector('#graph svg').textContent")
        assert ids["B"] in graph and "shared phone +38********78" in graph
        assert "a***@e***.com" in graph and "install · shop · personalized" in graph
        # Masked: identities as in logs, attribute values hidden; markup shown as text.
        assert "ana@example.com" not in text and PHONE not in text and "Split" not in text
        for value in (TAG_IMG, SCRIPT, ATTR_NAME, PRID_A, EVENT_ID):
            assert value in text, value
        await nothing_ran(page)

        # Raw values with the raw token: the markup in values is text too.
        await page.evaluate("document.getElementById('token-change').click(); true")
        await enter_token(page, RAW)
        await page.evaluate("document.getElementById('raw').click(); true")
        await page.wait_for(
            "document.getElementById('profile').textContent.includes('ana@example.com')",
            message="raw values",
        )
        text = await showing(page, ids["A"])
        assert IMG in text and SCRIPT in text and PHONE in text and "Split" in text
        await nothing_ran(page)
        await page.evaluate("document.getElementById('raw').click(); true")
        await page.wait_for("!document.getElementById('profile').textContent.includes('Split')")

        # Search by identity (never put in the address bar) and by pushRegistrationId.
        await search(page, "email:dora@example.com")
        await showing(page, ids["D"])
        assert await page.evaluate("location.hash") == "#" + ids["D"]
        await search(page, "install:C")
        text = await showing(page, ids["A"])
        assert "Install C is linked to this profile." in text

        # A forgotten id says so, and nothing else.
        await page.goto(f"http://127.0.0.1:{port}/explorer#{ids['E']}")
        await page.wait_for(
            "document.getElementById('summary').textContent.includes('was forgotten')",
            message="forgotten",
        )
        for section in ("graph", "why", "profile", "timeline"):
            count = f"document.getElementById('{section}').childElementCount"
            assert await page.evaluate(count) == 0, section
        assert await page.evaluate("document.getElementById('token-panel').hidden")
        await nothing_ran(page)
        assert page.errors == [], page.errors
