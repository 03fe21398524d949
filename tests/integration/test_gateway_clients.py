"""The real SDK clients (segment-analytics-python, rudder-sdk-python) send a user journey to
`idstream gateway`; an `idstream worker` on the same broker turns it into the expected profile.

Journey on one device: install, open, identify, track, sign-out. Both clients post to
/v1/batch with the write key as HTTP Basic user name; rudder-sdk-python gzips its bodies.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from idstream.devbroker import free_port
from idstream.settings import Topics
from tests.support.gateway import (
    APP_CODE,
    WRITE_KEY,
    gateway_env,
    gateway_settings,
    start_gateway_process,
)
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import READY_LINE, Topology
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE_ID = "9E2C4B7A-5D1F-4E3A-8B6C-2F0D9A1E7C55"
PUSH_TOKEN = "f3a1c9e07b2d4c5e8a6f0b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4"
USER_ID = "u-1842"
EMAIL = "Ana.Silva@Example.com"  # the resolver lower-cases it


def journey(client: Any, anonymous_id: str) -> None:
    """What a mobile app's SDK sends from install to sign-out (timestamps a second apart)."""
    context = {
        "app": {"name": "Shop", "version": "3.14.0", "build": "314"},
        "device": {
            "id": DEVICE_ID,
            "manufacturer": "Apple",
            "model": "iPhone15,2",
            "token": PUSH_TOKEN,
        },
        "os": {"name": "iOS", "version": "17.1"},
        "locale": "pt-PT",
    }
    start = datetime.now(UTC) - timedelta(minutes=5)

    def at(step: int) -> datetime:
        return start + timedelta(seconds=step)

    common = {"anonymous_id": anonymous_id, "context": context}
    installed = {"version": "3.14.0", "build": "314"}
    client.track(event="Application Installed", properties=installed, timestamp=at(0), **common)
    opened = {"from_background": False}
    client.track(event="Application Opened", properties=opened, timestamp=at(1), **common)
    traits = {"email": EMAIL, "firstName": "Ana", "lastName": "Silva", "plan": "gold"}
    client.identify(user_id=USER_ID, traits=traits, timestamp=at(2), **common)
    order = {"total": 42.5, "currency": "EUR"}
    client.track(
        user_id=USER_ID, event="Order Completed", properties=order, timestamp=at(3), **common
    )
    client.track(user_id=USER_ID, event="Signed Out", timestamp=at(4), **common)


def segment_client(host: str, errors: list[Any]) -> Any:
    from segment.analytics.client import Client

    return Client(
        WRITE_KEY,
        host=host,
        on_error=lambda exc, batch: errors.append(exc),
        max_retries=2,
        upload_interval=0.1,
    )


def rudder_client(host: str, errors: list[Any]) -> Any:
    from rudderstack.analytics.client import Client

    return Client(
        WRITE_KEY,
        host=host,
        on_error=lambda exc, batch: errors.append(exc),
        max_retries=2,
        upload_interval=0.1,
    )


def send_journey(make: Any, host: str) -> list[Any]:
    errors: list[Any] = []
    client = make(host, errors)
    journey(client, anonymous_id="anon-" + DEVICE_ID[:8])
    client.flush()  # returns once the queue is empty: every batch answered
    client.shutdown()
    return errors


def latest_by_key(records: list[tuple[bytes | None, bytes | None]]) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for key, value in records:
        assert key is not None
        out[key] = None if value is None else orjson.loads(value)
    return out


@pytest.mark.parametrize("make", [segment_client, rudder_client], ids=["segment", "rudder"])
async def test_an_sdk_journey_ends_as_the_expected_profile(
    make: Any,
    kafka_bootstrap: str,
    names: UniqueNames,
    processes: ProcessPool,
    tmp_path: Path,
) -> None:
    topology = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=2)
    port = free_port()
    # The worker's deployment: its app id, partitions and topics.
    settings = gateway_settings(
        kafka_bootstrap,
        names,
        app_id=topology.app_id,
        partitions=topology.partitions,
        topics=Topics(**topology.topics),
    )
    env = gateway_env(settings, port)
    # The gateway creates the topics; the worker finds them as it would have made them.
    await start_gateway_process(processes, env)
    lookup_port = await start_worker(topology, processes)

    errors = await asyncio.to_thread(send_journey, make, f"http://127.0.0.1:{port}")
    assert errors == []
    await topology.wait_done()

    assert await topology.read(topology.topics["dead_letter"]) == []
    resolved = [orjson.loads(v) for _, v in await topology.read(topology.topics["resolved_events"])]
    by_type = {e["type"]: e for e in resolved}
    assert set(by_type) == {
        "install",
        "appLaunch",
        "installUpdate",  # the push token of the open
        "personalize",
        "custom",
        "depersonalize",
    }
    assert {e["installId"] for e in resolved} == {DEVICE_ID}
    assert {e["appCode"] for e in resolved} == {APP_CODE}
    person_id = by_type["personalize"]["profileId"]
    assert by_type["custom"]["profileId"] == person_id
    assert by_type["custom"]["definitionId"] == "Order Completed"
    assert by_type["custom"]["properties"] == {"total": 42.5, "currency": "EUR"}

    snapshots = latest_by_key(await topology.read(topology.topics["profiles"]))
    person = snapshots[person_id.encode()]
    assert person["kind"] == "person"
    assert person["identities"]["externalUserId"] == USER_ID
    assert person["identities"]["emails"] == [EMAIL.lower()]
    assert person["attributes"] == {"firstName": "Ana", "lastName": "Silva"}
    assert person["customAttributes"] == {"plan": "gold"}
    # Signed out: the device left the person for a new anonymous profile.
    [after] = [
        s
        for pid, s in snapshots.items()
        if s is not None
        and pid != person_id.encode()
        and any(i["pushRegistrationId"] == DEVICE_ID for i in s["installs"])
    ]
    assert after["kind"] == "anonymous"
    # The install, as the worker holds it: its push token in system data.
    url = f"http://127.0.0.1:{lookup_port}/installs/{DEVICE_ID}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        install = await response.json()
    assert install["lifecycle"] == "depersonalized"
    assert install["appCode"] == APP_CODE
    assert install["profileId"] == after["profileId"]
    assert install["systemData"]["pushToken"] == PUSH_TOKEN
    assert install["systemData"]["deviceModel"] == "iPhone15,2"
    assert install["systemData"]["applicationVersion"] == "3.14.0"
    assert install["systemData"]["platform"] == "iOS"


async def start_worker(topology: Topology, processes: ProcessPool) -> int:
    """Worker 0 of the topology on a lookup port this test knows; returns the port."""
    env = topology.env(0)  # its lookup port is the one the topology polls for /metrics
    port = topology.ports[0]
    proc = processes.start_python_module("idstream", "worker", name="worker-0", env=env)
    topology.workers.append(proc)
    await wait_for(
        lambda: READY_LINE in proc.log_text() or not proc.is_running(),
        120,
        message=f"worker-0 to log {READY_LINE!r}",
    )
    assert proc.is_running(), f"worker exited {proc.returncode}:\n{proc.log_tail()}"
    return port
