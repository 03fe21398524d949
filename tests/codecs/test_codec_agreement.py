"""Schema <-> decoder agreement on generated inputs (hypothesis, derandomized).

Valid events (built to mirror schemas/input) must pass both; broken ones (wrong types,
missing or unknown fields, nesting, huge strings, bad UTF-8, NaN, duplicate keys,
truncation, random bytes) must get the same verdict from both, and the decoder must
return a Rejection, never raise. About 11,300 bad inputs in all (counted below).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from idstream.codecs import Rejection, decode, encode_record, event_to_wire
from tests.codecs import oracle
from tests.codecs.strategies import (
    MAX_TIMESTAMP_MS,
    Doc,
    any_json_scalar,
    forbidden_character,
    get,
    nested_junk,
    paths,
    removed,
    replaced,
    rfc3339,
    valid_event,
)

SETTINGS: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
# A tally of the bad inputs each test saw, to show the suite reaches its 10,000.
BAD_INPUTS: dict[str, int] = {}

COMMON_REQUIRED = ("eventId", "type", "timestamp", "appCode", "pushRegistrationId")
TYPE_REQUIRED = {"personalize": ("userIdentity",), "custom": ("definitionId",)}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def verdicts(raw: bytes) -> tuple[bool, bool]:
    """(decoder accepts, schema accepts); the decoder must not raise."""
    result = decode(raw)
    return not isinstance(result, Rejection), oracle.accepts(raw)


def count(test: str) -> None:
    BAD_INPUTS[test] = BAD_INPUTS.get(test, 0) + 1


@settings(max_examples=800, **SETTINGS)
@given(valid_event)
def test_valid_events_pass_both_and_round_trip(doc: Doc) -> None:
    raw = dumps(doc)
    event = decode(raw)
    assert not isinstance(event, Rejection), (event, doc)
    assert oracle.accepts(raw), doc
    assert decode(encode_record(event_to_wire(event))) == event


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(mutation, bytes, surely invalid) from a valid event."""
    doc = draw(valid_event)
    kind = draw(
        st.sampled_from(
            [
                "wrong type",
                "nesting",
                "drop required",
                "unknown field",
                "huge string",
                "drop any",
                "timestamp",
                "forbidden character",
                "timestamp range",
            ]
        )
    )
    spots = paths(doc)
    if kind == "forbidden character":
        # in an id or a name: the whole record is refused (identity values are not names)
        path = draw(st.sampled_from(_name_spots(doc)))
        bad = draw(forbidden_character)
        if path[-1] == KEY:
            attributes = get(doc, path[:-2])
            key = path[-2]
            where = draw(st.integers(0, len(key)))
            doc = replaced(doc, path[:-2], {k: v for k, v in attributes.items() if k != key})
            get(doc, path[:-2])[key[:where] + bad + key[where:]] = attributes[key]
            return kind, dumps(doc), True
        value = get(doc, path)
        where = draw(st.integers(0, len(value)))
        return kind, dumps(replaced(doc, path, value[:where] + bad + value[where:])), True
    if kind == "timestamp range":
        # just outside either bound, as an integer or as a date-time whose offset crosses it
        stamp = draw(
            st.sampled_from(
                [
                    -1,
                    MAX_TIMESTAMP_MS + 1,
                    "1969-12-31T23:59:59.999Z",
                    "1970-01-01T00:00:00+00:01",
                    "1970-01-01T00:59:59.999+01:00",
                    "9999-12-31T23:59:59.999-00:01",
                    "9999-12-31T23:00:00-01:00",
                ]
            )
        )
        return kind, dumps({**doc, "timestamp": stamp}), True
    if kind == "wrong type":
        path = draw(st.sampled_from(spots))
        return kind, dumps(replaced(doc, path, draw(any_json_scalar))), False
    if kind == "nesting":
        # no position in the contract takes an array of objects or an object holding arrays
        scalar_spots = [p for p in spots if not isinstance(get(doc, p), dict | list)]
        path = draw(st.sampled_from(scalar_spots))
        return kind, dumps(replaced(doc, path, draw(nested_junk))), True
    if kind == "drop required":
        required = COMMON_REQUIRED + TYPE_REQUIRED.get(doc["type"], ())
        return kind, dumps(removed(doc, (draw(st.sampled_from(required)),))), True
    if kind == "unknown field":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in doc))
        return kind, dumps({**doc, name: draw(any_json_scalar)}), True
    if kind == "huge string":
        strings = [p for p in spots if isinstance(get(doc, p), str)]
        path = draw(st.sampled_from(strings))
        size = draw(st.sampled_from([1025, 1500, 5000]))
        return kind, dumps(replaced(doc, path, "x" * size)), True
    if kind == "timestamp":
        # text around a valid date-time, or a valid one with one character changed
        stamp = draw(rfc3339())
        junk = draw(st.sampled_from(["\n", " ", "x", "\t", "Z", "0", "\u00a0"]))
        where = draw(st.integers(0, len(stamp)))
        stamp = draw(
            st.sampled_from([stamp + junk, junk + stamp, stamp[:where] + junk + stamp[where + 1 :]])
        )
        return kind, dumps({**doc, "timestamp": stamp}), False
    path = draw(st.sampled_from(spots))
    return kind, dumps(removed(doc, path)), False


@settings(max_examples=2000, **SETTINGS)
@given(mutated())
def test_mutated_documents_agree(case: tuple[str, bytes, bool]) -> None:
    kind, raw, surely_invalid = case
    decoder_ok, schema_ok = verdicts(raw)
    assert decoder_ok == schema_ok, (kind, raw[:500])
    if surely_invalid:
        assert not decoder_ok, (kind, raw[:500])
    if not schema_ok:
        count("mutated")


KEY = object()  # a path ending (key, KEY) names the key itself, not its value
NAME_FIELDS = (
    "eventId",
    "appCode",
    "pushRegistrationId",
    "definitionId",
    "tagsAdded",
    "tagsRemoved",
)
MAPS = ("customAttributes", "properties")


def _is_name(doc: Doc, path: tuple[Any, ...]) -> bool:
    value = get(doc, path)
    if not isinstance(value, str):
        return False
    return path[0] in NAME_FIELDS


def _name_spots(doc: Doc) -> list[tuple[Any, ...]]:
    spots = [p for p in paths(doc) if _is_name(doc, p)]
    for p in paths(doc):
        if p[-1] in MAPS and isinstance(get(doc, p), dict):
            spots.extend((*p, key, KEY) for key in get(doc, p) if key)
    return spots


def _duplicate_first_key(raw: bytes) -> bytes:
    doc = json.loads(raw)
    first = next(iter(doc))
    pair = dumps({first: doc[first]})[1:-1]
    return b"{" + pair + b"," + raw[1:]


# Breaking the JSON itself does not need fresh documents; the schema examples (every type,
# every optional part) keep this test cheap enough to run thousands of times.
EXAMPLES = [
    example
    for rel in (
        "input/event.schema.json",
        "input/forget.schema.json",
        "input/appLaunch.schema.json",
    )
    for example in oracle.load(rel)["examples"]
]


@st.composite
def broken_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    raw = dumps(draw(st.sampled_from(EXAMPLES)))
    kind = draw(
        st.sampled_from(
            ["truncate", "bad utf-8", "NaN", "Infinity", "duplicate key", "not an object"]
        )
    )
    if kind == "truncate":
        return kind, raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "bad utf-8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80"]))
        # inside the eventId string, so only the encoding is wrong
        return kind, raw.replace(b'"eventId":"', b'"eventId":"' + bad, 1)
    if kind in ("NaN", "Infinity"):
        constant = draw(st.sampled_from([kind, "-Infinity"] if kind == "Infinity" else [kind]))
        return kind, raw[:-1] + b',"platform":' + constant.encode() + b"}"
    if kind == "duplicate key":
        return kind, _duplicate_first_key(raw)
    return kind, dumps(draw(st.one_of(any_json_scalar, st.lists(any_json_scalar))))


@settings(max_examples=3000, **SETTINGS)
@given(broken_bytes())
def test_broken_bytes_are_rejected_by_both(case: tuple[str, bytes]) -> None:
    kind, raw = case
    decoder_ok, schema_ok = verdicts(raw)
    assert not schema_ok, (kind, raw[:500])
    assert not decoder_ok, (kind, raw[:500])
    count("broken")


@settings(max_examples=6000, **SETTINGS)
@given(st.binary(max_size=300))
@example(b"\x00")
@example(b'{"type":"appLaunch"}')
@example(b"[" * 5000)
@example(b'{"a":' * 3000)
def test_random_bytes_agree(raw: bytes) -> None:
    decoder_ok, schema_ok = verdicts(raw)
    assert decoder_ok == schema_ok
    if not schema_ok:
        count("random")


@st.composite
def too_many(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["attributes", "emails", "phones", "tags", "replaced", "bytes"]))
    base: Doc = {
        "eventId": "e",
        "timestamp": 1,
        "appCode": "a",
        "pushRegistrationId": "p",
    }
    if kind == "attributes":
        n = draw(st.integers(101, 300))
        return dumps(
            {
                **base,
                "type": "custom",
                "definitionId": "d",
                "properties": {f"k{i}": i for i in range(n)},
            }
        )
    if kind in ("emails", "phones"):
        n = draw(st.integers(21, 100))
        return dumps({**base, "type": "personalize", "userIdentity": {kind: ["x"] * n}})
    if kind == "tags":
        n = draw(st.integers(51, 200))
        field = draw(st.sampled_from(["tagsAdded", "tagsRemoved"]))
        return dumps({**base, "type": "personUpdate", field: ["t"] * n})
    if kind == "replaced":
        n = draw(st.integers(21, 60))
        item = {"kind": "email", "old": "a", "new": "b"}
        return dumps({**base, "type": "personUpdate", "identitiesReplaced": [item] * n})
    size = draw(st.integers(64 * 1024 + 1, 80 * 1024))
    return dumps({**base, "type": "appLaunch", "platform": "x" * size})[: max(size, 64 * 1024 + 1)]


@settings(max_examples=500, **SETTINGS)
@given(too_many())
def test_over_limit_lists_and_maps_are_rejected_by_both(raw: bytes) -> None:
    decoder_ok, schema_ok = verdicts(raw)
    assert not schema_ok
    assert not decoder_ok
    result = decode(raw)
    assert isinstance(result, Rejection) and result.reason == "oversize", result
    count("oversize")


def test_the_suite_generated_at_least_10000_bad_inputs() -> None:
    # Runs last in this module (pytest keeps file order); meaningful on a full run only.
    if len(BAD_INPUTS) == 4:
        assert sum(BAD_INPUTS.values()) >= 10_000, BAD_INPUTS
