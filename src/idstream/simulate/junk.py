"""Bad input the simulator mixes in: blocklisted identities and malformed records.

Simulation layer. Values follow SPEC §4.3 (the default identity blocklist); malformed
records are what a decoder must send to the dead-letter topic without stopping.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

# Identity values the default blocklist rejects, by kind (SPEC §4.3).
JUNK_EMAILS: tuple[str, ...] = (
    "test@test.com",
    "null",
    "undefined",
    '"none"',
    "email",
    " ",
    "TEST@TEST.COM",
)
JUNK_EXTERNAL_IDS: tuple[str, ...] = (
    "null",
    "undefined",
    "0",
    "-1",
    "anonymous",
    "guest",
    "not_authenticated",
    "[object Object]",
    '"null"',
    "NaN",
    "id",
    "",
)
JUNK_PHONES: tuple[str, ...] = ("000-000", "0", "-1", "--", "null", "'0000'")

# Malformed record kinds and their relative weights.
MALFORMED_KINDS: tuple[tuple[str, int], ...] = (
    ("invalid_json", 30),
    ("wrong_type", 25),
    ("unknown_type", 15),
    ("missing_field", 15),
    ("oversize", 10),
    ("not_object", 5),
)

OVERSIZE_BYTES = 64 * 1024


def junk_identity(rng: random.Random, all_junk: bool) -> dict[str, Any]:
    """A userIdentity with one blocklisted value, or with nothing but blocklisted values."""
    kind = rng.randrange(3)
    if all_junk:
        identity: dict[str, Any] = {"externalUserId": rng.choice(JUNK_EXTERNAL_IDS)}
        if kind:
            identity["emails"] = [rng.choice(JUNK_EMAILS)]
        if kind == 2:
            identity["phones"] = [rng.choice(JUNK_PHONES)]
        return identity
    if kind == 0:
        return {"externalUserId": rng.choice(JUNK_EXTERNAL_IDS)}
    if kind == 1:
        return {"emails": [rng.choice(JUNK_EMAILS)]}
    return {"phones": [rng.choice(JUNK_PHONES)]}


def malformed_value(rng: random.Random, kind: str, valid: dict[str, Any]) -> bytes:
    """Spoil a valid event dict in the way `kind` names; the result never holds a newline."""
    if kind == "invalid_json":
        text = orjson.dumps(valid)
        variant = rng.randrange(4)
        if variant == 0:
            return text[: rng.randrange(1, len(text) - 1)]
        if variant == 1:
            return text.replace(b'"', b"'")
        if variant == 2:
            return text + b"}garbage"
        return b"\xff\xfe" + text[2:]
    spoiled = dict(valid)
    if kind == "wrong_type":
        variant = rng.randrange(5)
        if variant == 0:
            spoiled["timestamp"] = rng.choice((True, "yesterday", {"ms": 1}, -5, 1.5e30))
        elif variant == 1:
            spoiled["eventId"] = rng.randrange(1_000_000)
        elif variant == 2:
            spoiled["pushRegistrationId"] = [spoiled["pushRegistrationId"]]
        elif variant == 3:
            spoiled["appCode"] = None
        else:
            spoiled["type"] = 7
    elif kind == "unknown_type":
        spoiled["type"] = rng.choice(("purchase", "AppLaunch", "install_update", ""))
    elif kind == "missing_field":
        field = rng.choice(("eventId", "type", "timestamp", "appCode", "pushRegistrationId"))
        del spoiled[field]
    elif kind == "oversize":
        # Valid JSON of a known type, only too big: the size limit alone must reject it.
        spoiled["type"] = "custom"
        spoiled["definitionId"] = "blob"
        chunk = "x" * 1000
        count = OVERSIZE_BYTES // 1000 + 1 + rng.randrange(8)
        spoiled["properties"] = {f"p{i}": chunk for i in range(count)}
    elif kind == "not_object":
        return orjson.dumps(rng.choice(([valid], "appLaunch", 42, None)))
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return orjson.dumps(spoiled)
