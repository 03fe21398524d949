"""Compare ways to decode and validate input events on one seeded corpus.

Run: .venv/bin/python bench/decode.py [--events N] [--runs R]
Candidates (each must return the same accept/reject verdict on every record):
  msgspec     idstream.codecs.decode (msgspec typed decode, tagged union; the one in use)
  orjson+hand orjson.loads + hand-written validation + dict -> domain conversion
  fastjsonschema  orjson.loads + compiled schemas/input/event.schema.json + conversion
Writes bench/results/decode-<utc>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fastjsonschema
import msgspec
import orjson

from idstream.codecs import DEFAULT_LIMITS, Limits, Rejection, decode
from idstream.codecs import decoder as decode_module
from idstream.codecs.decoder import _JSON_STRING, _timestamp_ms
from idstream.codecs.limits import MAX_NUMBER, MAX_TIMESTAMP_MS, MIN_NUMBER
from idstream.codecs.wire import RFC3339_PATTERN
from idstream.domain.events import (
    EMPTY,
    PERSON_STANDARD_ATTRIBUTES,
    STANDARD_PROPERTIES,
    SYSTEM_DATA_FIELDS,
    AnyEvent,
    AppCode,
    AppLaunch,
    Custom,
    Depersonalize,
    EventId,
    Forget,
    IdentityKind,
    IdentityReplacement,
    Install,
    InstallUpdate,
    Personalize,
    PersonAttributes,
    PersonUpdate,
    PushRegistrationId,
    Uninstall,
    UserIdentity,
)
from idstream.domain.reasons import RejectReason

ROOT = Path(__file__).resolve().parent.parent
MIX = {
    "appLaunch": 55.0,
    "custom": 30.0,
    "installUpdate": 6.0,
    "install": 4.0,
    "personalize": 2.5,
    "depersonalize": 1.0,
    "personUpdate": 1.0,
    "uninstall": 0.5,
}
INVALID_SHARE = 0.03

# ---------------------------------------------------------------- corpus


def _token(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "-_", k=n))


def _event(
    rng: random.Random, event_type: str, install: tuple[str, str], now: int
) -> dict[str, Any]:
    push_id, app = install
    ev: dict[str, Any] = {
        "eventId": f"{_token(rng, 8)}-{_token(rng, 4)}-{_token(rng, 4)}-{_token(rng, 12)}",
        "type": event_type,
        "timestamp": now + rng.randrange(-5_000, 5_000),
        "appCode": app,
        "pushRegistrationId": push_id,
        "platform": "android" if push_id.startswith("f") else "ios",
        "sdkVersion": rng.choice(["5.2.1", "5.3.0", "4.9.9"]),
        "applicationVersion": rng.choice(["3.14.0", "3.15.2"]),
        "osVersion": rng.choice(["14", "13", "17.4"]),
        "deviceModel": rng.choice(["Pixel 8", "SM-S918B", "iPhone15,2"]),
    }
    if rng.random() < 0.05:
        stamp = datetime.fromtimestamp(ev["timestamp"] / 1000, tz=UTC)
        ev["timestamp"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if event_type in ("install", "installUpdate"):
        ev["systemData"] = {
            "platform": ev["platform"],
            "osVersion": ev["osVersion"],
            "deviceManufacturer": rng.choice(["Google", "Samsung", "Apple"]),
            "deviceModel": ev["deviceModel"],
            "pushRegistrationEnabled": True,
            "notificationsEnabled": rng.random() < 0.8,
        }
    if event_type == "installUpdate":
        ev["customAttributes"] = {"theme": rng.choice(["dark", "light"]), "fontScale": 1.1}
        ev["primaryDevice"] = rng.random() < 0.5
    elif event_type == "personalize":
        user = _token(rng, 6).lower()
        ev["userIdentity"] = {"externalUserId": f"u-{user}", "emails": [f"{user}@example.com"]}
        if rng.random() < 0.5:
            ev["userIdentity"]["phones"] = [f"+3519{rng.randrange(10**7, 10**8)}"]
        ev["userAttributes"] = {
            "firstName": user.title(),
            "birthday": "1990-04-01",
            "customAttributes": {"loyaltyTier": "gold", "newsletter": True},
        }
    elif event_type == "personUpdate":
        ev["attributes"] = {"city": rng.choice(["Lisbon", "Porto"]), "lastName": None}
        ev["tagsAdded"] = rng.sample(["vip", "churn-risk", "beta", "promo"], 2)
    elif event_type == "custom":
        ev["definitionId"] = rng.choice(["cart_checkout", "view_item", "search", "add_to_cart"])
        ev["properties"] = {
            "sku": f"SKU-{rng.randrange(10**5)}",
            "price": round(rng.uniform(1, 200), 2),
            "qty": rng.randrange(1, 5),
            "currency": "EUR",
            "inStock": rng.random() < 0.9,
        }
        if rng.random() < 0.2:
            ev["properties"]["url"] = f"https://shop.example/p/{rng.randrange(10**5)}"
    return ev


def _invalid(rng: random.Random, good: dict[str, Any]) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return orjson.dumps(good)[:-7]  # truncated
    if choice == 1:
        return orjson.dumps({**good, "type": "pageView"})
    if choice == 2:
        return orjson.dumps({**good, "timestamp": "yesterday"})
    if choice == 3:
        return orjson.dumps({**good, "extra": 1})
    if choice == 4:
        return orjson.dumps({**good, "eventId": "x" * 2000})
    bad = dict(good)
    del bad["pushRegistrationId"]
    return orjson.dumps(bad)


def build_corpus(n: int, seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    installs = [
        (
            f"{rng.choice('fa')}{_token(rng, 21)}:APA91b{_token(rng, 134)}",
            rng.choice(["shop-android", "shop-ios", "news-android"]),
        )
        for _ in range(max(1, n // 20))
    ]
    types, weights = list(MIX), list(MIX.values())
    now = 1_732_352_400_000
    out = []
    for i in range(n):
        ev = _event(rng, rng.choices(types, weights)[0], rng.choice(installs), now + i * 50)
        out.append(_invalid(rng, ev) if rng.random() < INVALID_SHARE else orjson.dumps(ev))
    return out


# ---------------------------------------------------------------- shared dict -> domain


class Invalid(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _proxy(raw: dict[str, Any] | None) -> Any:
    return MappingProxyType(raw) if raw else EMPTY


def _identity(raw: dict[str, Any]) -> UserIdentity:
    return UserIdentity(
        external_user_id=raw.get("externalUserId"),
        emails=tuple(raw.get("emails", ())),
        phones=tuple(raw.get("phones", ())),
    )


def _attributes(raw: dict[str, Any] | None) -> PersonAttributes:
    if not raw:
        return PersonAttributes()
    standard = {k: v for k, v in raw.items() if k != "customAttributes"}
    return PersonAttributes(standard=_proxy(standard), custom=_proxy(raw.get("customAttributes")))


def to_event(doc: dict[str, Any]) -> AnyEvent:
    common: dict[str, Any] = {
        "event_id": EventId(doc["eventId"]),
        "timestamp": _timestamp_ms(doc["timestamp"]),
        "app_code": AppCode(doc["appCode"]),
        "push_registration_id": PushRegistrationId(doc["pushRegistrationId"]),
        "standard_properties": _proxy({k: doc[k] for k in STANDARD_PROPERTIES if k in doc}),
    }
    t = doc["type"]
    if t == "appLaunch":
        return AppLaunch(**common)
    if t == "custom":
        return Custom(
            **common, definition_id=doc["definitionId"], properties=_proxy(doc.get("properties"))
        )
    if t == "install":
        return Install(**common, system_data=_proxy(doc.get("systemData")))
    if t == "installUpdate":
        return InstallUpdate(
            **common,
            system_data=_proxy(doc.get("systemData")),
            custom_attributes=_proxy(doc.get("customAttributes")),
            primary_device=doc.get("primaryDevice"),
        )
    if t == "personalize":
        return Personalize(
            **common,
            user_identity=_identity(doc["userIdentity"]),
            user_attributes=_attributes(doc.get("userAttributes")),
            force_depersonalize=doc.get("forceDepersonalize", False),
        )
    if t == "personUpdate":
        return PersonUpdate(
            **common,
            attributes=_attributes(doc.get("attributes")),
            tags_added=tuple(doc.get("tagsAdded", ())),
            tags_removed=tuple(doc.get("tagsRemoved", ())),
            identities_added=_identity(doc.get("identitiesAdded", {})),
            identities_removed=_identity(doc.get("identitiesRemoved", {})),
            identities_replaced=tuple(
                IdentityReplacement(IdentityKind(r["kind"]), r["old"], r["new"])
                for r in doc.get("identitiesReplaced", ())
            ),
        )
    if t == "depersonalize":
        return Depersonalize(**common)
    if t == "uninstall":
        return Uninstall(**common)
    raw = doc.get("userIdentity")
    return Forget(**common, user_identity=None if raw is None else _identity(raw))


# ---------------------------------------------------------------- (a) hand-written validation

S = RejectReason.SCHEMA_VIOLATION
BIG = RejectReason.OVERSIZE
_RFC3339 = re.compile(RFC3339_PATTERN)


def _str(x: Any, path: str, lim: Limits, min1: bool = False) -> None:
    if type(x) is not str:
        raise Invalid(S, f"{path}: expected a string")
    if len(x) > lim.max_string_chars:
        raise Invalid(BIG, f"{path}: longer than {lim.max_string_chars}")
    if min1 and not x:
        raise Invalid(S, f"{path}: empty")


def _bool(x: Any, path: str, lim: Limits) -> None:
    if type(x) is not bool:
        raise Invalid(S, f"{path}: expected a boolean")


def _value(x: Any, path: str, lim: Limits) -> None:
    t = type(x)
    if t is str:
        _str(x, path, lim)
    elif t is int or t is float:
        if not (MIN_NUMBER <= x <= MAX_NUMBER) or (t is float and not math.isfinite(x)):
            raise Invalid(S, f"{path}: number out of range")
    elif x is not None and t is not bool:
        raise Invalid(S, f"{path}: expected a scalar attribute value")


def _map(x: Any, path: str, lim: Limits) -> None:
    if type(x) is not dict:
        raise Invalid(S, f"{path}: expected an object")
    if len(x) > lim.max_attributes:
        raise Invalid(BIG, f"{path}: more than {lim.max_attributes} entries")
    for k, v in x.items():
        _str(k, f"{path}.{k}", lim, min1=True)
        _value(v, f"{path}.{k}", lim)


def _list(
    maximum: Callable[[Limits], int], item: Callable[[Any, str, Limits], None]
) -> Callable[[Any, str, Limits], None]:
    def check(x: Any, path: str, lim: Limits) -> None:
        if type(x) is not list:
            raise Invalid(S, f"{path}: expected an array")
        if len(x) > maximum(lim):
            raise Invalid(BIG, f"{path}: too many items")
        for i, v in enumerate(x):
            item(v, f"{path}[{i}]", lim)

    return check


def _object(
    fields: dict[str, Callable[[Any, str, Limits], None]], required: tuple[str, ...] = ()
) -> Callable[[Any, str, Limits], None]:
    def check(x: Any, path: str, lim: Limits) -> None:
        if type(x) is not dict:
            raise Invalid(S, f"{path}: expected an object")
        for name in required:
            if name not in x:
                raise Invalid(S, f"{path}.{name}: required")
        for k, v in x.items():
            validator = fields.get(k)
            if validator is None:
                raise Invalid(S, f"{path}: unknown field {k!r}")
            validator(v, f"{path}.{k}", lim)

    return check


def _nullable_str(x: Any, path: str, lim: Limits) -> None:
    if x is not None:
        _str(x, path, lim)


def _kind(x: Any, path: str, lim: Limits) -> None:
    if x not in ("externalUserId", "email", "phone") or type(x) is not str:
        raise Invalid(S, f"{path}: unknown identity kind")


_ids = _list(lambda lim: lim.max_identities_per_kind, _str)
_tags = _list(lambda lim: lim.max_tags, _str)
_identity_fields = _object({"externalUserId": _str, "emails": _ids, "phones": _ids})


def _user_identity(x: Any, path: str, lim: Limits) -> None:
    _identity_fields(x, path, lim)
    if "externalUserId" not in x and not x.get("emails") and not x.get("phones"):
        raise Invalid(S, f"{path}: needs at least one identity")


_system_data = _object({k: (_str if t is str else _bool) for k, t in SYSTEM_DATA_FIELDS.items()})
_person = _object(
    {**{k: _nullable_str for k in PERSON_STANDARD_ATTRIBUTES}, "customAttributes": _map}
)
_replacement = _object({"kind": _kind, "old": _str, "new": _str}, ("kind", "old", "new"))


def _timestamp(x: Any, path: str, lim: Limits) -> None:
    if type(x) is int:
        if not 0 <= x <= MAX_TIMESTAMP_MS:
            raise Invalid(S, f"{path}: out of range")
    elif type(x) is str:
        if not _RFC3339.match(x):
            raise Invalid(S, f"{path}: not RFC 3339")
    else:
        raise Invalid(S, f"{path}: expected integer or string")


def _schema_version(x: Any, path: str, lim: Limits) -> None:
    if type(x) is not int or x != 1:
        raise Invalid(S, f"{path}: unsupported")


def _common() -> dict[str, Callable[[Any, str, Limits], None]]:
    def name(x: Any, path: str, lim: Limits) -> None:
        _str(x, path, lim, min1=True)

    out: dict[str, Callable[[Any, str, Limits], None]] = {
        "type": lambda x, p, lim: None,
        "schemaVersion": _schema_version,
        "eventId": name,
        "timestamp": _timestamp,
        "appCode": name,
        "pushRegistrationId": name,
    }
    out.update({k: _str for k in STANDARD_PROPERTIES})
    return out


_REQ = ("eventId", "timestamp", "appCode", "pushRegistrationId")
_C = _common()
_TYPES: dict[str, tuple[Callable[[Any, str, Limits], None], tuple[str, ...]]] = {
    "appLaunch": (_object(_C, _REQ), ()),
    "depersonalize": (_object(_C, _REQ), ()),
    "uninstall": (_object(_C, _REQ), ()),
    "install": (_object({**_C, "systemData": _system_data}, _REQ), ()),
    "installUpdate": (
        _object(
            {**_C, "systemData": _system_data, "customAttributes": _map, "primaryDevice": _bool},
            _REQ,
        ),
        ("systemData", "customAttributes", "primaryDevice"),
    ),
    "personalize": (
        _object(
            {
                **_C,
                "userIdentity": _user_identity,
                "userAttributes": _person,
                "forceDepersonalize": _bool,
            },
            (*_REQ, "userIdentity"),
        ),
        (),
    ),
    "personUpdate": (
        _object(
            {
                **_C,
                "attributes": _person,
                "tagsAdded": _tags,
                "tagsRemoved": _tags,
                "identitiesAdded": _user_identity,
                "identitiesRemoved": _user_identity,
                "identitiesReplaced": _list(lambda lim: lim.max_identities_per_kind, _replacement),
            },
            _REQ,
        ),
        (
            "attributes",
            "tagsAdded",
            "tagsRemoved",
            "identitiesAdded",
            "identitiesRemoved",
            "identitiesReplaced",
        ),
    ),
    "custom": (
        _object({**_C, "definitionId": _C["eventId"], "properties": _map}, (*_REQ, "definitionId")),
        (),
    ),
    "forget": (_object({**_C, "userIdentity": _user_identity}, _REQ), ()),
}


def _dict_keys(doc: Any) -> int:
    count = 0
    for v in doc.values():
        if type(v) is dict:
            count += _dict_keys(v)
        elif type(v) is list and v and type(v[0]) is dict:
            count += sum(_dict_keys(item) for item in v)
    return count + len(doc)


def _duplicates(value: bytes, keys: int) -> bool:
    """The same colon-count check idstream.codecs.decode uses, over a parsed dict."""
    if (
        value.count(b'":') == keys
        and b" :" not in value
        and b"\n" not in value
        and b"\t" not in value
        and b"\r" not in value
    ):
        return False
    outside = _JSON_STRING.sub(b"", value) if b'\\"' in value else b"".join(value.split(b'"')[::2])
    return outside.count(b":") != keys


def decode_hand(value: bytes, limits: Limits = DEFAULT_LIMITS) -> AnyEvent | Rejection:
    if len(value) > limits.max_record_bytes:
        return Rejection(BIG, "record too large")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejection(RejectReason.MALFORMED_JSON, str(exc))
    if type(doc) is not dict:
        return Rejection(S, "$: expected an object")
    t = doc.get("type")
    if type(t) is not str:
        return Rejection(S, "$.type: required string")
    spec = _TYPES.get(t)
    if spec is None:
        return Rejection(RejectReason.UNKNOWN_TYPE, f"unknown type {t!r}")
    check, one_of = spec
    try:
        check(doc, "$", limits)
        if _duplicates(value, _dict_keys(doc)):
            raise Invalid(RejectReason.MALFORMED_JSON, "duplicate object key")
        if one_of and not any(k in doc for k in one_of):
            raise Invalid(S, "$: needs at least one of " + ", ".join(one_of))
        return to_event(doc)
    except Invalid as exc:
        return Rejection(exc.reason, str(exc))
    except ValueError as exc:  # timestamp that matches the pattern but is no date
        return Rejection(S, str(exc))


# ---------------------------------------------------------------- (c) fastjsonschema


def _fastjsonschema() -> Callable[[bytes], AnyEvent | Rejection]:
    schema = json.loads((ROOT / "schemas/input/event.schema.json").read_text())
    validate = fastjsonschema.compile(schema)

    def decode_fjs(value: bytes) -> AnyEvent | Rejection:
        if len(value) > DEFAULT_LIMITS.max_record_bytes:
            return Rejection(BIG, "record too large")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return Rejection(RejectReason.MALFORMED_JSON, str(exc))
        if type(doc) is dict and type(doc.get("type")) is str and doc["type"] not in _TYPES:
            return Rejection(RejectReason.UNKNOWN_TYPE, "unknown type")
        try:
            # Count keys first: fastjsonschema fills in schema defaults while validating.
            duplicates = type(doc) is dict and _duplicates(value, _dict_keys(doc))
            validate(doc)
            if duplicates:
                raise Invalid(RejectReason.MALFORMED_JSON, "duplicate object key")
            # fastjsonschema, like JSON Schema, counts 1.0 as an integer; the contract does not.
            if type(doc["timestamp"]) is float:
                raise Invalid(S, "$.timestamp: float")
            return to_event(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            return Rejection(S, exc.message)
        except (Invalid, ValueError) as exc:
            return Rejection(S, str(exc))

    return decode_fjs


# ---------------------------------------------------------------- run


def _without_duplicate_check(value: bytes) -> object:
    """msgspec as in use, minus the duplicate-key check: shows what that check costs."""
    real = decode_module._has_duplicate_keys
    decode_module._has_duplicate_keys = lambda value, wire: False
    try:
        return decode(value)
    finally:
        decode_module._has_duplicate_keys = real


def _time(fn: Callable[[bytes], object], corpus: list[bytes]) -> float:
    start = time.perf_counter()
    for raw in corpus:
        fn(raw)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    corpus = build_corpus(args.events, args.seed)
    candidates: dict[str, Callable[[bytes], object]] = {
        "msgspec": decode,
        "msgspec, no duplicate-key check": _without_duplicate_check,
        "orjson+hand": decode_hand,
        "fastjsonschema": _fastjsonschema(),
    }
    # Same verdict on every record, or the comparison means nothing.
    verdicts = {
        name: [isinstance(fn(raw), Rejection) for raw in corpus] for name, fn in candidates.items()
    }
    reference = verdicts["msgspec"]
    disagreements = {
        name: sum(a != b for a, b in zip(v, reference, strict=True)) for name, v in verdicts.items()
    }
    rejected = sum(reference)
    print(
        f"corpus: {len(corpus)} records, {rejected} rejected, "
        f"{sum(map(len, corpus)) / len(corpus):.0f} B mean"
    )

    results: dict[str, Any] = {}
    for name, fn in candidates.items():
        _time(fn, corpus[:1000])  # warm caches
        rates = [len(corpus) / _time(fn, corpus) for _ in range(args.runs)]
        median = statistics.median(rates)
        spread = (max(rates) - min(rates)) / median
        results[name] = {
            "median_events_per_s": round(median),
            "min": round(min(rates)),
            "max": round(max(rates)),
            "spread_pct": round(100 * spread, 1),
            "us_per_event": round(1e6 / median, 2),
            "disagreements": disagreements[name],
        }
        print(
            f"{name:>32}: {median:>10,.0f} events/s  ({1e6 / median:5.2f} us/event, "
            f"spread {100 * spread:4.1f}%, disagreements {disagreements[name]})"
        )

    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "bench": "decode",
        "utc": stamp,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "orjson": orjson.__version__,
            "msgspec": msgspec.__version__,
            "fastjsonschema": fastjsonschema.VERSION,
        },
        "events": len(corpus),
        "rejected": rejected,
        "runs": args.runs,
        "seed": args.seed,
        "results": results,
    }
    path = out_dir / f"decode-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 1 if any(disagreements.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
