"""Run idstream workers (`python -m idstream worker`) against a real broker in tests.

One `Topology` is one deployment: unique topic names, one consumer group, and a data dir per
worker. It waits on conditions (offsets committed) with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import re
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from idstream.devbroker import free_port
from idstream.digest import RESOLVER_DIGEST_EXCLUDED, RESOLVER_TABLE_TYPES, state_digest
from idstream.domain.erasure import NOTHING_ERASED
from idstream.domain.messages import OutputTopic
from idstream.drivers.faust.export import read_forget_register
from idstream.drivers.faust.replayed import replayed
from idstream.drivers.local.sinks import MemorySink
from idstream.settings import load_settings
from idstream.storage.partitions import (
    STAGE_TABLES,
    latest_partition_dbs,
    load_tables,
    partition_dbs,
)
from tests.support.kafka import (
    INPUT_CONFIG,
    all_committed,
    create_topics,
    produce,
    read_all,
    record_positions,
)
from tests.support.names import UniqueNames
from tests.support.processes import ManagedProcess, ProcessPool
from tests.support.waiting import wait_for

READY_LINE = "[^Worker]: Ready"
METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def _get(url: str, token: str | None) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
    return body.decode("utf-8")


@dataclass
class Topology:
    bootstrap: str
    names: UniqueNames
    processes: ProcessPool
    root: Path
    partitions: int = 6
    app_role: str = "app"
    # Another deployment whose input topic this one reads too.
    shared: Topology | None = None
    workers: list[ManagedProcess] = field(default_factory=list)
    ports: dict[int, int] = field(default_factory=dict)
    http_token: str | None = None  # what the workers' HTTP API asks for, if anything
    extra_env: dict[str, str] = field(default_factory=dict)  # more settings for every worker

    def __post_init__(self) -> None:
        self.app_id = self.names.app_id(self.app_role)

        def t(role: str) -> str:
            return self.names.topic(f"{self.app_role}.{role}")

        self.topics = {
            "events": self.shared.topics["events"] if self.shared else t("events"),
            "resolved_events": t("resolved"),
            "profile_changes": t("changes"),
            "profiles": t("profiles"),
            "dead_letter": t("dead"),
            "claims": t("claims"),
            "decisions": t("decisions"),
            "forget_register": t("register"),
        }

    def env(self, worker: int) -> dict[str, str]:
        env = {
            "IDSTREAM_BOOTSTRAP_SERVERS": self.bootstrap,
            "IDSTREAM_APP_ID": self.app_id,
            "IDSTREAM_PARTITIONS": str(self.partitions),
            "IDSTREAM_DATA_DIR": str(self.data_dir(worker)),
            # Each worker its own web port (its HTTP server is on by default).
            "IDSTREAM_HTTP_PORT": str(self.ports.setdefault(worker, free_port())),
        }
        env.update({f"IDSTREAM_TOPICS__{k.upper()}": v for k, v in self.topics.items()})
        env.update(self.extra_env)
        return env

    def data_dir(self, worker: int) -> Path:
        return self.root / f"worker-{worker}"

    async def create_input(self) -> None:
        """The input topic, as idstream creates it (the broker stamps record times)."""
        await create_topics(self.bootstrap, [self.topics["events"]], self.partitions, INPUT_CONFIG)

    async def start(self, worker: int = 0, *, wait_ready: bool = True) -> ManagedProcess:
        proc = self.processes.start_python_module(
            "idstream", "worker", name=f"worker-{worker}", env=self.env(worker)
        )
        self.workers.append(proc)
        if wait_ready:
            await wait_for(
                lambda: READY_LINE in proc.log_text() or not proc.is_running(),
                120,
                message=f"worker-{worker} to log {READY_LINE!r}",
            )
            assert proc.is_running(), f"worker exited {proc.returncode}:\n{proc.log_tail()}"
        return proc

    async def send(self, records: Sequence[tuple[bytes, bytes]], rate: float = 0) -> None:
        """Produce the records, all at once or `rate` per second (as live producers would)."""
        await produce(self.bootstrap, self.topics["events"], records, rate)

    async def all_done(self) -> bool:
        """Every input, claim and decision record committed by the group, twice in a row
        (a decision can make the install stage send more, so one look is not enough), and no
        claim waiting for a tick in any running worker."""
        for _ in range(2):
            for name in ("events", "claims", "decisions"):
                if not await all_committed(self.bootstrap, self.app_id, self.topics[name]):
                    return False
            if await self.pending_claims() > 0:
                return False
        return True

    async def pending_claims(self) -> float:
        """Claims the running workers hold back for the watermark (their /metrics)."""
        found = await self.metrics()
        return sum(v for (name, _), v in found.items() if name == "idstream_pending_claims")

    async def metrics(self) -> defaultdict[tuple[str, str], float]:
        """(name, labels) -> value from the running workers' /metrics, summed over them."""
        total: defaultdict[tuple[str, str], float] = defaultdict(float)
        for proc in self.workers:
            if not proc.is_running():
                continue
            port = self.ports[int(proc.name.split("-")[1])]
            url = f"http://127.0.0.1:{port}/metrics"
            text = await asyncio.to_thread(_get, url, self.http_token)
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    match = METRIC_LINE.match(line)
                    assert match, f"not Prometheus text: {line!r}"
                    total[(match[1], match[2] or "")] += float(match[3])
        return total

    async def wait_done(self, timeout: float = 240) -> None:
        def alive() -> None:
            for proc in self.workers:
                if proc.returncode not in (None, 0, -9):
                    raise AssertionError(f"{proc.name} exited {proc.returncode}")

        async def done() -> bool:
            alive()
            return await self.all_done()

        await wait_for(done, timeout, interval=0.5, message="workers to commit every record")

    def stop_all(self) -> None:
        for proc in self.workers:
            proc.stop(60)

    async def read(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        """Every record now in `topic`, partition by partition."""
        return await read_all(self.bootstrap, topic)

    def partition_owners(self) -> set[str]:
        """Names of workers whose data dir holds stage partitions."""
        return {
            proc.name
            for proc in self.workers
            if partition_dbs(self.data_dir(int(proc.name.split("-")[1])), STAGE_TABLES)
        }

    async def replayed(self, *, register: bool = False) -> tuple[str, MemorySink]:
        """The digest and outputs of the in-process driver over the input topic as it is on
        the broker (record times, ticks included): what the workers must have built. With
        `register`, knowing the forget register on the broker first, as a rebuild does."""
        settings = load_settings(environ={**os.environ, **self.env(0)})
        erased = await read_forget_register(settings) if register else NOTHING_ERASED
        return await replayed(settings, erased)

    async def check_against_in_process(self) -> None:
        """With the workers stopped: the state and the outputs are the in-process driver's
        over the same input log (SPEC §5). The digests are equal; every input record has
        exactly one outcome, the same as in process (resolved or dead-lettered once, or
        skipped by a rule, which leaves no output); each profile's changes are the same, in
        the same order (none lost, none doubled)."""
        expected, sink = await self.replayed()
        assert self.digest() == expected, "state differs from the in-process driver's"
        inputs = await record_positions(self.bootstrap, self.topics["events"])
        local_outcomes = [
            (o.value["source"]["partition"], o.value["source"]["offset"])
            for o in [*sink[OutputTopic.RESOLVED_EVENTS], *sink[OutputTopic.DEAD_LETTER]]
            if o.value is not None
        ]
        skipped = [(partition, offset) for _, _, partition, offset in sink.skips]
        # In process, every input record has one outcome: the yardstick is sound.
        assert sorted(local_outcomes + skipped) == sorted(inputs)
        read_back = [
            orjson.loads(v)
            for topic in ("resolved_events", "dead_letter")
            for _, v in await self.read(self.topics[topic])
            if v
        ]
        outcomes = [(v["source"]["partition"], v["source"]["offset"]) for v in read_back]
        assert len(outcomes) == len(set(outcomes)), "an input record with two outcomes"
        assert sorted(outcomes) == sorted(local_outcomes), "outcomes differ from in process"
        changes: dict[bytes | None, list[bytes | None]] = {}
        for key, value in await self.read(self.topics["profile_changes"]):
            changes.setdefault(key, []).append(value)
        local: dict[bytes | None, list[bytes | None]] = {}
        for out in sink[OutputTopic.PROFILE_CHANGES]:
            value = None if out.value is None else orjson.dumps(out.value)
            local.setdefault(out.key.encode(), []).append(value)
        decoded = {k: [orjson.loads(v) if v else None for v in vs] for k, vs in changes.items()}
        wanted = {k: [orjson.loads(v) if v else None for v in vs] for k, vs in local.items()}
        assert decoded == wanted, "profile changes lost, doubled or reordered"

    def digest(self) -> str:
        """Digest of the union of all workers' RocksDB partitions (workers stopped)."""
        dbs = latest_partition_dbs(self.root, STAGE_TABLES)
        assert dbs, f"no RocksDB partitions under {self.root}"
        tables = load_tables(dbs, RESOLVER_TABLE_TYPES)
        return state_digest(tables, RESOLVER_DIGEST_EXCLUDED)
