"""The tracking-API -> idstream mapping of docs/gateway.md, rule by rule (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from idstream.codecs import Rejection, decode
from idstream.domain.reasons import RejectReason
from idstream.gateway.mapping import Ignored, Mapped, MappingConfig, Refused, flatten, map_message

CONFIG = MappingConfig(app_code="shop-ios")
NOW = 1_732_352_400_000
DEVICE_ID = "B5372DB0-C21E-11E4-8DFC-AA07A5B093DB"
CONTEXT: dict[str, Any] = {
    "app": {"name": "Shop", "version": "3.14.0", "build": "314"},
    "device": {
        "id": DEVICE_ID,
        "manufacturer": "Apple",
        "model": "iPhone15,2",
        "token": "ff15bc0c20c4aa6cd50854ff165fd265",
    },
    "os": {"name": "iOS", "version": "17.1"},
    "locale": "pt-PT",
    "library": {"name": "analytics-ios", "version": "4.1.8"},
}


def message(kind: str, **fields: Any) -> dict[str, Any]:
    base = {
        "type": kind,
        "messageId": "m-1",
        "anonymousId": "anon-1",
        "timestamp": "2024-11-23T09:00:00.123Z",
        "context": CONTEXT,
    }
    return {**base, **fields}


def mapped(msg: Any, config: MappingConfig = CONFIG) -> tuple[dict[str, Any], ...]:
    outcome = map_message(msg, config, NOW)
    assert isinstance(outcome, Mapped), outcome
    for event in outcome.events:
        # Every mapped event is one the worker's decoder accepts.
        decoded = decode(orjson.dumps(event))
        assert not isinstance(decoded, Rejection), decoded
    return outcome.events


def only(msg: Any, config: MappingConfig = CONFIG) -> dict[str, Any]:
    events = mapped(msg, config)
    assert len(events) == 1, events
    return events[0]


def test_common_fields_come_from_the_message_and_its_context() -> None:
    event = only(message("track", event="Product Viewed"))
    assert event == {
        "eventId": "m-1",
        "type": "custom",
        "timestamp": 1_732_352_400_123,
        "appCode": "shop-ios",
        "pushRegistrationId": DEVICE_ID,
        "applicationVersion": "3.14.0",
        "deviceManufacturer": "Apple",
        "deviceModel": "iPhone15,2",
        "osLanguage": "pt-PT",
        "osVersion": "17.1",
        "platform": "iOS",
        "sdkVersion": "analytics-ios/4.1.8",
        "definitionId": "Product Viewed",
    }


def test_install_key_is_the_device_id_else_the_anonymous_id() -> None:
    assert only(message("track", event="x"))["pushRegistrationId"] == DEVICE_ID
    without_device = message("track", event="x", context={"device": {"token": "t"}})
    assert only(without_device)["pushRegistrationId"] == "anon-1"


def test_no_device_id_and_no_anonymous_id_is_refused_naming_both() -> None:
    outcome = map_message(
        {"type": "track", "event": "x", "userId": "u-1", "messageId": "m"}, CONFIG, NOW
    )
    assert isinstance(outcome, Refused)
    assert outcome.reason is RejectReason.SCHEMA_VIOLATION
    assert "context.device.id" in outcome.detail and "anonymousId" in outcome.detail


@pytest.mark.parametrize(
    ("name", "expected_type"),
    [
        ("Application Installed", "install"),
        ("Application Updated", "installUpdate"),
        ("Application Uninstalled", "uninstall"),
        ("Signed Out", "depersonalize"),
        ("Application Backgrounded", "custom"),
        ("Order Completed", "custom"),
    ],
)
def test_track_events_by_name(name: str, expected_type: str) -> None:
    assert only(message("track", event=name))["type"] == expected_type


def test_install_and_update_carry_the_push_token_and_the_version_in_system_data() -> None:
    install = only(message("track", event="Application Installed", properties={"version": "3.14"}))
    assert install["systemData"] == {
        "pushToken": "ff15bc0c20c4aa6cd50854ff165fd265",
        "applicationVersion": "3.14",
    }
    update = only(message("track", event="Application Updated", properties={"version": "3.15"}))
    assert update["systemData"]["applicationVersion"] == "3.15"


def test_an_open_is_an_app_launch_and_its_push_token_an_install_update() -> None:
    launch, token = mapped(message("track", event="Application Opened"))
    assert launch["type"] == "appLaunch" and launch["eventId"] == "m-1"
    assert token["type"] == "installUpdate"
    assert token["eventId"] == "m-1:pushToken"
    assert token["systemData"] == {"pushToken": "ff15bc0c20c4aa6cd50854ff165fd265"}
    no_token = message("track", event="Application Opened", context={"device": {"id": "d"}})
    assert [e["type"] for e in mapped(no_token)] == ["appLaunch"]


def test_the_sign_out_event_is_configurable() -> None:
    config = MappingConfig(app_code="a", sign_out_events=frozenset({"Logged Out"}))
    assert only(message("track", event="Logged Out"), config)["type"] == "depersonalize"
    assert only(message("track", event="Signed Out"), config)["type"] == "custom"


def test_identify_with_user_id_and_traits_personalizes() -> None:
    traits = {
        "email": "Ana@Example.com",
        "phone": "+351 912 345 678",
        "firstName": "Ana",
        "last_name": "Silva",
        "address": {"city": "Lisbon", "country": "PT", "street": "Rua 1"},
        "plan": "gold",
        "company": {"name": "Initech", "size": 40},
        "interests": ["surf", "jazz"],
    }
    event = only(message("identify", userId="u-1842", traits=traits))
    assert event["type"] == "personalize"
    assert event["userIdentity"] == {
        "externalUserId": "u-1842",
        "emails": ["Ana@Example.com"],
        "phones": ["+351 912 345 678"],
    }
    assert event["userAttributes"] == {
        "firstName": "Ana",
        "lastName": "Silva",
        "city": "Lisbon",
        "country": "PT",
        "address": "Rua 1",
        "customAttributes": {
            "plan": "gold",
            "interests": '["surf","jazz"]',
            "company.name": "Initech",
            "company.size": 40,
        },
    }
    assert event["forceDepersonalize"] is True


def test_identify_reads_context_traits_as_rudderstack_sends_them() -> None:
    context = {**CONTEXT, "traits": {"email": "ana@example.com", "firstName": "Ana"}}
    event = only(message("identify", userId="u-1", context=context))
    assert event["userIdentity"]["emails"] == ["ana@example.com"]
    assert event["userAttributes"] == {"firstName": "Ana"}


def test_force_depersonalize_can_be_turned_off() -> None:
    config = MappingConfig(app_code="a", force_depersonalize=False)
    assert "forceDepersonalize" not in only(message("identify", userId="u"), config)


def test_identify_without_identity_updates_attributes_or_is_ignored() -> None:
    event = only(message("identify", traits={"firstName": "Ana"}))
    assert event["type"] == "personUpdate"
    assert event["attributes"] == {"firstName": "Ana"}
    assert map_message(message("identify"), CONFIG, NOW) == Ignored(
        "identify without userId or traits"
    )


def test_alias_personalizes_with_the_new_user_id() -> None:
    event = only(message("alias", userId="u-2", previousId="u-1"))
    assert event["type"] == "personalize"
    assert event["userIdentity"] == {"externalUserId": "u-2"}
    refused = map_message(message("alias", previousId="u-1"), CONFIG, NOW)
    assert isinstance(refused, Refused) and "userId" in refused.detail


@pytest.mark.parametrize("kind", ["screen", "page"])
def test_screens_and_pages_are_custom_events_named_by_type(kind: str) -> None:
    event = only(message(kind, name="Home", properties={"referrer": "push"}))
    assert event["type"] == "custom"
    assert event["definitionId"] == kind
    assert event["properties"] == {"referrer": "push", "name": "Home"}


def test_group_is_accepted_and_ignored() -> None:
    assert map_message(message("group", groupId="g-1"), CONFIG, NOW) == Ignored("group")


def test_message_id_is_the_event_id_else_a_stable_hash() -> None:
    without = message("track", event="x")
    del without["messageId"]
    first, second = only(without)["eventId"], only(dict(without))["eventId"]
    assert first == second and first.startswith("sha256:")
    assert only({**without, "event": "y"})["eventId"] != first


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"timestamp": "2024-11-23T09:00:00Z"}, 1_732_352_400_000),
        ({"timestamp": "2024-11-23T10:00:00.5+01:00"}, 1_732_352_400_500),
        ({"timestamp": "2024-11-23T09:00:00"}, 1_732_352_400_000),  # no offset: UTC
        ({"timestamp": 1_732_352_400_001}, 1_732_352_400_001),
        ({"timestamp": None, "originalTimestamp": "2024-11-23T09:00:00Z"}, 1_732_352_400_000),
        ({"timestamp": None}, NOW),  # none given: the receive time
    ],
)
def test_timestamps(fields: dict[str, Any], expected: int) -> None:
    assert only(message("track", event="x", **fields))["timestamp"] == expected


@pytest.mark.parametrize(
    ("msg", "reason", "path"),
    [
        ([1, 2], RejectReason.SCHEMA_VIOLATION, "$"),
        ({"anonymousId": "a"}, RejectReason.SCHEMA_VIOLATION, "$.type"),
        ({"type": "boom", "anonymousId": "a"}, RejectReason.UNKNOWN_TYPE, "$.type"),
        ({"type": "track", "anonymousId": "a"}, RejectReason.SCHEMA_VIOLATION, "$.event"),
        (
            {"type": "track", "event": "x", "anonymousId": "a", "timestamp": "yesterday"},
            RejectReason.SCHEMA_VIOLATION,
            "$.timestamp",
        ),
        (
            {"type": "track", "event": "x", "anonymousId": "a", "properties": [1]},
            RejectReason.SCHEMA_VIOLATION,
            "$.properties",
        ),
    ],
)
def test_malformed_messages_are_refused_with_the_field_path(
    msg: Any, reason: RejectReason, path: str
) -> None:
    outcome = map_message(msg, CONFIG, NOW)
    assert isinstance(outcome, Refused)
    assert outcome.reason is reason
    assert outcome.detail.startswith(path)


def test_a_refusal_keeps_the_install_key_for_the_dead_letter() -> None:
    outcome = map_message({"type": "track", "anonymousId": "a-9"}, CONFIG, NOW)
    assert isinstance(outcome, Refused) and outcome.key == "a-9"


def test_flatten_is_iterative_and_ordered() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(2_000):  # deeper than Python's recursion limit
        deep = {"a": deep}
    flat = flatten({"x": 1, "n": {"y": 2, "z": {"w": None}}, "deep": deep})
    assert list(flat)[:3] == ["x", "n.y", "n.z.w"]
    assert flat["n.z.w"] is None
    assert next(k for k in flat if k.startswith("deep")).endswith(".leaf")
