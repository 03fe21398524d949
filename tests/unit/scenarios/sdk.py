"""Helpers for scenario tests: SDK records as the wire has them, and reading the outputs."""

from __future__ import annotations

from typing import Any

import orjson

from idstream.domain.messages import Output, OutputTopic
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def record(
    kind: str, eid: str, seconds: float, prid: str, app: str = "shop", **fields: Any
) -> bytes:
    """One input record value: `seconds` after T0, on install `prid`."""
    value = {
        "eventId": eid,
        "type": kind,
        "timestamp": T0 + round(seconds * 1000),
        "appCode": app,
        "pushRegistrationId": prid,
        **fields,
    }
    return orjson.dumps(value)


def personalize(eid: str, s: float, prid: str, *, app: str = "shop", **identity: Any) -> bytes:
    force = identity.pop("force", None)
    extra: dict[str, Any] = {"userIdentity": identity}
    if force is not None:
        extra["forceDepersonalize"] = force
    return record("personalize", eid, s, prid, app, **extra)


def outputs(driver: LocalDriver, topic: OutputTopic) -> list[Output]:
    sink = driver.sink
    assert isinstance(sink, MemorySink)
    return sink[topic]


def attribution(driver: LocalDriver) -> dict[str, str]:
    """eventId -> profile id of its (last) resolved event."""
    return {
        o.value["eventId"]: o.key
        for o in outputs(driver, OutputTopic.RESOLVED_EVENTS)
        if o.value is not None
    }


def profiles(driver: LocalDriver) -> dict[str, dict[str, Any]]:
    """The compacted `profiles` topic: latest snapshot per profile id, tombstones removed."""
    latest: dict[str, dict[str, Any] | None] = {}
    for o in outputs(driver, OutputTopic.PROFILES):
        latest[o.key] = None if o.value is None else dict(o.value)
    return {k: v for k, v in latest.items() if v is not None}


def person(driver: LocalDriver, external_user_id: str) -> dict[str, Any]:
    (found,) = [
        p
        for p in profiles(driver).values()
        if p["identities"]["externalUserId"] == external_user_id
    ]
    return found


def dead_letters(driver: LocalDriver) -> list[str]:
    return [o.value["reason"] for o in outputs(driver, OutputTopic.DEAD_LETTER) if o.value]


def changes(driver: LocalDriver, profile_id: str) -> list[str]:
    return [
        o.value["kind"]
        for o in outputs(driver, OutputTopic.PROFILE_CHANGES)
        if o.key == profile_id and o.value is not None
    ]


def run(records: list[bytes], *, seed: int | None = None, partitions: int = 1) -> LocalDriver:
    driver = LocalDriver(shuffle_seed=seed, partitions=partitions)
    driver.replay(records)
    return driver
