"""Every decode limit set on a Kafka worker takes effect there (issue #12 item 3): each limit is
moved away from its default, a record at the new limit resolves, one past it is dead-lettered
with the reason naming the limit, and the worker's state has the in-process driver's digest.

Five limits are lowered (the record past the new limit would pass the default one) and the
identities limit is raised (the record at the new limit would fail the default one), so no
outcome here can come from the defaults.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson
import pytest

from idstream.codecs import DEFAULT_LIMITS, Rejection, decode
from idstream.domain.events import RecordMeta
from idstream.settings import ENV_PREFIX, Settings, load_settings
from tests.support.names import UniqueNames
from tests.support.outcomes import RESOLVED, broker_outcomes
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MINUTE = 60_000
SYSTEM = {
    "applicationVersion": "1",
    "deviceManufacturer": "A",
    "deviceModel": "M",
    "osLanguage": "en",
    "osVersion": "1",
    "platform": "iOS",
    "sdkVersion": "1",
}


def event(event_id: str, kind: str, prid: str, timestamp: int, **fields: Any) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "type": kind,
        "timestamp": timestamp,
        "appCode": "shop",
        "pushRegistrationId": prid,
        **SYSTEM,
        **fields,
    }


def padded(doc: dict[str, Any], size: int) -> bytes:
    """`doc` as JSON of exactly `size` bytes (trailing whitespace is valid JSON)."""
    raw = orjson.dumps(doc)
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


@dataclass(frozen=True)
class Limit:
    """One limit set to `value`: `before` resolves first (the install the records go to),
    `at` (at the limit) resolves, `over` (past it) is dead-lettered with `reason`, its detail
    holding `detail`."""

    setting: str  # the Settings field; IDSTREAM_<SETTING> sets it
    value: int
    before: tuple[bytes, ...]
    at: bytes
    over: bytes
    reason: str
    detail: str

    @property
    def default(self) -> int:
        found: int = getattr(Settings(), self.setting)
        return found


def limits(now: int) -> list[Limit]:
    """The limits and their records; `now` is about the broker's record time (the skew rule)."""
    ts = now - MINUTE

    def install(prid: str) -> bytes:
        return orjson.dumps(event(f"{prid}-install", "install", prid, ts))

    def custom(event_id: str, prid: str, timestamp: int = ts, **fields: Any) -> dict[str, Any]:
        return event(event_id, "custom", prid, timestamp, definitionId="d", **fields)

    def emails(prefix: str, n: int) -> dict[str, Any]:
        return {"userIdentity": {"emails": [f"{prefix}{i}@x.com" for i in range(n)]}}

    def attributes(n: int) -> dict[str, int]:
        return {f"a{i}": i for i in range(n)}

    oversize = "oversize"
    return [
        Limit(
            "max_record_bytes",
            8_192,
            (install("R"),),
            padded(custom("R-at", "R"), 8_192),
            padded(custom("R-over", "R"), 8_193),
            oversize,
            "> 8192",
        ),
        Limit(
            "max_string_chars",
            64,
            (install("S"),),
            orjson.dumps(custom("S-at", "S", properties={"p": "s" * 64})),
            orjson.dumps(custom("S-over", "S", properties={"p": "s" * 65})),
            oversize,
            "<= 64",
        ),
        Limit(
            "max_attributes",
            5,
            (install("A"),),
            orjson.dumps(event("A-at", "installUpdate", "A", ts, customAttributes=attributes(5))),
            orjson.dumps(event("A-over", "installUpdate", "A", ts, customAttributes=attributes(6))),
            oversize,
            "<= 5",
        ),
        Limit(
            "max_identities_per_kind",
            200,
            (install("I"),),
            orjson.dumps(event("I-at", "personalize", "I", ts, **emails("m", 200))),
            orjson.dumps(event("I-over", "personalize", "I", ts, **emails("n", 201))),
            oversize,
            "<= 200",
        ),
        Limit(
            "max_tags_per_event",
            3,
            # Tags need a person: the install is personalized first.
            (install("T"), orjson.dumps(event("T-p", "personalize", "T", ts, **emails("t", 1)))),
            orjson.dumps(event("T-at", "personUpdate", "T", ts, tagsAdded=["a", "b", "c"])),
            orjson.dumps(event("T-over", "personUpdate", "T", ts, tagsAdded=["a", "b", "c", "d"])),
            oversize,
            "<= 3",
        ),
        Limit(
            "max_future_skew_ms",
            10 * MINUTE,
            (install("K"),),
            orjson.dumps(custom("K-at", "K", now + 2 * MINUTE)),
            orjson.dumps(custom("K-over", "K", now + 60 * MINUTE)),
            "timestamp_out_of_range",
            f"more than {10 * MINUTE} ms after the record timestamp",
        ),
    ]


def text(raw: bytes, name: str) -> str:
    found: str = orjson.loads(raw)[name]
    return found


def rejected(raw: bytes, now: int) -> bool:
    """Whether the default limits reject `raw`, stamped by the broker at `now`."""
    meta = RecordMeta(topic="events", partition=0, offset=0, record_timestamp=now)
    return isinstance(decode(raw, meta, DEFAULT_LIMITS), Rejection)


async def test_each_decode_limit_set_on_a_worker_decides_what_it_dead_letters(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    cases = limits(now)
    # Without the settings the outcomes would differ: a lowered limit passes its `over`
    # record by default, a raised one rejects its `at` record.
    for limit in cases:
        if limit.value < limit.default:
            assert not rejected(limit.over, now), limit.setting
        else:
            assert rejected(limit.at, now), limit.setting
    records = [raw for c in cases for raw in c.before]
    expected = {text(raw, "eventId"): [RESOLVED] for raw in records}
    details: dict[str, str] = {}
    for limit in cases:
        records += [limit.at, limit.over]
        expected[text(limit.at, "eventId")] = [RESOLVED]
        expected[text(limit.over, "eventId")] = [f"dead_letter:{limit.reason}"]
        details[text(limit.over, "eventId")] = limit.detail

    env = {f"{ENV_PREFIX}{c.setting.upper()}": str(c.value) for c in cases}
    moved = load_settings(environ={**os.environ, **env}).limits()
    unmoved = [
        f.name for f in fields(moved) if getattr(moved, f.name) == getattr(DEFAULT_LIMITS, f.name)
    ]
    assert unmoved == [], "decode limits this test does not set"
    # One partition: a record's offset is its place in `records` (the worker's ticks follow).
    topology = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=1, extra_env=env)
    await topology.create_input()
    await topology.send([(text(raw, "pushRegistrationId").encode(), raw) for raw in records])
    worker = await topology.start(0)
    await topology.wait_done(120)
    assert worker.is_running(), f"worker exited {worker.returncode}"
    topology.stop_all()

    found = await broker_outcomes(topology)
    ids = {(0, offset): text(raw, "eventId") for offset, raw in enumerate(records)}
    got = {ids.get(p, f"offset {p}"): [o.what for o in outcomes] for p, outcomes in found.items()}
    assert got == expected
    dead = {ids[p]: o[0].detail for p, o in found.items() if ids.get(p) in details}
    for event_id, detail in details.items():
        assert detail in dead[event_id], event_id
    # The in-process driver, given the same settings, built the same state.
    replayed, _ = await topology.replayed()
    assert topology.digest() == replayed
