"""Operating workers on a real broker: profile lookups over HTTP (routed to the owner of the
key's partition; masked, raw with the raw token), the bearer token, /metrics against the
simulator's counts, `idstream profile`, `idstream tail`, and logs that never show a raw email
or phone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from jsonschema import Draft202012Validator

from idstream.devbroker import free_port
from idstream.domain.identities import mask
from idstream.masking import mask_snapshot
from idstream.simulate import Traffic, TrafficConfig
from tests.support.names import UniqueNames
from tests.support.processes import REPO_ROOT, ManagedProcess, ProcessPool
from tests.support.topology import READY_LINE, Topology
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "s3cret-test-token"
RAW_TOKEN = "r4w-test-token"
SNAPSHOT_SCHEMA = REPO_ROOT / "schemas" / "output" / "profile-snapshot.schema.json"
METRIC_LINE = re.compile(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$")


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            kind = response.headers.get("Content-Type", "")
            return response.status, json.loads(body) if "json" in kind else body.decode()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode()


def metrics(port: int) -> Counter[tuple[str, str]]:
    """(name, labels) -> value from a worker's /metrics."""
    status, text = get(port, "/metrics")
    assert status == 200
    out: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = METRIC_LINE.match(line)
            assert match, f"not Prometheus text: {line!r}"
            out[(match[1], match[2] or "")] += float(match[3])
    return out


async def start_worker(topo: Topology, worker: int, **env: str) -> tuple[ManagedProcess, int]:
    port = topo.ports.setdefault(worker, free_port())
    full = {**topo.env(worker), "IDSTREAM_HTTP_PORT": str(port), **env}
    proc = topo.processes.start_python_module(
        "idstream", "worker", name=f"worker-{worker}", env=full
    )
    topo.workers.append(proc)
    await wait_for(
        lambda: READY_LINE in proc.log_text() or not proc.is_running(),
        120,
        message=f"worker-{worker} to be ready",
    )
    assert proc.is_running(), f"worker exited {proc.returncode}:\n{proc.log_tail()}"
    return proc, port


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) now in `topic`, partition by partition, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend((m.key, m.value) for m in batch.get(tp, []))
        return out
    finally:
        await consumer.stop()


def identities_in(value: Any) -> set[str]:
    """Every email and phone value in an input record (identities, replacements, junk)."""
    found: set[str] = set()

    def walk(node: Any, under: str = "") -> None:
        if isinstance(node, dict):
            kind = str(node.get("kind", "")).lower()
            for key, child in node.items():
                walk(child, key.lower() if kind not in ("email", "phone") else kind)
        elif isinstance(node, list):
            for child in node:
                walk(child, under)
        elif isinstance(node, str) and ("email" in under or "phone" in under):
            found.add(node.strip())

    walk(value)
    # Emails and phone numbers only (junk like "null" is no personal data).
    return {v for v in found if "@" in v or sum(c.isdigit() for c in v) >= 6}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "idstream", *args],
        env={**os.environ, **env, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


async def test_lookups_token_metrics_cli_tail_and_logs(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    traffic = Traffic(TrafficConfig(seed=23, users=40, events=1500, malformed_share=0.02))
    records = [(r.key, r.value) for r in traffic]
    topo = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=4)
    topo.http_token = TOKEN
    await topo.create_input()
    # Worker 0 listens on every interface (so it must have a token), worker 1 on loopback.
    auth = {"IDSTREAM_HTTP_TOKEN": TOKEN, "IDSTREAM_HTTP_RAW_TOKEN": RAW_TOKEN}
    _, port0 = await start_worker(topo, 0, IDSTREAM_HTTP_HOST="0.0.0.0", **auth)
    _, port1 = await start_worker(topo, 1, **auth)
    ports = (port0, port1)
    await topo.send(records)
    await topo.wait_done(300)

    # What the workers published: the last snapshot of each profile.
    latest: dict[str, Any] = {}
    for key, value in await read_topic(kafka_bootstrap, topo.topics["profiles"]):
        assert key is not None
        latest[key.decode()] = None if value is None else orjson.loads(value)
    alive = {pid: snap for pid, snap in latest.items() if snap is not None}
    persons = [s for s in alive.values() if s["kind"] == "person"]
    assert persons and len(alive) > len(persons)

    # --- the token -----------------------------------------------------------------------
    some = next(iter(alive))
    for port in ports:
        assert get(port, f"/profiles/{some}", token=None)[0] == 401
        assert get(port, f"/profiles/{some}", token="wrong")[0] == 401
        assert get(port, "/metrics", token=None)[0] == 401

    # --- lookups, asked of both workers: one of them forwards to the owner ---------------
    # Masked by default; raw (what the workers published) with raw=1 and the raw token.
    validator = Draft202012Validator(json.loads(SNAPSHOT_SCHEMA.read_text()))
    sample = persons[:6] + [s for s in alive.values() if s["kind"] == "anonymous"][:3]
    for snap in sample:
        pid = snap["profileId"]
        for port in ports:
            status, body = get(port, f"/profiles/{pid}")
            assert status == 200, body
            assert body == mask_snapshot(snap)
            validator.validate(body)
            status, body = get(port, f"/profiles/{pid}?raw=1", token=RAW_TOKEN)
            assert status == 200, body
            assert body == snap
            validator.validate(body)
    by_kind: dict[str, Any] = {"email": None, "phone": None, "externalUserId": None}
    for snap in persons:
        ids = snap["identities"]
        for kind, value in (
            ("email", (ids.get("emails") or [None])[0]),
            ("phone", (ids.get("phones") or [None])[0]),
            ("externalUserId", ids.get("externalUserId")),
        ):
            if value and by_kind[kind] is None:
                by_kind[kind] = (value, snap)
    assert all(by_kind.values()), f"the traffic lacks an identity kind: {by_kind}"
    for kind, (value, snap) in by_kind.items():
        # Normalized before the lookup: an email in capitals finds the same person.
        asked = value.upper() if kind == "email" else value
        path = f"/identities/{kind}/{urllib.parse.quote(asked, safe='')}"
        for port in ports:
            status, body = get(port, path)
            assert status == 200, (kind, body)
            assert body == mask_snapshot(snap)
            assert get(port, f"{path}?raw=1", token=RAW_TOKEN) == (200, snap)
    person = persons[0]
    for install in person["installs"]:
        prid = install["pushRegistrationId"]
        for port in ports:
            status, body = get(port, f"/installs/{urllib.parse.quote(prid, safe='')}")
            assert status == 200, body
            assert body["pushRegistrationId"] == prid
            assert body["appCode"] == install["appCode"]
            if install["lifecycle"] == "personalized":
                assert body["profileId"] == person["profileId"]

    # --- unknown keys and bad requests ---------------------------------------------------
    for port in ports:
        for path in (
            "/profiles/p_00000000000000000000",
            "/installs/no-such-install",
            "/identities/email/nobody%40nowhere.example",
        ):
            status, body = get(port, path)
            assert (status, body) == (404, {"error": "not_found"}), path
        assert get(port, "/identities/fax/123")[0] == 400
        assert get(port, "/identities/email/null")[0] == 400
        # Faust's own pages would show table contents without our checks: they are off.
        for path in ("/table/", "/table/pool-state/", "/router/", "/graph/", "/stats/"):
            assert get(port, path)[0] == 404, path

    # --- metrics: both workers together count what the simulator sent -------------------
    total: Counter[tuple[str, str]] = Counter()
    for port in ports:
        total.update(metrics(port))
    labels = traffic.stats.labels
    for kind, count in labels.items():
        if not kind.startswith("malformed:"):
            assert total[("idstream_events_in_total", f'type="{kind}"')] == count, kind
    assert total[("idstream_events_in_total", 'type="invalid"')] == traffic.stats.malformed
    dead = [
        orjson.loads(v)
        for _, v in await read_topic(kafka_bootstrap, topo.topics["dead_letter"])
        if v
    ]
    for reason, count in Counter(d["reason"] for d in dead).items():
        assert total[("idstream_dead_letters_total", f'reason="{reason}"')] == count, reason
    for role in ("resolved_events", "profile_changes", "profiles", "dead_letter"):
        name = topo.topics[role]
        sent = len(await read_topic(kafka_bootstrap, name))
        assert total[("idstream_outputs_total", f'topic="{name}"')] == sent, role
    changes = [
        orjson.loads(v)
        for _, v in await read_topic(kafka_bootstrap, topo.topics["profile_changes"])
        if v
    ]
    merges = sum(1 for c in changes if c["kind"] == "merged" and c["profileId"] == c["loser"])
    assert total[("idstream_merges_total", "")] == merges
    rejected = Counter(c["reason"] for c in changes if c["kind"] == "identity_rejected")
    for reason, count in rejected.items():
        assert total[("idstream_identity_rejections_total", f'reason="{reason}"')] == count
    assert total[("idstream_skipped_total", 'reason="launch_dropped"')] > 0
    assert total[("idstream_processing_latency_seconds_count", 'stage="install"')] > 0
    lags = [v for (name, _), v in total.items() if name == "idstream_consumer_lag"]
    assert lags and all(v == 0 for v in lags)

    # --- idstream profile ----------------------------------------------------------------
    env = {
        "IDSTREAM_HTTP_PORT": str(port1),
        "IDSTREAM_HTTP_TOKEN": TOKEN,
        "IDSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        **{f"IDSTREAM_TOPICS__{k.upper()}": v for k, v in topo.topics.items()},
    }
    email, snap = by_kind["email"]
    shown = cli("profile", f"email:{email}", env=env)
    assert shown.returncode == 0, shown.stderr
    assert snap["profileId"] in shown.stdout
    assert mask("email", email) in shown.stdout and email not in shown.stdout
    unmasked = cli("profile", f"email:{email}", "--show-identities", env=env)
    assert unmasked.returncode == 3 and "403" in unmasked.stderr  # no raw token
    unmasked = cli(
        "profile", f"email:{email}", "--raw", env={**env, "IDSTREAM_HTTP_RAW_TOKEN": RAW_TOKEN}
    )
    assert unmasked.returncode == 0, unmasked.stderr
    assert email in unmasked.stdout
    missing = cli("profile", "p_00000000000000000000", env=env)
    assert missing.returncode == 1 and "not_found" in missing.stderr

    # --- idstream tail: masked lines ----------------------------------------------------
    follow = cli("tail", "--from-beginning", "--max", str(len(changes)), env=env)
    assert follow.returncode == 0, follow.stderr
    lines = follow.stdout.splitlines()
    assert len(lines) == len(changes) and all(x.startswith("profile-changes ") for x in lines)
    added = [x for x in lines if " identity_added email=" in x]
    assert added and all("***@" in x for x in added)
    every = cli("tail", "--all", "--from-beginning", "--max", "300", env=env)
    assert every.returncode == 0, every.stderr
    assert len(every.stdout.splitlines()) == 300
    tail = follow.stdout + every.stdout

    # --- no raw email or phone in any log -------------------------------------------------
    raw = set().union(*(identities_in(orjson.loads(v)) for _, v in records if _is_json(v)))
    assert raw, "the traffic carries emails and phones"
    topo.stop_all()
    logs = "".join(proc.log_text() for proc in topo.workers) + tail + shown.stdout
    assert "identity rejected" in logs or not rejected
    assert "worker started" in logs and "'http_token': '***'" in logs
    assert TOKEN not in logs and RAW_TOKEN not in logs
    leaked = sorted(v for v in raw if v in logs)
    assert not leaked, f"raw identities in the logs: {leaked[:5]}"


def _is_json(value: bytes) -> bool:
    try:
        return isinstance(orjson.loads(value), dict)
    except orjson.JSONDecodeError:
        return False


def test_a_worker_beyond_loopback_without_a_token_refuses_to_start(
    kafka_bootstrap: str, names: UniqueNames, tmp_path: Path
) -> None:
    env = {
        "IDSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "IDSTREAM_APP_ID": names.app_id(),
        "IDSTREAM_DATA_DIR": str(tmp_path / "state"),
        "IDSTREAM_HTTP_HOST": "0.0.0.0",
        "IDSTREAM_HTTP_PORT": str(free_port()),
        **{
            f"IDSTREAM_TOPICS__{role.upper()}": names.topic(role)
            for role in (
                "events",
                "resolved_events",
                "profile_changes",
                "profiles",
                "dead_letter",
                "claims",
                "decisions",
                "forget_register",
            )
        },
    }
    done = cli("worker", env=env)
    assert done.returncode != 0
    assert "IDSTREAM_HTTP_TOKEN" in done.stdout + done.stderr


def test_a_worker_without_a_key_for_personal_data_refuses_to_start(
    kafka_bootstrap: str, names: UniqueNames, tmp_path: Path
) -> None:
    env = {
        "IDSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "IDSTREAM_APP_ID": names.app_id(),
        "IDSTREAM_DATA_DIR": str(tmp_path / "state"),
        "IDSTREAM_PERSONAL_DATA_KEY": "",
    }
    done = cli("worker", env=env)
    assert done.returncode == 2
    assert "IDSTREAM_PERSONAL_DATA_KEY" in done.stderr
    assert not (tmp_path / "state").exists()
