"""Writes the JSON Schemas in schemas/ from one description, so shared parts cannot drift.

Run `.venv/bin/python schemas/generate.py` after editing; tests/codecs checks the files are current.
Limits written into the schemas are the decoder's defaults (idstream.codecs.Limits).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASE = "https://idstream.dev/schemas"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
VERSION = 1

MAX_STRING = 1024
MAX_ATTRIBUTES = 100
MAX_IDENTITIES = 20
MAX_TAGS = 50
MAX_TIMESTAMP_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
# RFC 3339 date-time, upper-case T and Z only, at most nanoseconds, offset with a colon.
RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)

# Code points no id, name or identity may hold: Unicode Cc, Cf, Cs and the non-characters, as of
# Unicode 14.0.0 (idstream.domain.identities.FORBIDDEN_RANGES; a test keeps them equal).
FORBIDDEN_RANGES = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xD800, 0xDFFF),
    (0xFDD0, 0xFDEF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0xFFFE, 0xFFFF),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0x1FFFE, 0x1FFFF),
    (0x2FFFE, 0x2FFFF),
    (0x3FFFE, 0x3FFFF),
    (0x4FFFE, 0x4FFFF),
    (0x5FFFE, 0x5FFFF),
    (0x6FFFE, 0x6FFFF),
    (0x7FFFE, 0x7FFFF),
    (0x8FFFE, 0x8FFFF),
    (0x9FFFE, 0x9FFFF),
    (0xAFFFE, 0xAFFFF),
    (0xBFFFE, 0xBFFFF),
    (0xCFFFE, 0xCFFFF),
    (0xDFFFE, 0xDFFFF),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
    (0xEFFFE, 0xEFFFF),
    (0xFFFFE, 0xFFFFF),
    (0x10FFFE, 0x10FFFF),
)

Schema = dict[str, Any]


def forbidden_pattern() -> str:
    """A character class of FORBIDDEN_RANGES, for Python's `re` and ECMA-262 with the `u` flag
    (which draft 2020-12 asks for): BMP code points as `\\uXXXX` escapes, the others as the
    characters themselves (`render` writes them as JSON escapes)."""

    def one(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else chr(cp)

    return (
        "[" + "".join(one(a) + ("" if a == b else "-" + one(b)) for a, b in FORBIDDEN_RANGES) + "]"
    )


STANDARD_PROPERTIES = (
    "applicationVersion",
    "deviceManufacturer",
    "deviceModel",
    "osLanguage",
    "osVersion",
    "platform",
    "sdkVersion",
)
SYSTEM_DATA: dict[str, str] = {
    "platform": "string",
    "sdkVersion": "string",
    "osVersion": "string",
    "deviceManufacturer": "string",
    "deviceModel": "string",
    "applicationVersion": "string",
    "appVersion": "string",
    "osLanguage": "string",
    "pushRegistrationEnabled": "boolean",
    "registrationsEnabled": "boolean",
    "geofencingEnabled": "boolean",
    "deviceSecure": "boolean",
    "notificationsEnabled": "boolean",
    "pushToken": "string",
}
PERSON_STANDARD = (
    "firstName",
    "lastName",
    "middleName",
    "gender",
    "birthday",
    "preferredLanguage",
    "city",
    "country",
    "address",
)
IDENTITY_KINDS = ("externalUserId", "email", "phone")
LIFECYCLES = ["anonymous", "personalized", "depersonalized", "uninstalled"]
REJECT_REASONS = (
    "malformed_json",
    "schema_violation",
    "unknown_type",
    "oversize",
    "timestamp_out_of_range",
    "invalid_identity",
    "blocked_identity",
    "identity_conflict",
    "limit_exceeded",
    "install_uninstalled",
    "already_personalized",
    "not_personalized",
    "unknown_person",
    "processing_error",
)
# Minor versions: additive changes since the major version in `$id` (README, "Compatibility
# policy"). A consumer of v1 reads every v1.x record.
MINOR = {
    "output/resolved-event": 1,  # 1.1: `source`; `resolvedAt` is the input log's time
    # 1.1: install_updated `pushEnabled`; 1.2: merged `reason` (and the identity that matched),
    # identity_rejected `limit`; 1.3: limit `installs`
    "output/profile-change": 3,
    "output/dead-letter": 1,  # 1.1: reason processing_error
}


def string(description: str, *, min_length: int = 0) -> Schema:
    out: Schema = {"type": "string", "maxLength": MAX_STRING, "description": description}
    if min_length:
        out["minLength"] = min_length
    return out


def boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def integer(description: str, minimum: int | None = None) -> Schema:
    out: Schema = {"type": "integer", "description": description}
    if minimum is not None:
        out["minimum"] = minimum
    return out


def epoch_ms(description: str) -> Schema:
    return {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_TIMESTAMP_MS,
        "description": description,
    }


NAME_REF = "#/$defs/name"


def id_string(description: str) -> Schema:
    """An id or a name: non-empty, and without a forbidden character (whole event refused)."""
    return {**string(description, min_length=1), "$ref": NAME_REF}


def string_list(description: str, max_items: int, *, names: bool = False) -> Schema:
    items: Schema = {"type": "string", "maxLength": MAX_STRING}
    if names:
        items["$ref"] = NAME_REF
    return {
        "type": "array",
        "maxItems": max_items,
        "items": items,
        "description": description,
    }


# ---------------------------------------------------------------- shared definitions


def attribute_value() -> Schema:
    return {
        "description": "An attribute value: string, finite number, boolean, a date "
        "(ISO 8601 string, kept as a string) or null (null unsets the attribute).",
        "anyOf": [
            {"type": "string", "format": "date", "maxLength": MAX_STRING},
            {"type": "string", "format": "date-time", "maxLength": MAX_STRING},
            {"type": "string", "maxLength": MAX_STRING},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
        ],
    }


def attribute_map(
    description: str, max_properties: int | None = MAX_ATTRIBUTES, *, names: bool = True
) -> Schema:
    """An attribute map; `names`: its keys are names (input: refused with a forbidden character)."""
    out: Schema = {
        "type": "object",
        "description": description,
        "propertyNames": {"minLength": 1, "maxLength": MAX_STRING},
        "additionalProperties": {"$ref": "#/$defs/attributeValue"},
    }
    if names:
        out["propertyNames"]["$ref"] = NAME_REF
    if max_properties is not None:
        out["maxProperties"] = max_properties
    return out


def system_data() -> Schema:
    return {
        "type": "object",
        "description": "Install system data (seed 004); the install keeps the latest of each.",
        "additionalProperties": False,
        "properties": {
            name: (string(name) if kind == "string" else boolean(name))
            for name, kind in SYSTEM_DATA.items()
        },
    }


def user_identity() -> Schema:
    return {
        "type": "object",
        "description": "Identities as the SDK sent them; at least one value. Normalization "
        "and the blocklist are applied by the resolver, not by the schema: a value holding a "
        "control or format character (Unicode Cc, Cf), a surrogate or a non-character is "
        "refused alone (identity_rejected, invalid_identity), the others are NFC-normalized.",
        "additionalProperties": False,
        "properties": {
            "externalUserId": string("The app's own user id (at most one per person)."),
            "emails": string_list("Email addresses.", MAX_IDENTITIES),
            "phones": string_list("Phone numbers.", MAX_IDENTITIES),
        },
        "anyOf": [
            {"required": ["externalUserId"]},
            {"required": ["emails"], "properties": {"emails": {"minItems": 1}}},
            {"required": ["phones"], "properties": {"phones": {"minItems": 1}}},
        ],
    }


def person_attributes() -> Schema:
    props: Schema = {
        name: {"type": ["string", "null"], "maxLength": MAX_STRING, "description": name}
        for name in PERSON_STANDARD
    }
    props["customAttributes"] = attribute_map("Per-person custom attributes.")
    return {
        "type": "object",
        "description": "Standard person attributes (null unsets) and custom attributes.",
        "additionalProperties": False,
        "properties": props,
    }


def identity_replacement() -> Schema:
    return {
        "type": "object",
        "description": "Replace one identity value by another of the same kind.",
        "additionalProperties": False,
        "required": ["kind", "old", "new"],
        "properties": {
            "kind": {"enum": list(IDENTITY_KINDS), "description": "Identity kind."},
            "old": string("The value to replace."),
            "new": string("The replacing value."),
        },
    }


INPUT_DEFS: Schema = {
    "name": {
        "description": "An id or a name (eventId, appCode, pushRegistrationId, definitionId, "
        "tags, attribute and property names) holds no control or format character (Unicode "
        "Cc, Cf: zero-width, bidi controls, BOM, tags), no surrogate and no non-character; "
        "a record with one is refused whole. The class is Unicode 14.0.0's.",
        "not": {"pattern": forbidden_pattern()},
    },
    "attributeValue": attribute_value(),
    "systemData": system_data(),
    "userIdentity": user_identity(),
    "personAttributes": person_attributes(),
    "identityReplacement": identity_replacement(),
}


def common_properties(event_type: str, *, output: bool = False) -> Schema:
    timestamp: Schema
    if output:
        timestamp = epoch_ms("Client event time, ms since the epoch (normalized from input).")
    else:
        timestamp = {
            "description": "Client event time: integer ms since the epoch, or an RFC 3339 "
            "date-time string (upper-case T/Z, offset with colon) converted to ms. Either form "
            f"must lie in 0 … {MAX_TIMESTAMP_MS} ms (1970-01-01T00:00:00Z … "
            "9999-12-31T23:59:59.999Z), offset included: 1970-01-01T00:00:00+01:00 is refused.",
            "anyOf": [
                epoch_ms("ms since the epoch"),
                {"type": "string", "format": "date-time", "pattern": RFC3339},
            ],
        }
    props: Schema = {
        "schemaVersion": {
            "type": "integer",
            "const": VERSION,
            "default": VERSION,
            "description": "Wire version of the event; absent means 1. Later versions are "
            "upcast on read.",
        },
        "eventId": id_string("Unique id of the event, used for idempotency."),
        "type": {"const": event_type, "description": "Event type."},
        "timestamp": timestamp,
        "appCode": id_string("Application code; decides the pool."),
        "pushRegistrationId": id_string("Install id: one app instance on one device."),
    }
    for name in STANDARD_PROPERTIES:
        props[name] = string(f"Standard property {name}; the install keeps the latest.")
    return props


REQUIRED = ["eventId", "type", "timestamp", "appCode", "pushRegistrationId"]

TYPE_DESCRIPTIONS = {
    "install": "First start of an app instance on a device.",
    "appLaunch": "App start; logged at most once per 30 s of event time per install.",
    "installUpdate": "Changes install system data, install custom attributes or primaryDevice.",
    "personalize": "Links the install to a person identified by userIdentity.",
    "depersonalize": "Unlinks the install; it starts a new anonymous profile.",
    "personUpdate": "Changes the linked person's attributes, tags or identities.",
    "custom": "An app-defined event.",
    "uninstall": "The app was removed; terminal.",
    "forget": "Erase a person (GDPR): the given identities' person or the install's person.",
}


def specific(event_type: str) -> tuple[Schema, list[str], list[Schema]]:
    """Type-specific properties, extra required names and anyOf alternatives."""
    ref = "#/$defs/"
    if event_type == "install":
        return {"systemData": {"$ref": ref + "systemData"}}, [], []
    if event_type == "installUpdate":
        props = {
            "systemData": {"$ref": ref + "systemData"},
            "customAttributes": attribute_map("Install custom attributes (per device)."),
            "primaryDevice": boolean("Whether this install is the person's primary device."),
        }
        return props, [], [{"required": [name]} for name in props]
    if event_type == "personalize":
        return (
            {
                "userIdentity": {"$ref": ref + "userIdentity"},
                "userAttributes": {"$ref": ref + "personAttributes"},
                "forceDepersonalize": {
                    "type": "boolean",
                    "default": False,
                    "description": "Depersonalize first if linked to another person.",
                },
            },
            ["userIdentity"],
            [],
        )
    if event_type == "personUpdate":
        props = {
            "attributes": {"$ref": ref + "personAttributes"},
            "tagsAdded": string_list("Tags to add.", MAX_TAGS, names=True),
            "tagsRemoved": string_list("Tags to remove.", MAX_TAGS, names=True),
            "identitiesAdded": {"$ref": ref + "userIdentity"},
            "identitiesRemoved": {"$ref": ref + "userIdentity"},
            "identitiesReplaced": {
                "type": "array",
                "maxItems": MAX_IDENTITIES,
                "items": {"$ref": ref + "identityReplacement"},
                "description": "Identity values replaced in place.",
            },
        }
        return props, [], [{"required": [name]} for name in props]
    if event_type == "custom":
        return (
            {
                "definitionId": id_string("Id of the custom event definition."),
                "properties": attribute_map("Event properties."),
            },
            ["definitionId"],
            [],
        )
    if event_type == "forget":
        return {"userIdentity": {"$ref": ref + "userIdentity"}}, [], []
    return {}, [], []


EVENT_TYPES = tuple(TYPE_DESCRIPTIONS)

BASE_EXAMPLE: Schema = {
    "eventId": "0b7c6c1e-5f0e-4a53-9d8e-2f6b1c7d9a01",
    "timestamp": 1732352400000,
    "appCode": "shop-android",
    "pushRegistrationId": "fcm:dGhpcyBpcyBhIHRva2Vu",
    "platform": "android",
    "sdkVersion": "5.2.1",
    "applicationVersion": "3.14.0",
}

TYPE_EXAMPLES: dict[str, list[Schema]] = {
    "install": [
        {
            "systemData": {
                "platform": "android",
                "osVersion": "14",
                "deviceManufacturer": "Google",
                "deviceModel": "Pixel 8",
                "pushRegistrationEnabled": True,
                "notificationsEnabled": True,
            }
        }
    ],
    "appLaunch": [{}, {"timestamp": "2024-11-23T09:00:00.123Z"}],
    "installUpdate": [
        {"customAttributes": {"theme": "dark", "fontScale": 1.2}, "primaryDevice": True}
    ],
    "personalize": [
        {
            "userIdentity": {"externalUserId": "u-1842", "emails": ["ana@example.com"]},
            "userAttributes": {
                "firstName": "Ana",
                "birthday": "1990-04-01",
                "customAttributes": {"loyaltyTier": "gold", "newsletter": True},
            },
            "forceDepersonalize": False,
        }
    ],
    "depersonalize": [{}],
    "personUpdate": [
        {
            "attributes": {"city": "Lisbon", "lastName": None},
            "tagsAdded": ["vip"],
            "identitiesReplaced": [
                {"kind": "email", "old": "ana@example.com", "new": "ana@example.org"}
            ],
        }
    ],
    "custom": [
        {
            "definitionId": "cart_checkout",
            "properties": {"amount": 42.5, "currency": "EUR", "paidAt": "2024-11-23"},
        }
    ],
    "uninstall": [{}],
    "forget": [{}, {"userIdentity": {"phones": ["+351912345678"]}}],
}


def input_example(event_type: str, extra: Schema) -> Schema:
    return {**BASE_EXAMPLE, "type": event_type, **extra}


def event_body(event_type: str, *, output: bool = False) -> Schema:
    """The object schema of one event type (without $schema/$id/$defs)."""
    props = common_properties(event_type, output=output)
    extra, required, any_of = specific(event_type)
    props.update(extra)
    body: Schema = {
        "type": "object",
        "description": TYPE_DESCRIPTIONS[event_type],
        "required": REQUIRED + required,
        "properties": props,
    }
    if output:
        body["properties"].update(
            {
                "installId": string("Install id (= pushRegistrationId).", min_length=1),
                "profileId": string("Profile the event was resolved to.", min_length=1),
                "pool": string("Identity pool of the event's appCode.", min_length=1),
                "resolvedAt": epoch_ms(
                    "When the input log resolved it: the effective time of its input record "
                    "(the running maximum of its partition's broker timestamps, ms). The same "
                    "in every replay."
                ),
                "source": {
                    "type": "object",
                    "description": "The input record it came from (since 1.1): one resolved "
                    "event per input record, so a consumer can drop the copies an "
                    "at-least-once redelivery sends.",
                    "required": ["topic", "partition", "offset"],
                    "properties": {
                        "topic": {"type": "string", "description": "Input topic."},
                        "partition": {"type": "integer", "minimum": 0, "description": "Partition."},
                        "offset": {"type": "integer", "minimum": 0, "description": "Offset."},
                    },
                },
            }
        )
        body["required"] = body["required"] + ["installId", "profileId", "pool", "resolvedAt"]
    else:
        body["additionalProperties"] = False
    if any_of:
        body["anyOf"] = any_of
    return body


def document(path: str, title: str, description: str, body: Schema, examples: list[Any]) -> Schema:
    head: Schema = {
        "$schema": DIALECT,
        "$id": f"{BASE}/{path}/v{VERSION}",
        "title": title,
        "description": description,
        "x-idstream-version": VERSION,
        "x-idstream-minor": MINOR.get(path, 0),
    }
    return {**head, **body, "examples": examples}


def input_schemas() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for event_type in EVENT_TYPES:
        examples = [input_example(event_type, e) for e in TYPE_EXAMPLES[event_type]]
        out[f"input/{event_type}.schema.json"] = document(
            f"input/{event_type}",
            f"{event_type} event",
            TYPE_DESCRIPTIONS[event_type],
            {**event_body(event_type), "$defs": INPUT_DEFS},
            examples,
        )
    defs = dict(INPUT_DEFS)
    for event_type in EVENT_TYPES:
        defs[event_type] = event_body(event_type)
    out["input/event.schema.json"] = document(
        "input/event",
        "input event",
        "One value of the input topic: exactly one of the event types, chosen by `type`.",
        {
            "type": "object",
            "required": ["type"],
            "oneOf": [{"$ref": f"#/$defs/{t}"} for t in EVENT_TYPES],
            "$defs": defs,
        },
        [input_example(t, TYPE_EXAMPLES[t][0]) for t in EVENT_TYPES],
    )
    return out


def resolved_example(event_type: str, extra: Schema) -> Schema:
    event = input_example(event_type, extra)
    event["timestamp"] = BASE_EXAMPLE["timestamp"]
    return {
        **event,
        "installId": event["pushRegistrationId"],
        "profileId": "p-3f9a1c2b7d4e",
        "pool": "default",
        "resolvedAt": event["timestamp"],
    }


def resolved_event_schema() -> Schema:
    defs = dict(INPUT_DEFS)
    for event_type in EVENT_TYPES:
        defs[event_type] = event_body(event_type, output=True)
    return document(
        "output/resolved-event",
        "resolved event",
        "Every accepted input event (timestamp normalized to ms), enriched with the install, "
        "profile and pool it was resolved to. Key: profileId. Consumers ignore unknown fields.",
        {
            "type": "object",
            "required": ["type"],
            "oneOf": [{"$ref": f"#/$defs/{t}"} for t in EVENT_TYPES],
            "$defs": defs,
        },
        [resolved_example(t, TYPE_EXAMPLES[t][0]) for t in ("appLaunch", "personalize")],
    )


# ---------------------------------------------------------------- outputs


def change_kind(kind: str, description: str, props: Schema, required: list[str]) -> Schema:
    return {
        "type": "object",
        "description": description,
        "required": ["kind", *required],
        "properties": {"kind": {"const": kind}, **props},
    }


def old_new() -> Schema:
    return {
        "type": "object",
        "required": ["old", "new"],
        "properties": {
            "old": {"$ref": "#/$defs/attributeValue", "description": "Value before (null: unset)."},
            "new": {"$ref": "#/$defs/attributeValue", "description": "Value after (null: unset)."},
        },
    }


def changes_map(description: str) -> Schema:
    return {"type": "object", "description": description, "additionalProperties": old_new()}


def profile_change_schema() -> Schema:
    identity = {
        "identityKind": {"enum": list(IDENTITY_KINDS), "description": "Identity kind."},
        "value": string("Normalized identity value."),
    }
    install = {
        "pushRegistrationId": string("The install.", min_length=1),
        "appCode": string("The install's appCode."),
    }
    kinds = [
        change_kind(
            "created",
            "A profile was created.",
            {
                "profileKind": {
                    "enum": ["anonymous", "person"],
                    "description": "Anonymous (an install's anonymous period) or person.",
                },
                "pool": string("Identity pool.", min_length=1),
            },
            ["profileKind", "pool"],
        ),
        change_kind("identity_added", "An identity was attached.", identity, list(identity)),
        change_kind("identity_removed", "An identity was detached.", identity, list(identity)),
        change_kind(
            "attributes_changed",
            "Person attributes changed: each changed key with its old and new value.",
            {
                "attributes": changes_map("Standard attributes changed."),
                "customAttributes": changes_map("Custom attributes changed."),
            },
            [],
        ),
        change_kind(
            "tags_changed",
            "Tags added to or removed from the person.",
            {
                "added": string_list("Added tags.", 10_000),
                "removed": string_list("Removed.", 10_000),
            },
            ["added", "removed"],
        ),
        change_kind(
            "install_linked", "An install was linked to the profile.", install, list(install)
        ),
        change_kind(
            "install_unlinked",
            "An install was unlinked from the profile.",
            {
                **install,
                "cause": {
                    "enum": ["depersonalize", "uninstall", "personalize", "merge", "forget"],
                    "description": "Why the link ended.",
                },
            },
            list(install),
        ),
        change_kind(
            "install_updated",
            "An install of the profile changed (system data, custom attributes, primaryDevice, "
            "lifecycle).",
            {
                **install,
                "systemData": changes_map("System data fields changed."),
                "customAttributes": changes_map("Install custom attributes changed."),
                "primaryDevice": {**old_new(), "description": "primaryDevice before and after."},
                "pushEnabled": {**old_new(), "description": "Push reachability before and after."},
                "lifecycle": {
                    "type": "object",
                    "description": "Install lifecycle before and after.",
                    "required": ["old", "new"],
                    "properties": {
                        "old": {"enum": LIFECYCLES, "description": "Before."},
                        "new": {"enum": LIFECYCLES, "description": "After."},
                    },
                },
            },
            list(install),
        ),
        change_kind(
            "merged",
            "The loser profile was merged into the survivor (profileId = survivor); re-key what "
            "you hold under the loser.",
            {
                "loser": string("Profile merged away (now a tombstone).", min_length=1),
                "survivor": string("Profile that remains.", min_length=1),
                "reason": {
                    "enum": ["shared_identity", "continuity"],
                    "description": "Why (1.2): the personalize carried an identity the loser "
                    "owned (`identityKind`, `maskedValue`), or the install's anonymous period "
                    "joined the person it personalized to (continuity `link`).",
                },
                "identityKind": {
                    "enum": list(IDENTITY_KINDS),
                    "description": "shared_identity: the kind of the identity that matched (1.2).",
                },
                "maskedValue": string(
                    "shared_identity: the identity that matched, masked (1.2; never raw)."
                ),
                "pushRegistrationId": string(
                    "The install whose event caused the merge (1.2).", min_length=1
                ),
            },
            ["loser", "survivor"],
        ),
        change_kind(
            "identity_rejected",
            "An identity of the event was not attached.",
            {
                "reason": {
                    "enum": [
                        "identity_conflict",
                        "blocked_identity",
                        "limit_exceeded",
                        "invalid_identity",
                    ],
                    "description": "Why the identity was not attached (a RejectReason).",
                },
                "identityKind": {"enum": list(IDENTITY_KINDS), "description": "Identity kind."},
                "maskedValue": string("The value, masked (never raw personal data)."),
                "limit": {
                    "enum": ["externalUserIds", "emails", "phones", "merges", "installs"],
                    "description": "limit_exceeded: the per-person limit that would have been "
                    "exceeded (1.2): the merge cap (`merges`), or the number of identities of a "
                    "kind, of the person or of the person a merge would have made; 1.3: "
                    "`installs`, the installs linked to one person (the install stays on its "
                    "anonymous profile).",
                },
            },
            ["reason", "identityKind", "maskedValue"],
        ),
        change_kind("forgotten", "The person was erased (GDPR).", {}, []),
    ]
    base = {
        "type": "object",
        "required": ["profileId", "version", "eventId", "eventTime", "kind"],
        "properties": {
            "profileId": string("Profile the change belongs to (the record key).", min_length=1),
            "version": integer("Per-profile version; grows by one per change.", minimum=1),
            "eventId": string("Input event that caused the change.", min_length=1),
            "eventTime": epoch_ms("Event time of the causing event (ms)."),
            "kind": {
                "enum": [k["properties"]["kind"]["const"] for k in kinds],
                "description": "What changed; decides the other fields.",
            },
        },
        "oneOf": kinds,
        "$defs": {"attributeValue": attribute_value()},
    }
    common = {
        "profileId": "p-3f9a1c2b7d4e",
        "version": 3,
        "eventId": "e-77",
        "eventTime": 1732352400000,
    }
    examples = [
        {**common, "kind": "created", "profileKind": "person", "pool": "default"},
        {
            **common,
            "kind": "attributes_changed",
            "attributes": {"city": {"old": None, "new": "Lisbon"}},
        },
        {
            **common,
            "kind": "merged",
            "loser": "p-9c0d",
            "survivor": "p-3f9a1c2b7d4e",
            "reason": "shared_identity",
            "identityKind": "email",
            "maskedValue": "a***@e***.com",
            "pushRegistrationId": "fcm:dGhpcyBpcyBhIHRva2Vu",
        },
        {
            **common,
            "kind": "identity_rejected",
            "reason": "blocked_identity",
            "identityKind": "email",
            "maskedValue": "t***@t***.com",
        },
        {**common, "kind": "tags_changed", "added": ["vip"], "removed": []},
    ]
    return document(
        "output/profile-change",
        "profile change",
        "One state change of a profile (SPEC §6). Key: profileId. Consumers ignore unknown fields.",
        base,
        examples,
    )


def profile_snapshot_schema() -> Schema:
    channel = {
        "type": "object",
        "required": ["value", "primary"],
        "properties": {"value": string("Normalized value."), "primary": boolean("Primary one.")},
    }
    install = {
        "type": "object",
        "required": ["pushRegistrationId", "appCode", "lifecycle", "primaryDevice", "pushEnabled"],
        "properties": {
            "pushRegistrationId": string("Install id.", min_length=1),
            "appCode": string("Application code."),
            "lifecycle": {
                "enum": ["anonymous", "personalized", "depersonalized", "uninstalled"],
                "description": "Install lifecycle.",
            },
            "primaryDevice": boolean("Primary device of the person."),
            "pushEnabled": boolean("Push can reach this install."),
            "systemData": {"type": "object", "description": "Latest system data."},
            "standardProperties": {"type": "object", "description": "Latest standard properties."},
            "customAttributes": attribute_map("Install custom attributes.", None, names=False),
            "linkedAt": epoch_ms("Event time the install was linked (ms)."),
        },
    }
    body: Schema = {
        "type": "object",
        "required": [
            "profileId",
            "kind",
            "pool",
            "version",
            "createdAt",
            "identities",
            "attributes",
            "customAttributes",
            "tags",
            "installs",
            "channels",
            "mergedFrom",
        ],
        "properties": {
            "profileId": string("Profile id (the record key).", min_length=1),
            "kind": {"enum": ["anonymous", "person"], "description": "Profile kind."},
            "pool": string("Identity pool.", min_length=1),
            "version": integer("Version of the last change applied.", minimum=1),
            "createdAt": epoch_ms("Event time of the creating event (ms)."),
            "identities": {
                "type": "object",
                "description": "Unique identities (normalized); empty when anonymous.",
                "required": ["externalUserId", "emails", "phones"],
                "properties": {
                    "externalUserId": {"type": ["string", "null"], "description": "At most one."},
                    "emails": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Emails.",
                    },
                    "phones": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "E.164.",
                    },
                },
            },
            "attributes": {
                "type": "object",
                "description": "Standard person attributes.",
                "properties": {
                    n: {"type": ["string", "null"], "description": n} for n in PERSON_STANDARD
                },
            },
            "customAttributes": attribute_map("Per-person custom attributes.", None, names=False),
            "tags": {
                "type": "array",
                "uniqueItems": True,
                "items": {"type": "string"},
                "description": "Tags of the person.",
            },
            "installs": {
                "type": "array",
                "items": install,
                "description": "Installs linked to the profile, uninstalled ones included.",
            },
            "channels": {
                "type": "object",
                "description": "Identity translation (SPEC §4.9): reachable identities.",
                "required": ["emails", "phones", "push"],
                "properties": {
                    "emails": {"type": "array", "items": channel, "description": "Emails."},
                    "phones": {"type": "array", "items": channel, "description": "Phones."},
                    "push": {
                        "type": "array",
                        "description": "Installs not uninstalled, with push enabled.",
                        "items": {
                            "type": "object",
                            "required": ["pushRegistrationId", "appCode", "primary"],
                            "properties": {
                                "pushRegistrationId": string("Install id.", min_length=1),
                                "appCode": string("Application code."),
                                "primary": boolean("Primary push target."),
                            },
                        },
                    },
                },
            },
            "mergedFrom": {
                "type": "array",
                "description": "Profiles merged into this one.",
                "items": {"type": "string"},
            },
        },
        "$defs": {"attributeValue": attribute_value()},
    }
    example = {
        "profileId": "p-3f9a1c2b7d4e",
        "kind": "person",
        "pool": "default",
        "version": 7,
        "createdAt": 1732352400000,
        "identities": {"externalUserId": "u-1842", "emails": ["ana@example.com"], "phones": []},
        "attributes": {"firstName": "Ana", "city": "Lisbon"},
        "customAttributes": {"loyaltyTier": "gold"},
        "tags": ["vip"],
        "installs": [
            {
                "pushRegistrationId": "fcm:dGhpcyBpcyBhIHRva2Vu",
                "appCode": "shop-android",
                "lifecycle": "personalized",
                "primaryDevice": True,
                "pushEnabled": True,
                "systemData": {"platform": "android"},
                "customAttributes": {"theme": "dark"},
                "linkedAt": 1732352400000,
            }
        ],
        "channels": {
            "emails": [{"value": "ana@example.com", "primary": True}],
            "phones": [],
            "push": [
                {
                    "pushRegistrationId": "fcm:dGhpcyBpcyBhIHRva2Vu",
                    "appCode": "shop-android",
                    "primary": True,
                }
            ],
        },
        "mergedFrom": ["p-9c0d"],
    }
    return document(
        "output/profile-snapshot",
        "profile snapshot",
        "Latest full state of a profile; the compacted topic holds a null value (tombstone) "
        "when the profile is merged away or forgotten. Key: profileId.",
        body,
        [example],
    )


def gateway_source() -> Schema:
    """A dead letter's source when the gateway refused a message of an HTTP request."""
    return {
        "type": "object",
        "description": "A message of a tracking-API request that `idstream gateway` refused.",
        "required": ["kind", "route", "appCode", "receivedAt", "requestId", "index"],
        "properties": {
            "kind": {"const": "gateway", "description": "Always `gateway`."},
            "route": {"type": "string", "description": "Request path, e.g. `/v1/batch`."},
            "appCode": {"type": "string", "description": "appCode of the request's write key."},
            "receivedAt": {"type": "integer", "description": "Gateway receive time (ms)."},
            "requestId": {"type": "string", "description": "Id of the request (logged too)."},
            "index": {
                "type": "integer",
                "minimum": 0,
                "description": "Position of the message in the request (0 for single routes).",
            },
        },
    }


def gateway_original() -> Schema:
    """Size fields of a dead letter, written by `idstream gateway` (optional, additive)."""
    return {
        "originalLength": {
            "type": "integer",
            "minimum": 0,
            "description": "Length of the whole original in bytes.",
        },
        "originalSha256": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "SHA-256 of the whole original (lower-case hex).",
        },
        "truncated": {
            "type": "boolean",
            "description": "True when originalBase64 holds only a prefix of the original "
            "(a gateway message above gateway_max_message_bytes).",
        },
    }


def dead_letter_schema() -> Schema:
    body: Schema = {
        "type": "object",
        "required": ["reason", "detail", "originalBase64", "key", "headers", "source"],
        "properties": {
            "reason": {"enum": list(REJECT_REASONS), "description": "Reason code (RejectReason)."},
            "detail": {
                "type": "string",
                "description": "Human-readable detail; names the field path.",
            },
            "originalBase64": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "The original record value, byte for byte; when it is longer than "
                "the dead-letter size limit (setting dead_letter_max_bytes, 256 KiB by default), "
                "its first dead_letter_max_bytes bytes only (see truncated).",
            },
            "originalLength": {
                "type": "integer",
                "minimum": 0,
                "description": "Length of the whole original value in bytes. Written since the "
                "size limit; absent in older records.",
            },
            "originalSha256": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "SHA-256 of the whole original value (lower-case hex). Written "
                "since the size limit; absent in older records.",
            },
            "truncated": {
                "type": "boolean",
                "description": "True when something of the original is missing: originalBase64 "
                "holds a prefix (the value was above the limit), or the key and headers, which "
                "share 1/16 of the limit, were cut (the key to a prefix, the headers past the "
                "budget left out). Absent in older records (nothing was cut).",
            },
            "key": {
                "type": ["string", "null"],
                "contentEncoding": "base64",
                "description": "The original record key (base64), null if none.",
            },
            "headers": {
                "type": "array",
                "description": "The original record headers, in order.",
                "items": {
                    "type": "object",
                    "required": ["key", "valueBase64"],
                    "properties": {
                        "key": {"type": "string", "description": "Header name."},
                        "valueBase64": {
                            "type": ["string", "null"],
                            "contentEncoding": "base64",
                            "description": "Header value (base64), null if none.",
                        },
                    },
                },
            },
            "source": {
                "description": "Where the record came from: an input record, or a message "
                "of an `idstream gateway` request (`kind`: `gateway`).",
                "anyOf": [
                    {
                        "type": "object",
                        "description": "Where the record was read.",
                        "required": ["topic", "partition", "offset", "timestamp"],
                        "properties": {
                            "topic": {"type": "string", "description": "Input topic."},
                            "partition": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "Partition.",
                            },
                            "offset": {"type": "integer", "minimum": 0, "description": "Offset."},
                            "timestamp": {
                                "type": "integer",
                                "description": "Kafka record time (ms).",
                            },
                        },
                    },
                    gateway_source(),
                ],
            },
            **gateway_original(),
        },
    }
    example = {
        "reason": "malformed_json",
        "detail": "invalid JSON: unexpected end of data",
        "originalBase64": "eyJldmVudElkIjo=",
        "originalLength": 11,
        "originalSha256": "a29fc477651350844a160c22d61b806ca403359e4e5ff7b6620923bcc27739b6",
        "truncated": False,
        "key": "ZmNtOmRHaHBjeUJwY3lCaElIUnZhMlZ1",
        "headers": [{"key": "sdk", "valueBase64": "NS4yLjE="}],
        "source": {
            "topic": "idstream.events",
            "partition": 3,
            "offset": 1842,
            "timestamp": 1732352400000,
        },
    }
    gateway_example = {
        "reason": "schema_violation",
        "detail": "$.event: a track needs an event name",
        "originalBase64": "eyJ0eXBlIjoidHJhY2sifQ==",
        "originalLength": 16,
        "originalSha256": "338932d384008b853f6dd3d47fa582d395ca91ea91d55504fcf32c0a32f7b752",
        "truncated": False,
        "key": "QjUzNzJEQjAtQzIxRS0xMUU0",
        "headers": [],
        "source": {
            "kind": "gateway",
            "route": "/v1/batch",
            "appCode": "shop-ios",
            "receivedAt": 1732352400000,
            "requestId": "5f0c8e2a9b7d4c1e8f6a3b2d1c0e9f8a",
            "index": 2,
        },
    }
    return document(
        "output/dead-letter",
        "dead letter",
        "A rejected input record: original bytes untouched (base64; above a size limit a "
        "prefix, the length and the sha256), reason code, detail and source position. Key: "
        "the original key.",
        body,
        [example, gateway_example],
    )


def forget_register_schema() -> Schema:
    body: Schema = {
        "type": "object",
        "required": ["pool", "timestamp", "position"],
        "properties": {
            "pool": string("Identity pool of the forgotten identity or install.", min_length=1),
            "timestamp": {
                "type": "integer",
                "description": "Event time of the forget (device time, ms): an event of the "
                "identity or install stamped before it, logged after it, is dropped.",
            },
            "position": {
                "type": "array",
                "description": "The forget's position in the input log: effective time (ms), "
                "partition, offset. A rebuild publishes nothing of the person from before it.",
                "items": {"type": "integer"},
                "minItems": 3,
                "maxItems": 3,
            },
        },
    }
    example = {"pool": "default", "timestamp": 1732352400000, "position": [1732352400120, 3, 1842]}
    return document(
        "output/forget-register",
        "forget register entry",
        "One forgotten identity or install (SPEC §4.10). Compacted; the key is a keyed hash "
        "(HMAC-SHA256 with the deployment's secret) of the identity or install, never the "
        "value. A rebuild reads the topic before it starts.",
        body,
        [example],
    )


def all_schemas() -> dict[str, Schema]:
    out = input_schemas()
    out["output/forget-register.schema.json"] = forget_register_schema()
    out["output/resolved-event.schema.json"] = resolved_event_schema()
    out["output/profile-change.schema.json"] = profile_change_schema()
    out["output/profile-snapshot.schema.json"] = profile_snapshot_schema()
    out["output/dead-letter.schema.json"] = dead_letter_schema()
    return out


def _escape_astral(text: str) -> str:
    # Characters beyond the BMP (the forbidden class's tags among them) as JSON surrogate-pair
    # escapes, so that no invisible character stands in a file.
    def pair(match: re.Match[str]) -> str:
        cp = ord(match.group()) - 0x10000
        return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"

    return re.sub("[\U00010000-\U0010ffff]", pair, text)


def render(schema: Schema) -> str:
    return _escape_astral(json.dumps(schema, indent=2, ensure_ascii=False)) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for rel, schema in all_schemas().items():
        path = HERE / rel
        text = render(schema)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale schemas (run schemas/generate.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
