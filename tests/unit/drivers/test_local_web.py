"""The lookup API and the profile explorer over in-process state (the demo's fallback, `idstream
demo --in-process --keep`): the same answers, checks and masking as a worker's, and the
explorer's view of a merged, a rejected and a forgotten person."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.support.waiting import wait_until
from tests.unit.scenarios.sdk import outputs, personalize, profiles, record

from idstream.domain.messages import OutputTopic
from idstream.drivers.local import web as local_web
from idstream.drivers.local.driver import LocalDriver
from idstream.explorer.assets import CONTENT_SECURITY_POLICY
from idstream.settings import Settings

READ = "read-token"
RAW = "raw-token"


def scripted() -> LocalDriver:
    """A (email) and B (phone) merge through C's login; A's update is partly rejected; E is
    forgotten."""
    phone = "+385912345678"
    driver = LocalDriver()
    driver.replay(
        [
            personalize("a1", 1, "A", emails=["ana@example.com"], externalUserId="u1"),
            personalize("b1", 2, "B", phones=[phone]),
            personalize("d1", 3, "D", emails=["dora@example.com"]),
            personalize("e1", 4, "E", emails=["eve@example.com"]),
            personalize("c1", 5, "C", emails=["ana@example.com"], phones=[phone]),
            record(
                "personUpdate",
                "a2",
                6,
                "A",
                attributes={"city": "Split"},
                tagsAdded=["<img src=x onerror=alert(1)>"],
                identitiesAdded={"externalUserId": "u2", "emails": ["dora@example.com"]},
            ),
            record("forget", "e2", 7, "E"),
        ]
    )
    return driver


def ids(driver: LocalDriver) -> dict[str, str]:
    found = {}
    for pid, snapshot in profiles(driver).items():
        for email in snapshot["identities"]["emails"]:
            found[email] = pid
    return found


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], LocalDriver]]:
    driver = scripted()
    settings = Settings(http_token=READ, http_raw_token=RAW)
    app = local_web.make_app(settings, driver.pool_tables, driver.install_tables, driver.rules)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, driver
    driver.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_page_is_served_with_its_policy_and_without_a_token(
    client: tuple[TestClient[Any, Any], LocalDriver],
) -> None:
    http, _ = client
    for path in ("/explorer", "/explorer/", "/explorer/explorer.js", "/explorer/favicon.svg"):
        response = await http.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await http.get("/explorer/../pyproject.toml")).status == 404
    assert (await http.get("/explorer/anything.js")).status == 404
    refused = await http.get("/explorer", headers={"Host": "attacker.example"})
    assert refused.status == 421


async def test_history_explains_the_merge_masks_and_redirects(
    client: tuple[TestClient[Any, Any], LocalDriver],
) -> None:
    http, driver = client
    persons = ids(driver)
    survivor = persons["ana@example.com"]
    assert (await http.get(f"/profiles/{survivor}/history")).status == 401
    response = await http.get(f"/profiles/{survivor}/history", headers=auth(READ))
    view = await response.json()
    assert response.headers["X-Idstream-View"] == "masked"
    assert (view["state"], view["profileId"]) == ("live", survivor)
    text = json.dumps(view)
    assert "ana@example.com" not in text and "Split" not in text
    assert view["profile"]["identities"]["emails"] == ["a***@e***.com"]
    (person_merge,) = [m for m in view["merges"] if m["loser"].startswith("p_")]
    assert person_merge["reason"] == "shared_identity"
    assert (person_merge["identityKind"], person_merge["maskedValue"]) == ("phone", "+38********78")
    assert person_merge["pushRegistrationId"] == "C"
    rejected = {
        (e["identityKind"], e["reason"], e.get("limit"))
        for e in view["timeline"]
        if e["kind"] == "identity_rejected"
    }
    assert rejected == {
        ("externalUserId", "limit_exceeded", "externalUserIds"),
        ("email", "identity_conflict", None),
    }
    # Newest first.
    times = [e["eventTime"] for e in view["timeline"]]
    assert times == sorted(times, reverse=True)
    # The merged-away id answers with its survivor.
    loser = person_merge["loser"]
    moved = await (await http.get(f"/profiles/{loser}/history", headers=auth(READ))).json()
    assert (moved["state"], moved["requested"], moved["profileId"]) == ("merged", loser, survivor)
    # Raw values only for the raw token.
    assert (await http.get(f"/profiles/{survivor}/history?raw=1", headers=auth(READ))).status == 403
    raw = await (await http.get(f"/profiles/{survivor}/history?raw=1", headers=auth(RAW))).json()
    assert "ana@example.com" in raw["profile"]["identities"]["emails"]


async def test_a_forgotten_id_says_forgotten_and_nothing_else(
    client: tuple[TestClient[Any, Any], LocalDriver],
) -> None:
    http, driver = client
    forgotten = [
        o.key
        for o in outputs(driver, OutputTopic.PROFILE_CHANGES)
        if o.value is not None and o.value["kind"] == "forgotten"
    ]
    assert len(forgotten) == 1
    response = await http.get(f"/profiles/{forgotten[0]}/history", headers=auth(READ))
    assert await response.json() == {
        "state": "forgotten",
        "requested": forgotten[0],
        "pool": "default",
    }
    # Its identity is not attached to anyone now: not found (saying more would tell that the
    # address belonged to a person who asked to be forgotten).
    missing = await http.get("/identities/email/eve%40example.com", headers=auth(READ))
    assert missing.status == 404
    assert (
        await http.get("/profiles/p_00000000000000000000/history", headers=auth(READ))
    ).status == 404


async def test_lookups_answer_as_a_workers_do(
    client: tuple[TestClient[Any, Any], LocalDriver],
) -> None:
    http, driver = client
    survivor = ids(driver)["ana@example.com"]
    found = await http.get("/identities/email/Ana%40Example.com", headers=auth(READ))
    assert (await found.json())["profileId"] == survivor
    install = await (await http.get("/installs/C", headers=auth(READ))).json()
    assert install["profileId"] == survivor
    snapshot = await (await http.get(f"/profiles/{survivor}", headers=auth(READ))).json()
    assert snapshot["attributes"] == {"city": "***"}
    bad = await http.get("/identities/email/null", headers=auth(READ))
    assert (bad.status, (await bad.json())["error"]) == (400, "bad_identity")


def test_the_demo_keeps_serving_the_explorer_in_process_until_interrupted() -> None:
    env = {**os.environ, "IDSTREAM_HTTP_PORT": "0"}
    args = ["--in-process", "--keep", "--seconds", "4", "--rate", "250", "--users", "60"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "idstream", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    # Read the output beside the test, so waiting for a line has a deadline.
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:

        def url_printed() -> str | None:
            found = re.search(r"profile explorer: (http://\S+)", "".join(lines))
            assert found or proc.poll() is None, "".join(lines)
            return found.group(1) if found else None

        url = wait_until(url_printed, 120, message="the explorer's URL")
        base, _, pid = url.partition("/explorer#")
        assert pid.startswith("p_")
        with urllib.request.urlopen(f"{base}/profiles/{pid}/history", timeout=10) as response:
            view = json.loads(response.read())
        # Why merged, for the sample person.
        assert view["merges"] and all(m.get("reason") for m in view["merges"])
        with urllib.request.urlopen(f"{base}/explorer", timeout=10) as response:
            assert b"explorer.js" in response.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_keep_settings_take_any_free_port_unless_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from idstream.demo.main import _keep_settings

    monkeypatch.delenv("IDSTREAM_HTTP_PORT", raising=False)
    assert _keep_settings().http_port == 0
    monkeypatch.setenv("IDSTREAM_HTTP_PORT", "7001")
    assert _keep_settings() == replace(_keep_settings(), http_port=7001)
