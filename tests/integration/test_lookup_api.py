"""The lookup API does not leak, on real workers and a real broker: answers masked by default,
raw values only for the raw token (also on loopback), a foreign Host refused (DNS rebinding),
identity lookups rate-limited with 429, and a forwarded lookup counted once while a forged
forwarding header is counted like any request."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from idstream.masking import mask_snapshot
from idstream.simulate import Traffic, TrafficConfig
from tests.integration.test_operate import cli, start_worker
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

READ = "read-token-for-tests"
RAW = "raw-token-for-tests"
SECRET = "forward-secret-for-tests"


def call(
    port: int,
    path: str,
    token: str | None = None,
    *,
    host: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    """(status, JSON body, response headers) of GET `path` on a worker."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers or {}))
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def deployment(
    kafka_bootstrap: str,
    names: UniqueNames,
    processes: ProcessPool,
    tmp_path: Path,
    workers: int,
    env: Mapping[str, str],
) -> tuple[Topology, list[int], list[dict[str, Any]]]:
    """Workers with `env` on simulated traffic, done; their ports and the persons published."""
    traffic = Traffic(TrafficConfig(seed=23, users=30, events=800, malformed_share=0.0))
    topo = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=4)
    topo.http_token = env.get("IDSTREAM_HTTP_TOKEN")  # what its /metrics ask for
    await topo.create_input()
    ports = [(await start_worker(topo, w, **env))[1] for w in range(workers)]
    await topo.send([(r.key, r.value) for r in traffic])
    await topo.wait_done(300)
    latest: dict[str, Any] = {}
    for key, value in await topo.read(topo.topics["profiles"]):
        assert key is not None
        latest[key.decode()] = None if value is None else orjson.loads(value)
    persons = [s for s in latest.values() if s is not None and s["kind"] == "person"]
    persons = [
        p
        for p in persons
        if p["identities"]["emails"] and "firstName" in p["attributes"] and p["installs"]
    ]
    assert persons, "the traffic has persons with an email, a first name and an install"
    return topo, ports, persons


def personal_values(snapshot: Mapping[str, Any]) -> list[str]:
    ids = snapshot["identities"]
    values = [*ids["emails"], *ids["phones"], ids["externalUserId"]]
    values += [v for v in snapshot["attributes"].values() if isinstance(v, str)]
    return [v for v in values if v and len(v) > 3]


async def test_loopback_worker_masks_refuses_raw_and_foreign_hosts_and_limits_identities(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    # The loopback default: no read token. A raw token exists; identity lookups: bursts of 6.
    burst = 6
    env = {
        "IDSTREAM_HTTP_RAW_TOKEN": RAW,
        "IDSTREAM_HTTP_LOOKUPS_PER_MINUTE": "1",
        "IDSTREAM_HTTP_LOOKUP_BURST": str(burst),
    }
    topo, (port,), persons = await deployment(kafka_bootstrap, names, processes, tmp_path, 1, env)
    person = persons[0]
    pid = person["profileId"]
    email = person["identities"]["emails"][0]

    # --- masked by default, without any token ----------------------------------------------
    status, body, headers = call(port, f"/profiles/{pid}")
    assert status == 200, body
    assert body == mask_snapshot(person) and body != person
    assert headers["X-Idstream-View"] == "masked" and headers["Cache-Control"] == "no-store"
    text = json.dumps(body)
    leaked = [v for v in personal_values(person) if v in text]
    assert not leaked, leaked
    prid = person["installs"][0]["pushRegistrationId"]
    status, install, _ = call(port, f"/installs/{quote(prid)}")
    assert status == 200 and install["pushRegistrationId"] == prid
    assert all(v == "***" for v in install["customAttributes"].values())

    # --- raw values: only with the raw token, also on loopback ------------------------------
    assert call(port, f"/profiles/{pid}?raw=1")[:2] == (
        403,
        {"error": "forbidden", "detail": "raw values need the raw token (IDSTREAM_HTTP_RAW_TOKEN)"},
    )
    assert call(port, f"/profiles/{pid}?raw=1", "a-guess")[0] == 401
    status, body, headers = call(port, f"/profiles/{pid}?raw=1", RAW)
    assert (status, body, headers["X-Idstream-View"]) == (200, person, "raw")
    assert call(port, f"/profiles/{pid}", RAW)[1] == mask_snapshot(person)

    # --- a foreign Host is refused (a page of attacker.example rebound to 127.0.0.1) --------
    for token in (None, RAW):
        status, body, _ = call(port, f"/profiles/{pid}", token, host=f"attacker.example:{port}")
        assert (status, body["error"]) == (421, "misdirected")
    status, _, _ = call(port, f"/identities/email/{quote(email)}", host="attacker.example")
    assert status == 421  # refused before it is counted
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert call(port, f"/profiles/{pid}", host=host)[0] == 200, host
    assert call(port, "/", host="attacker.example")[0] == 200  # the health page only

    # --- idstream profile: masked, raw only when granted -----------------------------------
    base = {"IDSTREAM_HTTP_PORT": str(port), "IDSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap}
    shown = cli("profile", pid, env=base)
    assert shown.returncode == 0, shown.stderr
    assert pid in shown.stdout and not [v for v in personal_values(person) if v in shown.stdout]
    refused = cli("profile", pid, "--raw", env=base)
    assert refused.returncode == 3 and "403" in refused.stderr and not refused.stdout
    granted = cli("profile", pid, "--raw", env={**base, "IDSTREAM_HTTP_RAW_TOKEN": RAW})
    assert granted.returncode == 0, granted.stderr
    assert email in granted.stdout and person["attributes"]["firstName"] in granted.stdout

    # --- identity lookups: a burst, then 429 with Retry-After -------------------------------
    path = f"/identities/email/{quote(email)}"
    answers = [call(port, path)[0] for _ in range(burst)]
    assert answers == [200] * burst
    status, body, headers = call(port, path)
    assert (status, body["error"]) == (429, "rate_limited")
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Per principal: the raw token has its own bucket; other lookups are not limited.
    assert call(port, path, RAW)[0] == 200
    assert call(port, f"/profiles/{pid}")[0] == 200
    topo.stop_all()
    logs = "".join(proc.log_text() for proc in topo.workers)
    assert RAW not in logs and "'http_raw_token': '***'" in logs
    assert "refused a request (1 so far): its Host is not an allowed name" in logs


async def test_a_forwarded_lookup_is_counted_once_and_a_forged_forward_is_counted(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    burst = 5
    env = {
        "IDSTREAM_HTTP_TOKEN": READ,
        "IDSTREAM_HTTP_RAW_TOKEN": RAW,
        "IDSTREAM_HTTP_FORWARD_SECRET": SECRET,
        "IDSTREAM_HTTP_LOOKUPS_PER_MINUTE": "1",
        "IDSTREAM_HTTP_LOOKUP_BURST": str(burst),
    }
    topo, ports, persons = await deployment(kafka_bootstrap, names, processes, tmp_path, 2, env)
    person = persons[0]
    email = person["identities"]["emails"][0]
    path = f"/identities/email/{quote(email)}"

    # One worker owns the pool's partition, the other forwards to it: both answer, masked.
    for port in ports:
        status, body, headers = call(port, f"/profiles/{person['profileId']}", READ)
        assert (status, body, headers["X-Idstream-View"]) == (200, mask_snapshot(person), "masked")
        status, body, _ = call(port, f"{path}?raw=1", RAW)
        assert (status, body) == (200, person)
        assert call(port, f"{path}?raw=1", READ)[0] == 403

    # A burst on each worker passes: the forwarded half was not counted by the owner too.
    for port in ports:
        answers = [call(port, path, READ) for _ in range(burst)]
        assert [(s, b == mask_snapshot(person)) for s, b, _ in answers] == [(200, True)] * burst
    for port in ports:
        assert call(port, path, READ)[0] == 429

    # A forwarding header from outside is no way around the limit, signed or not.
    forged = ["1", "v1 0 " + "0" * 64, f"v1 {2**40} {'f' * 64}"]
    for port in ports:
        for header in forged:
            status, body, _ = call(port, path, READ, headers={"X-Idstream-Forwarded": header})
            assert (status, body["error"]) == (429, "rate_limited"), header
    topo.stop_all()
    logs = "".join(proc.log_text() for proc in topo.workers)
    assert SECRET not in logs and READ not in logs and RAW not in logs
