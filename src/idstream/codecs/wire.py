"""The input wire shape as msgspec Structs, built once per `Limits`; codecs layer.

msgspec checks types, required fields, unknown fields and sizes in C while it parses, so
the schema rules live here as struct fields; what msgspec cannot say (at least one of
several fields, duplicate keys) is checked in decoder.py. Mirrors schemas/input/*.schema.json.
Optional fields default to UNSET, even where the domain has a default, so decoder.py can
count the keys that were present.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from idstream.codecs.limits import MAX_NUMBER, MAX_TIMESTAMP_MS, MIN_NUMBER, Limits
from idstream.domain.events import (
    PERSON_STANDARD_ATTRIBUTES,
    STANDARD_PROPERTIES,
    SYSTEM_DATA_FIELDS,
    EventType,
)

# RFC 3339 date-time as the schema states it: upper-case T and Z, offset with a colon.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)

Field = tuple[str, Any] | tuple[str, Any, Any]


class WireTypes:
    """The decoding type (a tagged union of one struct per event type) and the parts
    decoder.py converts."""

    def __init__(self, limits: Limits) -> None:
        text: Any = Annotated[str, Meta(max_length=limits.max_string_chars)]
        name: Any = Annotated[str, Meta(min_length=1, max_length=limits.max_string_chars)]
        integer: Any = Annotated[int, Meta(ge=MIN_NUMBER, le=MAX_NUMBER)]
        real: Any = Annotated[float, Meta(ge=MIN_NUMBER, le=MAX_NUMBER)]
        value: Any = text | integer | real | bool | None
        attribute_map: Any = Annotated[
            dict[name, value],
            Meta(max_length=limits.max_attributes),
        ]
        identity_list: Any = Annotated[
            tuple[text, ...],
            Meta(max_length=limits.max_identities_per_kind),
        ]
        tag_list: Any = Annotated[tuple[text, ...], Meta(max_length=limits.max_tags)]
        timestamp: Any = (
            Annotated[int, Meta(ge=0, le=MAX_TIMESTAMP_MS)]
            | Annotated[str, Meta(pattern=RFC3339_PATTERN)]
        )

        def struct(type_name: str, fields: Sequence[Field], **config: Any) -> Any:
            return msgspec.defstruct(
                type_name, fields, forbid_unknown_fields=True, frozen=True, **config
            )

        self.system_data: Any = struct(
            "SystemData",
            [
                (field, (text if kind is str else bool) | UnsetType, UNSET)
                for field, kind in SYSTEM_DATA_FIELDS.items()
            ],
        )
        self.user_identity: Any = struct(
            "UserIdentity",
            [
                ("externalUserId", text | UnsetType, UNSET),
                ("emails", identity_list | UnsetType, UNSET),
                ("phones", identity_list | UnsetType, UNSET),
            ],
        )
        self.person_attributes: Any = struct(
            "PersonAttributes",
            [(field, text | None | UnsetType, UNSET) for field in PERSON_STANDARD_ATTRIBUTES]
            + [("customAttributes", attribute_map | UnsetType, UNSET)],
        )
        replacement: Any = struct(
            "IdentityReplacement",
            [
                ("kind", Literal["externalUserId", "email", "phone"]),
                ("old", text),
                ("new", text),
            ],
        )
        replacements: Any = Annotated[
            tuple[replacement, ...],
            Meta(max_length=limits.max_identities_per_kind),
        ]
        common: list[Field] = [
            ("eventId", name),
            ("timestamp", timestamp),
            ("appCode", name),
            ("pushRegistrationId", name),
        ]
        optional: list[Field] = [("schemaVersion", Literal[1] | UnsetType, UNSET)]
        optional += [(field, text | UnsetType, UNSET) for field in STANDARD_PROPERTIES]
        specific: dict[EventType, tuple[list[Field], list[Field]]] = {
            EventType.INSTALL: ([], [("systemData", self.system_data | UnsetType, UNSET)]),
            EventType.APP_LAUNCH: ([], []),
            EventType.INSTALL_UPDATE: (
                [],
                [
                    ("systemData", self.system_data | UnsetType, UNSET),
                    ("customAttributes", attribute_map | UnsetType, UNSET),
                    ("primaryDevice", bool | UnsetType, UNSET),
                ],
            ),
            EventType.PERSONALIZE: (
                [("userIdentity", self.user_identity)],
                [
                    ("userAttributes", self.person_attributes | UnsetType, UNSET),
                    ("forceDepersonalize", bool | UnsetType, UNSET),
                ],
            ),
            EventType.DEPERSONALIZE: ([], []),
            EventType.PERSON_UPDATE: (
                [],
                [
                    ("attributes", self.person_attributes | UnsetType, UNSET),
                    ("tagsAdded", tag_list | UnsetType, UNSET),
                    ("tagsRemoved", tag_list | UnsetType, UNSET),
                    ("identitiesAdded", self.user_identity | UnsetType, UNSET),
                    ("identitiesRemoved", self.user_identity | UnsetType, UNSET),
                    ("identitiesReplaced", replacements | UnsetType, UNSET),
                ],
            ),
            EventType.CUSTOM: (
                [("definitionId", name)],
                [("properties", attribute_map | UnsetType, UNSET)],
            ),
            EventType.UNINSTALL: ([], []),
            EventType.FORGET: ([], [("userIdentity", self.user_identity | UnsetType, UNSET)]),
        }
        self.events: dict[EventType, Any] = {
            event_type: struct(
                f"Wire{event_type.value[0].upper()}{event_type.value[1:]}",
                common + required + optional + extra,
                tag_field="type",
                tag=event_type.value,
            )
            for event_type, (required, extra) in specific.items()
        }
        union: Any = None
        for cls in self.events.values():
            union = cls if union is None else union | cls
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)


@lru_cache(maxsize=8)
def wire_types(limits: Limits) -> WireTypes:
    """The wire types for `limits` (cached: building them costs milliseconds)."""
    return WireTypes(limits)
