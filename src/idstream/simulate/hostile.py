"""Seeded hostile input mixed with valid traffic: records built to break the resolver's keys,
the input policy and the limits (issue #11). Simulation layer: standard library and orjson.

    from idstream.simulate.hostile import HostileConfig, hostile

    for record in hostile(HostileConfig(seed=1, events=20_000)):
        record.key, record.value, record.record_ms
        record.label   # an event type or "malformed:<kind>" (valid traffic, simulate.traffic),
                       # or "hostile:<kind>", kind one of HOSTILE_KINDS
        record.flags   # for hostile records: what exactly, e.g. ("pushRegistrationId", "\\x1f")

Kinds (HOSTILE_KINDS): separator injection (`\\x1f`, `\\x1e`, `\\x00`) in every id field, as an
install `V` next to `V\\x1fP` and as prid `a\\x1fb`/eventId `c` next to prid `a`/eventId `b\\x1fc`;
control, format, bidi, zero-width and BOM characters in identities and in ids; lone
surrogates; invalid UTF-8; giant arrays; deep nesting; huge numbers; timestamps out of range
in both forms; oversize records. One `random.Random(seed)` (and the valid traffic's own seeded
generator): the same config gives the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from idstream.errors import ConfigurationError
from idstream.simulate.config import TrafficConfig
from idstream.simulate.traffic import SimRecord, Traffic, rfc3339

# Key separators a state key could be built with.
SEPARATORS: tuple[str, ...] = ("\x1f", "\x1e", "\x00")
# Every field that holds an id or a name, and the identities.
ID_FIELDS: tuple[str, ...] = (
    "pushRegistrationId",
    "eventId",
    "appCode",
    "identities",
    "tags",
    "attributeKeys",
    "definitionId",
)
# Controls, format characters (zero-width, bidi, BOM, soft hyphen, tags) and a non-character.
FORMAT_CHARACTERS: tuple[str, ...] = (
    "\x00",
    "\x01",
    "\x7f",
    "\x85",
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\ufeff",  # BOM
    "\u00ad",  # soft hyphen
    "\U000e0041",  # tag letter A
    "\ufdd0",  # a non-character
)
LONE_SURROGATES: tuple[bytes, ...] = (
    b"\\ud800",
    b"\\udbff",
    b"\\udc00",
    b"\\udfff",
    b"\\ud83d\\u0041",  # a high surrogate, then no low one
    b"\xed\xa0\x80",  # a surrogate encoded as if UTF-8 (CESU): not UTF-8
)
INVALID_UTF8: tuple[bytes, ...] = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\x80",  # overlong NUL
    b"\xc3\x28",
    b"\xe2\x82",  # truncated
    b"\xf8\x88\x80\x80\x80",
    b"\x80",
)
HUGE_NUMBERS: tuple[bytes, ...] = (
    b"1e400",
    b"-1e400",
    b"18446744073709551616",  # 2**64
    b"-9223372036854775809",  # one below int64
    b"123456789012345678901234567890",
    b"1e308",
    b"1.7976931348623157e309",
)
MAX_TIMESTAMP_MS = 253_402_300_799_999
BAD_TIMESTAMPS: tuple[int | str, ...] = (
    -1,
    -(2**63),
    MAX_TIMESTAMP_MS + 1,
    2**63,
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:00:00+00:01",
    "1970-01-01T00:59:59.999+01:00",
    "9999-12-31T23:59:59.999-00:01",
    "9999-12-31T23:00:00-23:59",
    "0000-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
)

# Kinds and their relative weights (the big ones weigh less: they cost memory, not coverage).
HOSTILE_KINDS: tuple[tuple[str, int], ...] = (
    ("separator_pair", 10),
    ("separator_split", 10),
    ("separator_field", 30),
    ("format_identity", 15),
    ("format_id", 15),
    ("lone_surrogate", 10),
    ("invalid_utf8", 10),
    ("giant_array", 3),
    ("deep_nesting", 6),
    ("huge_number", 8),
    ("timestamp_range", 10),
    ("oversize", 3),
)
OVERSIZE_FROM = 64 * 1024 + 1


@dataclass(frozen=True)
class HostileConfig:
    """`events` records in all, of which about `hostile_share` hostile (in clusters: one
    kind can take several records), the rest valid traffic from `simulate.traffic` with the
    same seed. Oversize records are 64 KiB + 1 … `max_oversize_bytes`; one in `big_every`
    takes the top of that range, the others stay under 4 x 64 KiB."""

    seed: int = 1
    events: int = 20_000
    hostile_share: float = 0.2
    users: int = 500
    malformed_share: float = 0.01
    max_oversize_bytes: int = 1024 * 1024
    big_every: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.hostile_share <= 1.0:
            raise ConfigurationError(
                f"hostile_share must be within [0, 1], got {self.hostile_share}"
            )
        if self.events < 0 or self.users < 1 or self.big_every < 1:
            raise ConfigurationError("events must be >= 0, users and big_every >= 1")
        if self.max_oversize_bytes < OVERSIZE_FROM:
            raise ConfigurationError(f"max_oversize_bytes must be at least {OVERSIZE_FROM}")


Made = list[tuple[bytes, bytes, tuple[str, ...]]]  # (key, value, flags) of one cluster


class Hostile:
    """Iterate to get `config.events` records; `kinds` counts the hostile ones by kind."""

    def __init__(self, config: HostileConfig) -> None:
        self.config = config
        self.kinds: dict[str, int] = {}
        self._rng = random.Random(f"hostile-{config.seed}")
        self._names = [k for k, _ in HOSTILE_KINDS]
        self._weights = [w for _, w in HOSTILE_KINDS]
        self._ids = 0
        self._oversize = 0
        self._now = 0
        # Installs of the valid traffic (pushRegistrationId, appCode), to aim at real ones.
        self._seen: list[tuple[str, str]] = []
        self._makers: dict[str, Callable[[], Made]] = {
            "separator_pair": self._separator_pair,
            "separator_split": self._separator_split,
            "separator_field": self._separator_field,
            "format_identity": self._format_identity,
            "format_id": self._format_id,
            "lone_surrogate": self._lone_surrogate,
            "invalid_utf8": self._invalid_utf8,
            "giant_array": self._giant_array,
            "deep_nesting": self._deep_nesting,
            "huge_number": self._huge_number,
            "timestamp_range": self._timestamp_range,
            "oversize": self._oversize_record,
        }

    def __iter__(self) -> Iterator[SimRecord]:
        config = self.config
        rng = self._rng
        valid = iter(
            Traffic(
                TrafficConfig(
                    seed=config.seed,
                    users=config.users,
                    events=config.events,
                    malformed_share=config.malformed_share,
                )
            )
        )
        emitted = 0
        pending: list[SimRecord] = []
        while emitted < config.events:
            if not pending and config.hostile_share and rng.random() < config.hostile_share:
                kind = rng.choices(self._names, self._weights)[0]
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                label = f"hostile:{kind}"
                pending = [
                    SimRecord(key, value, label, self._now, flags)
                    for key, value, flags in self._makers[kind]()
                ]
            if pending:
                record = pending.pop(0)
            else:
                record = next(valid)
                self._now = record.record_ms
                if not record.malformed and record.label == "install":
                    doc = orjson.loads(record.value)
                    self._seen.append((doc["pushRegistrationId"], doc["appCode"]))
            emitted += 1
            yield record

    # --- building blocks -------------------------------------------------------------------

    def _event_id(self) -> str:
        self._ids += 1
        return f"h{self.config.seed}-{self._ids}"

    def _install(self) -> tuple[str, str]:
        """A real install of the valid traffic (or a new one), as (prid, appCode)."""
        if self._seen and self._rng.random() < 0.7:
            return self._seen[self._rng.randrange(len(self._seen))]
        return f"hostile-device-{self._rng.randrange(1_000_000)}", "shop"

    def _doc(self, kind: str, prid: str, app: str, **extra: Any) -> dict[str, Any]:
        return {
            "eventId": self._event_id(),
            "type": kind,
            "timestamp": self._now,
            "appCode": app,
            "pushRegistrationId": prid,
            **extra,
        }

    def _one(self, doc: dict[str, Any], *flags: str, key: str | None = None) -> Made:
        key = doc["pushRegistrationId"] if key is None else key
        return [(key.encode(), orjson.dumps(doc), flags)]

    def _inside_a_string(self, value: bytes, insert: bytes) -> bytes:
        """`value` with `insert` right after the opening quote of one of its strings."""
        quotes = [i for i in range(len(value)) if value[i] == 0x22]  # no escaped quotes in ours
        at = quotes[2 * self._rng.randrange(len(quotes) // 2)] + 1
        return value[:at] + insert + value[at:]

    def _valid_doc(self) -> dict[str, Any]:
        prid, app = self._install()
        choice = self._rng.randrange(4)
        if choice == 0:
            return self._doc("appLaunch", prid, app, platform="android")
        if choice == 1:
            identity = {"emails": [f"user{self._rng.randrange(10_000)}@example.com"]}
            return self._doc("personalize", prid, app, userIdentity=identity)
        if choice == 2:
            return self._doc("custom", prid, app, definitionId="view", properties={"k": "v"})
        return self._doc("installUpdate", prid, app, customAttributes={"theme": "dark"})

    # --- kinds ---------------------------------------------------------------------------

    def _separator_pair(self) -> Made:
        """An install V and an install V<sep>P in one partition (one Kafka key), both busy.

        P is the eventId of V's personalize, which opens V's new segment: keys joined with the
        separator then make V's held-events prefix (V, P) a prefix of W's keys as well."""
        rng = self._rng
        sep = rng.choice(SEPARATORS)
        v = f"pair-{rng.randrange(1_000_000)}"
        personalize_v = self._doc("personalize", v, "shop", userIdentity=self._email("pv"))
        w = f"{v}{sep}{personalize_v['eventId'] if rng.random() < 0.8 else 'P'}"
        docs = [
            self._doc("install", v, "shop"),
            self._doc("install", w, "shop"),
            personalize_v,
            self._doc("personalize", w, "shop", userIdentity=self._email("pw")),
            self._doc("appLaunch", v, "shop"),
            self._doc("appLaunch", w, "shop"),
            self._doc("custom", v, "shop", definitionId="view"),
            self._doc("custom", w, "shop", definitionId="view"),
            self._doc("installUpdate", v, "shop", customAttributes={"k": 1}),
            self._doc("depersonalize", w, "shop"),
        ]
        return [(v.encode(), orjson.dumps(d), ("pushRegistrationId", sep)) for d in docs]

    def _email(self, prefix: str) -> dict[str, Any]:
        return {"emails": [f"{prefix}{self._rng.randrange(1_000_000)}@example.com"]}

    def _separator_split(self) -> Made:
        """prid a<sep>b with eventId c next to prid a with eventId b<sep>c (same key a)."""
        sep = self._rng.choice(SEPARATORS)
        a = f"split-{self._rng.randrange(1_000_000)}"
        docs = [
            self._doc("install", a, "shop"),
            self._doc("install", f"{a}{sep}b", "shop"),
            {**self._doc("appLaunch", f"{a}{sep}b", "shop"), "eventId": "c"},
            {**self._doc("appLaunch", a, "shop"), "eventId": f"b{sep}c"},
            {**self._doc("custom", a, "shop", definitionId="d"), "eventId": f"b{sep}c"},
            {**self._doc("custom", f"{a}{sep}b", "shop", definitionId="d"), "eventId": "c"},
        ]
        return [(a.encode(), orjson.dumps(d), ("eventId", sep)) for d in docs]

    def _poisoned(self, field: str, bad: str) -> Made:
        """One valid-looking event with `bad` inside the id field `field`."""
        rng = self._rng
        prid, app = self._install()
        spot = rng.randrange(3)  # where in the value: start, middle, end

        def spoil(text: str) -> str:
            at = (0, len(text) // 2, len(text))[spot]
            return text[:at] + bad + text[at:]

        if field == "pushRegistrationId":
            doc = self._doc(rng.choice(("install", "appLaunch")), spoil(prid), app)
            return self._one(doc, field, bad, key=prid)
        if field == "eventId":
            doc = self._doc("appLaunch", prid, app)
            doc["eventId"] = spoil(doc["eventId"])
            return self._one(doc, field, bad)
        if field == "appCode":
            return self._one(self._doc("appLaunch", prid, spoil(app)), field, bad)
        if field == "identities":
            good = f"id{rng.randrange(1_000_000)}@example.com"
            which = rng.randrange(4)
            identity: dict[str, Any]
            if which == 0:
                identity = {"emails": [spoil(good), good]}
            elif which == 1:
                identity = {"externalUserId": spoil(f"u{rng.randrange(1_000_000)}")}
            elif which == 2:
                identity = {"phones": [spoil("+385912345678")], "emails": [good]}
            else:
                doc = self._doc(
                    "personUpdate",
                    prid,
                    app,
                    identitiesAdded={"emails": [spoil(good)]},
                    identitiesReplaced=[{"kind": "email", "old": spoil(good), "new": spoil(good)}],
                )
                return self._one(doc, field, bad)
            return self._one(self._doc("personalize", prid, app, userIdentity=identity), field, bad)
        if field == "tags":
            doc = self._doc("personUpdate", prid, app, tagsAdded=["vip", spoil("beta")])
            return self._one(doc, field, bad)
        if field == "attributeKeys":
            where = rng.randrange(3)
            if where == 0:
                doc = self._doc("installUpdate", prid, app, customAttributes={spoil("theme"): 1})
            elif where == 1:
                props = {"k": 1, spoil("amount"): 2}
                doc = self._doc("custom", prid, app, definitionId="buy", properties=props)
            else:
                attrs = {"customAttributes": {spoil("tier"): "gold"}}
                doc = self._doc("personUpdate", prid, app, attributes=attrs)
            return self._one(doc, field, bad)
        if field == "definitionId":
            doc = self._doc("custom", prid, app, definitionId=spoil("view_item"))
            return self._one(doc, field, bad)
        raise ValueError(f"unknown id field {field!r}")

    def _separator_field(self) -> Made:
        return self._poisoned(self._rng.choice(ID_FIELDS), self._rng.choice(SEPARATORS))

    def _format_identity(self) -> Made:
        return self._poisoned("identities", self._rng.choice(FORMAT_CHARACTERS))

    def _format_id(self) -> Made:
        fields = [f for f in ID_FIELDS if f != "identities"]
        return self._poisoned(self._rng.choice(fields), self._rng.choice(FORMAT_CHARACTERS))

    def _lone_surrogate(self) -> Made:
        doc = self._valid_doc()
        bad = self._rng.choice(LONE_SURROGATES)
        value = self._inside_a_string(orjson.dumps(doc), bad)
        return [(doc["pushRegistrationId"].encode(), value, (bad.decode("latin-1"),))]

    def _invalid_utf8(self) -> Made:
        doc = self._valid_doc()
        bad = self._rng.choice(INVALID_UTF8)
        value = self._inside_a_string(orjson.dumps(doc), bad)
        return [(doc["pushRegistrationId"].encode(), value, (bad.hex(),))]

    def _giant_array(self) -> Made:
        rng = self._rng
        prid, app = self._install()
        variant = rng.randrange(5)
        if variant == 0:  # within the byte limit, far over the list limit
            doc = self._doc(
                "personalize",
                prid,
                app,
                userIdentity={"emails": [f"e{i}@x.io" for i in range(3000)]},
            )
        elif variant == 1:
            doc = self._doc("personUpdate", prid, app, tagsAdded=[f"t{i}" for i in range(20_000)])
        elif variant == 2:
            replaced = [{"kind": "phone", "old": "1", "new": "2"}] * 1500
            doc = self._doc("personUpdate", prid, app, identitiesReplaced=replaced)
        elif variant == 3:  # an array where an object must be
            return [(prid.encode(), orjson.dumps([0] * 30_000), ("top-level",))]
        else:
            props = {f"p{i}": i for i in range(5000)}
            doc = self._doc("custom", prid, app, definitionId="d", properties=props)
        return self._one(doc, str(variant))

    def _deep_nesting(self) -> Made:
        rng = self._rng
        doc = self._valid_doc()
        depth = rng.choice((100, 1000, 10_000, 30_000))
        variant = rng.randrange(4)
        head = orjson.dumps(doc)[:-1]
        if variant == 0:  # an array in an attribute value
            nested = b"[" * depth + b"]" * depth
            value = head + b',"properties":{"deep":' + nested + b"}}"
        elif variant == 1:  # objects, in an unknown field before `type` matters
            nested = b'{"a":' * depth + b"1" + b"}" * depth
            value = b'{"zzz":' + nested + b"," + head[1:] + b"}"
        elif variant == 2:  # never closed
            value = head + b',"x":' + b"[" * depth
        else:  # the whole record nested
            value = b"[" * depth + orjson.dumps(doc) + b"]" * depth
        return [(doc["pushRegistrationId"].encode(), value, (str(depth), str(variant)))]

    def _huge_number(self) -> Made:
        rng = self._rng
        prid, app = self._install()
        number = rng.choice(HUGE_NUMBERS)
        where = rng.randrange(3)
        doc = self._doc("installUpdate", prid, app, customAttributes={"n": 0})
        raw = orjson.dumps(doc)
        if where == 0:
            value = raw.replace(b'"n":0', b'"n":' + number)
        elif where == 1:
            value = raw.replace(b'"timestamp":' + str(self._now).encode(), b'"timestamp":' + number)
        else:
            value = raw[:-1] + b',"primaryDevice":' + number + b"}"
        return [(prid.encode(), value, (number.decode(), str(where)))]

    def _timestamp_range(self) -> Made:
        rng = self._rng
        prid, app = self._install()
        stamp = rng.choice(BAD_TIMESTAMPS)
        doc = self._doc(rng.choice(("appLaunch", "install", "custom")), prid, app)
        if doc["type"] == "custom":
            doc["definitionId"] = "view"
        doc["timestamp"] = stamp
        # A date-time of the same instant as a valid one, too: the decoder must agree.
        if rng.random() < 0.2:
            doc["timestamp"] = rfc3339(self._now)
            return self._one(doc, "valid-rfc3339")
        return self._one(doc, str(stamp))

    def _oversize_record(self) -> Made:
        rng = self._rng
        self._oversize += 1
        top = self.config.max_oversize_bytes
        if self._oversize % self.config.big_every == 0:
            size = top
        else:
            size = rng.randrange(OVERSIZE_FROM, min(top, 4 * 64 * 1024) + 1)
        doc = self._valid_doc()
        raw = orjson.dumps({**doc, "platform": ""})
        value = raw.replace(b'"platform":""', b'"platform":"' + b"x" * (size - len(raw)) + b'"')
        return [(doc["pushRegistrationId"].encode(), value, (str(size),))]


def hostile(config: HostileConfig) -> Iterator[SimRecord]:
    """Yield `config.events` records, hostile ones among valid traffic; `Hostile` counts kinds."""
    return iter(Hostile(config))
