"""Run `idstream gateway` against a real broker in tests: in-process (aiohttp test server, the
real KafkaSink) or as a child process (`python -m idstream gateway`), as an SDK would meet it."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestServer

from idstream.gateway.cli import READY_LINE
from idstream.gateway.config import GatewayConfig
from idstream.gateway.kafka import KafkaSink
from idstream.gateway.server import RUNNER_OPTIONS, create_app
from idstream.settings import Settings, Topics
from tests.support.kafka import read_all
from tests.support.names import UniqueNames
from tests.support.processes import ManagedProcess, ProcessPool
from tests.support.waiting import wait_for

WRITE_KEY = "wk-shop-ios-0001"
APP_CODE = "shop-ios"


def basic(write_key: str) -> dict[str, str]:
    """The Authorization header the SDKs send: the write key as user name, no password."""
    token = base64.b64encode(f"{write_key}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def gateway_settings(bootstrap: str, names: UniqueNames, **changes: Any) -> Settings:
    """Settings of one test deployment: unique topics and app id, one write key."""
    topics = Topics(
        events=names.topic("events"),
        resolved_events=names.topic("resolved"),
        profile_changes=names.topic("changes"),
        profiles=names.topic("profiles"),
        dead_letter=names.topic("dead"),
        claims=names.topic("claims"),
        decisions=names.topic("decisions"),
        forget_register=names.topic("forget-register"),
    )
    base = Settings(
        bootstrap_servers=bootstrap,
        app_id=names.app_id(),
        partitions=2,
        topics=topics,
        gateway_write_keys={WRITE_KEY: APP_CODE},
    )
    return replace(base, **changes)


@dataclass
class LiveGateway:
    settings: Settings
    session: aiohttp.ClientSession
    url: str

    async def post(self, path: str, body: bytes | Any, **headers: str) -> aiohttp.ClientResponse:
        """POST raw bytes (or a JSON value) with the write key unless headers say otherwise."""
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        # aiohttp warns about large raw bytes bodies; a stream of known size is the same request.
        data = io.BytesIO(raw) if len(raw) > 1024 * 1024 else raw
        all_headers = {**basic(WRITE_KEY), "Content-Type": "application/json", **headers}
        all_headers = {k: v for k, v in all_headers.items() if v}
        response = await self.session.post(self.url + path, data=data, headers=all_headers)
        await response.read()
        return response

    async def events(self) -> list[tuple[bytes | None, bytes | None]]:
        return await read_all(self.settings.bootstrap_servers, self.settings.topics.events)

    async def dead_letters(self) -> list[tuple[bytes | None, bytes | None]]:
        return await read_all(self.settings.bootstrap_servers, self.settings.topics.dead_letter)


@asynccontextmanager
async def in_process_gateway(settings: Settings) -> AsyncIterator[LiveGateway]:
    """The gateway's aiohttp app and KafkaSink in this event loop, on a free port."""
    config = GatewayConfig.from_settings(settings)
    sink = KafkaSink(settings, config.produce_timeout_s, config.max_pending_bytes)
    await sink.start()
    server = TestServer(create_app(config, sink), host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as session:
            yield LiveGateway(settings, session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
        await sink.stop()


def gateway_env(settings: Settings, port: int) -> dict[str, str]:
    """IDSTREAM_* variables that give a child `idstream gateway` these settings."""
    env = {
        "IDSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "IDSTREAM_APP_ID": settings.app_id,
        "IDSTREAM_PARTITIONS": str(settings.partitions),
        "IDSTREAM_GATEWAY_PORT": str(port),
        "IDSTREAM_GATEWAY_WRITE_KEYS": ",".join(
            f"{k}={v}" for k, v in settings.gateway_write_keys.items()
        ),
    }
    for name in Topics.__dataclass_fields__:
        env[f"IDSTREAM_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    return env


async def start_gateway_process(
    processes: ProcessPool,
    env: Mapping[str, str],
    *args: str,
    name: str = "gateway",
) -> ManagedProcess:
    """`python -m idstream gateway`, waited for until it logs that it listens."""
    proc = processes.start_python_module("idstream", "gateway", *args, name=name, env=env)
    await wait_for(
        lambda: READY_LINE in proc.log_text() or not proc.is_running(),
        120,
        message=f"{name} to log {READY_LINE!r}",
    )
    assert proc.is_running(), f"gateway exited {proc.returncode}:\n{proc.log_tail()}"
    return proc
