"""decode(): one scenario per rule of the wire contract, reason codes as the table says."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from idstream.codecs import DEFAULT_LIMITS, Limits, Rejection, decode
from idstream.domain.events import (
    AppLaunch,
    Custom,
    IdentityKind,
    IdentityReplacement,
    InstallUpdate,
    Personalize,
    PersonUpdate,
    RecordMeta,
    UserIdentity,
)
from idstream.domain.reasons import RejectReason as R

T0 = 1_732_352_400_000
BASE: dict[str, Any] = {
    "eventId": "e-1",
    "type": "appLaunch",
    "timestamp": T0,
    "appCode": "shop",
    "pushRegistrationId": "fcm:abc",
}


def raw(**fields: Any) -> bytes:
    doc = {**BASE, **fields}
    kept = {k: v for k, v in doc.items() if v is not DROP}
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode()


DROP = object()


def reason(value: bytes, **kwargs: Any) -> R | None:
    result = decode(value, **kwargs)
    return result.reason if isinstance(result, Rejection) else None


def test_app_launch_decodes_with_standard_properties() -> None:
    event = decode(raw(platform="android", sdkVersion="5.2.1"))
    assert event == AppLaunch(
        event_id="e-1",
        timestamp=T0,
        app_code="shop",
        push_registration_id="fcm:abc",
        standard_properties={"platform": "android", "sdkVersion": "5.2.1"},
    )


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-11-23T09:00:00Z", 1_732_352_400_000),
        ("2024-11-23T09:00:00.5Z", 1_732_352_400_500),
        ("2024-11-23T09:00:00.123456789Z", 1_732_352_400_123),
        ("2024-11-23T10:30:00+01:30", 1_732_352_400_000),
        ("2024-11-23T07:00:00-02:00", 1_732_352_400_000),
    ],
)
def test_rfc3339_timestamps_become_epoch_ms(text: str, ms: int) -> None:
    event = decode(raw(timestamp=text))
    assert not isinstance(event, Rejection)
    assert event.timestamp == ms


CASES: list[tuple[str, bytes, R | None]] = [
    # JSON
    ("truncated", raw()[:-1], R.MALFORMED_JSON),
    ("empty", b"", R.MALFORMED_JSON),
    (
        "invalid utf-8",
        raw(appCode="shXop").replace(b"shXop", b"sh\xffop"),
        R.MALFORMED_JSON,
    ),
    (
        "NaN",
        raw().replace(b'"timestamp":' + str(T0).encode(), b'"timestamp":NaN'),
        R.MALFORMED_JSON,
    ),
    ("Infinity", raw(properties=None).replace(b"null", b"Infinity"), R.MALFORMED_JSON),
    ("lone surrogate", raw(appCode="X").replace(b'"X"', b'"\\ud800"'), R.MALFORMED_JSON),
    ("duplicate key", raw()[:-1] + b',"eventId":"e-2"}', R.MALFORMED_JSON),
    (
        "duplicate nested key",
        raw(type="custom", definitionId="d", properties={"a": 1}).replace(
            b'{"a":1}', b'{"a":1,"a":2}'
        ),
        R.MALFORMED_JSON,
    ),
    ("trailing data", raw() + b"{}", R.MALFORMED_JSON),
    ("duplicate type", raw()[:-1] + b',"type":"custom"}', R.MALFORMED_JSON),
    ("duplicate key and wrong type", raw(appCode=1)[:-1] + b',"appCode":2}', R.MALFORMED_JSON),
    # type
    ("unknown type", raw(type="pageView"), R.UNKNOWN_TYPE),
    ("missing type", raw(type=DROP), R.SCHEMA_VIOLATION),
    ("type not a string", raw(type=7), R.SCHEMA_VIOLATION),
    ("not an object", b"[1, 2]", R.SCHEMA_VIOLATION),
    # schema
    ("missing eventId", raw(eventId=DROP), R.SCHEMA_VIOLATION),
    ("empty eventId", raw(eventId=""), R.SCHEMA_VIOLATION),
    ("unknown field", raw(color="red"), R.SCHEMA_VIOLATION),
    ("timestamp float", raw(timestamp=1.5e12), R.SCHEMA_VIOLATION),
    ("timestamp negative", raw(timestamp=-1), R.SCHEMA_VIOLATION),
    ("timestamp beyond 9999", raw(timestamp=253_402_300_800_000), R.SCHEMA_VIOLATION),
    ("timestamp no zone", raw(timestamp="2024-11-23T09:00:00"), R.SCHEMA_VIOLATION),
    ("timestamp no date", raw(timestamp="2024-02-30T09:00:00Z"), R.SCHEMA_VIOLATION),
    ("timestamp bad offset", raw(timestamp="2024-11-23T09:00:00+24:00"), R.SCHEMA_VIOLATION),
    ("timestamp words", raw(timestamp="yesterday"), R.SCHEMA_VIOLATION),
    ("timestamp Z newline", raw(timestamp="2024-11-23T09:00:00Z\n"), R.SCHEMA_VIOLATION),
    ("timestamp offset newline", raw(timestamp="2024-11-23T09:00:00+01:00\n"), R.SCHEMA_VIOLATION),
    ("timestamp lower-case z", raw(timestamp="2024-11-23T09:00:00z"), R.SCHEMA_VIOLATION),
    ("timestamp space", raw(timestamp="2024-11-23 09:00:00Z"), R.SCHEMA_VIOLATION),
    ("schemaVersion 1", raw(schemaVersion=1), None),
    ("schemaVersion 2", raw(schemaVersion=2), R.SCHEMA_VIOLATION),
    ("standard property not a string", raw(platform=3), R.SCHEMA_VIOLATION),
    ("installUpdate with nothing", raw(type="installUpdate"), R.SCHEMA_VIOLATION),
    (
        "installUpdate unknown system data",
        raw(type="installUpdate", systemData={"cpu": "x"}),
        R.SCHEMA_VIOLATION,
    ),
    (
        "installUpdate system data type",
        raw(type="installUpdate", systemData={"deviceSecure": "yes"}),
        R.SCHEMA_VIOLATION,
    ),
    ("personalize without identity", raw(type="personalize"), R.SCHEMA_VIOLATION),
    (
        "personalize empty identity",
        raw(type="personalize", userIdentity={"emails": []}),
        R.SCHEMA_VIOLATION,
    ),
    (
        "personalize identity not string",
        raw(type="personalize", userIdentity={"emails": [1]}),
        R.SCHEMA_VIOLATION,
    ),
    ("personUpdate with nothing", raw(type="personUpdate"), R.SCHEMA_VIOLATION),
    (
        "personUpdate bad kind",
        raw(type="personUpdate", identitiesReplaced=[{"kind": "fax", "old": "a", "new": "b"}]),
        R.SCHEMA_VIOLATION,
    ),
    ("custom without definitionId", raw(type="custom"), R.SCHEMA_VIOLATION),
    (
        "attribute value nested",
        raw(type="custom", definitionId="d", properties={"a": [1]}),
        R.SCHEMA_VIOLATION,
    ),
    (
        "attribute value object",
        raw(type="custom", definitionId="d", properties={"a": {"b": 1}}),
        R.SCHEMA_VIOLATION,
    ),
    (
        "attribute number too big",
        raw(type="custom", definitionId="d", properties={"a": 2**64}),
        R.SCHEMA_VIOLATION,
    ),
    (
        "attribute number 1e400",
        raw(type="custom", definitionId="d", properties={"a": 1}).replace(b'"a":1', b'"a":1e400'),
        R.MALFORMED_JSON,
    ),
    (
        "attribute empty name",
        raw(type="custom", definitionId="d", properties={"": 1}),
        R.SCHEMA_VIOLATION,
    ),
    ("forget empty identity", raw(type="forget", userIdentity={}), R.SCHEMA_VIOLATION),
    ("forget without identity", raw(type="forget"), None),
    # sizes
    ("record too big", raw(platform="x" * 70_000), R.OVERSIZE),
    ("string too long", raw(eventId="x" * 1025), R.OVERSIZE),
    ("string at limit", raw(eventId="é" * 1024), None),
    (
        "attribute name too long",
        raw(type="custom", definitionId="d", properties={"k" * 1025: 1}),
        R.OVERSIZE,
    ),
    (
        "too many attributes",
        raw(type="custom", definitionId="d", properties={str(i): i for i in range(101)}),
        R.OVERSIZE,
    ),
    (
        "attributes at limit",
        raw(type="custom", definitionId="d", properties={str(i): i for i in range(100)}),
        None,
    ),
    ("too many emails", raw(type="personalize", userIdentity={"emails": ["a"] * 21}), R.OVERSIZE),
    ("too many tags", raw(type="personUpdate", tagsAdded=["t"] * 51), R.OVERSIZE),
    (
        "too many replacements",
        raw(
            type="personUpdate", identitiesReplaced=[{"kind": "email", "old": "a", "new": "b"}] * 21
        ),
        R.OVERSIZE,
    ),
    # formatting that is still one valid document
    ("pretty printed", orjson.dumps(BASE, option=orjson.OPT_INDENT_2), None),
    ("space before colon", raw().replace(b'"appCode":', b'"appCode" :'), None),
    ("escaped quote and colon in value", raw(appCode='a":b'), None),
    ("unicode escape colon", raw(appCode="X").replace(b'"X"', b'"a\\u003ab"'), None),
]


@pytest.mark.parametrize(("name", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_reason(name: str, value: bytes, expected: R | None) -> None:
    assert reason(value) == expected


def test_schema_violation_detail_names_the_field_path() -> None:
    result = decode(raw(type="personalize", userIdentity={"emails": [1]}))
    assert isinstance(result, Rejection)
    assert "$.userIdentity.emails[0]" in result.detail


def test_oversize_detail_names_the_field_path() -> None:
    result = decode(raw(type="custom", definitionId="d", properties={"a": "x" * 2000}))
    assert isinstance(result, Rejection)
    assert result.reason is R.OVERSIZE
    # msgspec names the map, not the key: `$.properties[...]`
    assert "$.properties" in result.detail


def test_detail_is_bounded() -> None:
    result = decode(raw(type="x" * 1000))
    assert isinstance(result, Rejection)
    assert len(result.detail) <= 300


def meta(record_timestamp: int) -> RecordMeta:
    return RecordMeta("idstream.events", 0, 0, record_timestamp)


def test_future_skew_beyond_limit_is_out_of_range() -> None:
    day = DEFAULT_LIMITS.max_future_skew_ms
    assert reason(raw(timestamp=T0 + day), meta=meta(T0)) is None
    assert reason(raw(timestamp=T0 + day + 1), meta=meta(T0)) is R.TIMESTAMP_OUT_OF_RANGE
    # the past is not bounded here: late and replayed events are normal
    assert reason(raw(timestamp=0), meta=meta(T0)) is None
    # without meta there is nothing to compare with
    assert reason(raw(timestamp=T0 + 10 * day)) is None
    # nor when the broker kept no record timestamp (-1)
    assert reason(raw(timestamp=T0 + 10 * day), meta=meta(-1)) is None


def test_skew_uses_the_converted_rfc3339_time() -> None:
    assert reason(raw(timestamp="2024-11-24T09:00:00.001Z"), meta=meta(T0)) is (
        R.TIMESTAMP_OUT_OF_RANGE
    )


def test_custom_limits_apply() -> None:
    small = Limits(
        max_record_bytes=200,
        max_string_chars=8,
        max_attributes=2,
        max_identities_per_kind=1,
        max_tags=1,
        max_future_skew_ms=1000,
    )
    assert reason(raw(), limits=small) is None
    assert reason(raw(eventId="x" * 9), limits=small) is R.OVERSIZE
    assert (
        reason(raw(type="personalize", userIdentity={"emails": ["a", "b"]}), limits=small)
        is R.OVERSIZE
    )
    assert reason(raw(type="personUpdate", tagsAdded=["a", "b"]), limits=small) is R.OVERSIZE
    assert reason(raw(timestamp=T0 + 1001), meta=meta(T0), limits=small) is (
        R.TIMESTAMP_OUT_OF_RANGE
    )
    assert reason(raw(), limits=Limits(max_record_bytes=10)) is R.OVERSIZE


def test_personalize_values() -> None:
    event = decode(
        raw(
            type="personalize",
            userIdentity={"externalUserId": " u-1 ", "emails": ["A@x.com"]},
            userAttributes={"firstName": "Ana", "city": None, "customAttributes": {"vip": True}},
            forceDepersonalize=True,
        )
    )
    assert isinstance(event, Personalize)
    # normalization is the resolver's job: values arrive as sent
    assert event.user_identity == UserIdentity(external_user_id=" u-1 ", emails=("A@x.com",))
    assert dict(event.user_attributes.standard) == {"firstName": "Ana", "city": None}
    assert dict(event.user_attributes.custom) == {"vip": True}
    assert event.force_depersonalize is True


def test_person_update_values() -> None:
    event = decode(
        raw(
            type="personUpdate",
            tagsAdded=["vip"],
            tagsRemoved=["trial"],
            identitiesRemoved={"phones": ["+1"]},
            identitiesReplaced=[{"kind": "email", "old": "a@x.com", "new": "b@x.com"}],
        )
    )
    assert isinstance(event, PersonUpdate)
    assert event.tags_added == ("vip",)
    assert event.tags_removed == ("trial",)
    assert event.identities_added.is_empty()
    assert event.identities_removed == UserIdentity(phones=("+1",))
    assert event.identities_replaced == (
        IdentityReplacement(IdentityKind.EMAIL, "a@x.com", "b@x.com"),
    )


def test_install_update_and_custom_values() -> None:
    update = decode(
        raw(type="installUpdate", systemData={"deviceSecure": True}, primaryDevice=False)
    )
    assert isinstance(update, InstallUpdate)
    assert dict(update.system_data) == {"deviceSecure": True}
    assert update.primary_device is False
    assert not update.custom_attributes
    custom = decode(
        raw(type="custom", definitionId="buy", properties={"n": 1, "x": 1.5, "d": "2024-01-01"})
    )
    assert isinstance(custom, Custom)
    assert dict(custom.properties) == {"n": 1, "x": 1.5, "d": "2024-01-01"}
    assert type(custom.properties["n"]) is int


def test_decoded_maps_are_read_only() -> None:
    event = decode(raw(type="custom", definitionId="buy", properties={"n": 1}))
    assert isinstance(event, Custom)
    with pytest.raises(TypeError):
        event.properties["n"] = 2  # type: ignore[index]
