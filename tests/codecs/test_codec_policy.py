"""decode() and the one input policy: ids and names with a forbidden character, lone
surrogates, and one timestamp range for both forms (issue #11 item 2)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idstream.codecs import Rejection, decode, encode_record, event_to_wire
from idstream.codecs.limits import MAX_TIMESTAMP_MS
from idstream.domain.events import Personalize, PersonUpdate
from idstream.domain.reasons import RejectReason as R
from tests.codecs.strategies import forbidden_character, valid_event

BASE: dict[str, Any] = {
    "eventId": "e-1",
    "type": "appLaunch",
    "timestamp": 1_732_352_400_000,
    "appCode": "shop",
    "pushRegistrationId": "fcm:abc",
}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def escaped(doc: Any) -> bytes:
    """Non-ASCII as \\u escapes: the same record, through the decoder's other path."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


# (where, document with `{}` for the bad value)
NAME_SPOTS: list[tuple[str, dict[str, Any]]] = [
    ("$.eventId", {**BASE, "eventId": "b{}c"}),
    ("$.appCode", {**BASE, "appCode": "shop{}"}),
    ("$.pushRegistrationId", {**BASE, "pushRegistrationId": "V{}P"}),
    ("$.definitionId", {**BASE, "type": "custom", "definitionId": "{}d"}),
    (
        "$.properties[...]",
        {**BASE, "type": "custom", "definitionId": "d", "properties": {"k{}": 1}},
    ),
    ("$.customAttributes[...]", {**BASE, "type": "installUpdate", "customAttributes": {"{}k": 1}}),
    ("$.tagsAdded[1]", {**BASE, "type": "personUpdate", "tagsAdded": ["ok", "v{}ip"]}),
    ("$.tagsRemoved[0]", {**BASE, "type": "personUpdate", "tagsRemoved": ["{}t"]}),
    (
        "$.attributes.customAttributes[...]",
        {**BASE, "type": "personUpdate", "attributes": {"customAttributes": {"a{}": "x"}}},
    ),
    (
        "$.userAttributes.customAttributes[...]",
        {
            **BASE,
            "type": "personalize",
            "userIdentity": {"externalUserId": "u1"},
            "userAttributes": {"customAttributes": {"{}a": "x"}},
        },
    ),
]
BAD = ["\x00", "\x1e", "\x1f", "\n", "\x7f", "\x85", "\u200b", "\u202e", "\ufeff", "\U000e0041"]
BAD += ["\ufdd0", "\U0010ffff", "\u00ad", "\u2066"]


def _fill(doc: Any, bad: str) -> Any:
    if isinstance(doc, dict):
        return {_fill(k, bad): _fill(v, bad) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_fill(v, bad) for v in doc]
    return doc.replace("{}", bad) if isinstance(doc, str) else doc


@pytest.mark.parametrize("bad", BAD, ids=[f"U+{ord(b):04X}" for b in BAD])
@pytest.mark.parametrize(("where", "doc"), NAME_SPOTS, ids=[s[0] for s in NAME_SPOTS])
def test_an_id_or_a_name_with_a_forbidden_character_refuses_the_whole_record(
    where: str, doc: dict[str, Any], bad: str
) -> None:
    assert not isinstance(decode(dumps(_fill(doc, ""))), Rejection)
    for value in (dumps(_fill(doc, bad)), escaped(_fill(doc, bad))):
        result = decode(value)
        assert isinstance(result, Rejection), value
        assert result.reason is R.SCHEMA_VIOLATION
        assert result.detail.startswith(where), result.detail
        assert f": U+{ord(bad):04X} at index" in result.detail, result.detail


def test_separator_injection_cannot_reach_a_key() -> None:
    # issue #11: an install V next to V\x1fP; prid a\x1fb / eventId c next to a / b\x1fc
    for doc in (
        {**BASE, "pushRegistrationId": "V\x1fP"},
        {**BASE, "pushRegistrationId": "a\x1fb", "eventId": "c"},
        {**BASE, "pushRegistrationId": "a", "eventId": "b\x1fc"},
    ):
        assert decode(dumps(doc)) == decode(escaped(doc))
        assert isinstance(decode(dumps(doc)), Rejection)


def test_other_scripts_spaces_and_emoji_are_fine_in_names() -> None:
    for value in ("Ана", "a b", "a\u00a0b", "\U0001f600", "\u0430pp", "中文", "e\u0301"):
        doc = {**BASE, "eventId": value, "appCode": value, "pushRegistrationId": value}
        for raw in (dumps(doc), escaped(doc)):
            event = decode(raw)
            assert not isinstance(event, Rejection), (value, event)
            assert event.event_id == value  # ids are opaque: not normalized


def test_identity_values_with_a_forbidden_character_pass_the_decoder() -> None:
    # One identity among others is dropped by the resolver (identity_rejected), not here.
    doc = {
        **BASE,
        "type": "personalize",
        "userIdentity": {"externalUserId": "u\x1f1", "emails": ["x@y.com\u200b", "ok@y.com"]},
    }
    event = decode(dumps(doc))
    assert isinstance(event, Personalize)
    assert event.user_identity.emails == ("x@y.com\u200b", "ok@y.com")
    update = {
        **BASE,
        "type": "personUpdate",
        "identitiesReplaced": [{"kind": "email", "old": "a\x00@y.com", "new": "b@y.com\ufeff"}],
    }
    assert isinstance(decode(dumps(update)), PersonUpdate)


# ---------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    "escape",
    [
        b"\\ud800",
        b"\\udfff",
        b"\\udbff\\u0041",
        b"\\ud800\\ud800",
        b"\\udc00\\ud800",
        b"x\\ud83d",
        b"\\ud83d\\\\ude00",  # a high surrogate, then an escaped backslash
    ],
)
@pytest.mark.parametrize(
    "field", ["eventId", "platform", "key", "email", "attribute", "type", "tag"]
)
def test_a_lone_surrogate_anywhere_is_malformed_json(escape: bytes, field: str) -> None:
    docs = {
        "eventId": {**BASE, "eventId": "@"},
        "platform": {**BASE, "platform": "@"},
        "key": {**BASE, "type": "custom", "definitionId": "d", "properties": {"@": 1}},
        "email": {**BASE, "type": "personalize", "userIdentity": {"emails": ["@"]}},
        "attribute": {
            **BASE,
            "type": "installUpdate",
            "customAttributes": {"a": "@"},
        },
        "type": {**BASE, "type": "@"},
        "tag": {**BASE, "type": "personUpdate", "tagsAdded": ["@"]},
    }
    value = dumps(docs[field]).replace(b'"@"', b'"' + escape + b'"', 1)
    result = decode(value)
    assert isinstance(result, Rejection)
    assert result.reason is R.MALFORMED_JSON, result


def test_a_surrogate_pair_escape_is_one_character() -> None:
    event = decode(dumps(BASE).replace(b'"fcm:abc"', b'"\\ud83d\\ude00"'))
    assert not isinstance(event, Rejection)
    assert event.push_registration_id == "\U0001f600"


SETTINGS: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@st.composite
def spoiled(draw: st.DrawFn) -> bytes:
    """A valid event with one string spoiled: a lone surrogate escape, or a forbidden
    character written as an escape or raw."""
    doc = draw(valid_event)
    raw = escaped(doc)
    starts = [i for i in range(len(raw)) if raw[i : i + 1] == b'"']
    at = draw(st.sampled_from(starts)) + 1  # just inside a string (or after one)
    insert = draw(
        st.one_of(
            st.sampled_from([b"\\ud800", b"\\udc00", b"\\udbff", b"\\ud800\\u0030"]),
            forbidden_character.map(lambda c: escaped(c)[1:-1]),
            st.sampled_from([b"\x7f", b"\xc2\x85", b"\xe2\x80\x8b", b"\xef\xbb\xbf"]),
        )
    )
    return raw[:at] + insert + raw[at:]


@settings(max_examples=3000, **SETTINGS)
@given(spoiled())
def test_nothing_the_decoder_accepts_holds_a_lone_surrogate_or_fails_to_encode(raw: bytes) -> None:
    result = decode(raw)
    if isinstance(result, Rejection):
        return
    # Accepted (the character sat in a value that may hold it): every string can be written
    # back as UTF-8 JSON, and encodes again the same.
    out = encode_record(event_to_wire(result))
    out.decode("utf-8")
    assert decode(out) == result
    for text in _strings(orjson.loads(out)):
        text.encode("utf-8")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        (0, True),
        (MAX_TIMESTAMP_MS, True),
        (-1, False),
        (MAX_TIMESTAMP_MS + 1, False),
        ("1970-01-01T00:00:00Z", True),
        ("1970-01-01T01:00:00+01:00", True),
        ("1969-12-31T23:00:00-01:00", True),
        ("9999-12-31T23:59:59.999Z", True),
        ("9999-12-31T23:59:59.999999999Z", True),  # truncated to ms
        ("10000-01-01T00:00:00Z", False),
        ("1969-12-31T23:59:59Z", False),  # issue #11: accepted as -1000 before
        ("1970-01-01T00:00:00+00:01", False),
        ("1970-01-01T00:59:59.999+01:00", False),
        ("9999-12-31T23:59:59.999-00:01", False),
        ("9999-12-31T23:59:59.999-23:59", False),  # accepted as 253402387139999 before
        ("0000-01-01T00:00:00Z", False),
    ],
)
def test_one_timestamp_range_for_both_forms(stamp: int | str, ok: bool) -> None:
    result = decode(dumps({**BASE, "timestamp": stamp}))
    if ok:
        assert not isinstance(result, Rejection), result
        assert 0 <= result.timestamp <= MAX_TIMESTAMP_MS
    else:
        assert isinstance(result, Rejection)
        assert result.reason is R.SCHEMA_VIOLATION
        assert "$.timestamp" in result.detail, result.detail
