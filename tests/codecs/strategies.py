"""Hypothesis strategies for input events, mirroring schemas/input (valid) and breaking them.

Valid documents follow the schema by construction; tests check both the decoder and
jsonschema accept them, so a drift on either side fails.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from idstream.domain.events import (
    PERSON_STANDARD_ATTRIBUTES,
    STANDARD_PROPERTIES,
    SYSTEM_DATA_FIELDS,
)

MAX_STRING = 1024
MAX_TIMESTAMP_MS = 253_402_300_799_999
EVENT_TYPES = (
    "install",
    "appLaunch",
    "installUpdate",
    "personalize",
    "depersonalize",
    "personUpdate",
    "custom",
    "uninstall",
    "forget",
)

Doc = dict[str, Any]

text = st.text(max_size=24)
# Ids and names hold no control or format character, surrogate or non-character (Cn: the
# non-characters, and unassigned code points, which the policy allows but need not be drawn).
name_character = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Cn"))
name = st.text(name_character, min_size=1, max_size=24)
tag = st.text(name_character, max_size=24)
# What an id or a name may not hold, by kind: C0 separators, DEL, C1, zero-width, bidi, BOM,
# tag letters (beyond the BMP), non-characters.
forbidden_character = st.sampled_from(
    (
        *("\x00", "\x1e", "\x1f", "\n", "\x7f", "\x85", "\u200b", "\u202e", "\u2066"),
        *("\ufeff", "\u00ad", "\U000e0041", "\U000e0001", "\ufdd0", "\uffff", "\U0010fffe"),
    )
)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2090, 1, 1)))
    fraction = draw(st.sampled_from(["", ".1", ".123", ".123456", ".123456789"]))
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    if minutes == 0 and draw(st.booleans()):
        zone = "Z"
    else:
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


timestamp = st.one_of(st.integers(0, MAX_TIMESTAMP_MS), rfc3339())
number = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(min_value=-1e18, max_value=1e18, allow_nan=False, allow_infinity=False),
)
date = st.dates().map(lambda d: d.isoformat())
attribute_value = st.one_of(text, number, st.booleans(), st.none(), date, rfc3339())
attribute_map = st.dictionaries(name, attribute_value, max_size=6)

system_data = st.fixed_dictionaries(
    {},
    optional={
        k: (text if kind is str else st.booleans()) for k, kind in SYSTEM_DATA_FIELDS.items()
    },
)


@st.composite
def user_identity(draw: st.DrawFn) -> Doc:
    doc = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "externalUserId": text,
                "emails": st.lists(text, max_size=3),
                "phones": st.lists(text, max_size=3),
            },
        )
    )
    if "externalUserId" not in doc and not doc.get("emails") and not doc.get("phones"):
        key = draw(st.sampled_from(["externalUserId", "emails", "phones"]))
        doc[key] = draw(text) if key == "externalUserId" else [draw(text)]
    return doc


person_attributes = st.fixed_dictionaries(
    {},
    optional={
        **{k: st.one_of(text, st.none()) for k in PERSON_STANDARD_ATTRIBUTES},
        "customAttributes": attribute_map,
    },
)
replacement = st.fixed_dictionaries(
    {"kind": st.sampled_from(["externalUserId", "email", "phone"]), "old": text, "new": text}
)
standard_properties = {k: text for k in STANDARD_PROPERTIES}


def _with_one_of(base: st.SearchStrategy[Doc], choices: dict[str, Any]) -> Any:
    """`base` plus at least one of `choices` (the schema's anyOf of required keys)."""

    @st.composite
    def build(draw: st.DrawFn) -> Doc:
        doc = draw(base)
        extra = draw(st.fixed_dictionaries({}, optional=choices))
        if not extra:
            key = draw(st.sampled_from(sorted(choices)))
            extra[key] = draw(choices[key])
        return {**doc, **extra}

    return build()


SPECIFIC: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    # type: (required, optional, at-least-one-of)
    "install": ({}, {"systemData": system_data}, {}),
    "appLaunch": ({}, {}, {}),
    "installUpdate": (
        {},
        {},
        {
            "systemData": system_data,
            "customAttributes": attribute_map,
            "primaryDevice": st.booleans(),
        },
    ),
    "personalize": (
        {"userIdentity": user_identity()},
        {"userAttributes": person_attributes, "forceDepersonalize": st.booleans()},
        {},
    ),
    "depersonalize": ({}, {}, {}),
    "personUpdate": (
        {},
        {},
        {
            "attributes": person_attributes,
            "tagsAdded": st.lists(tag, max_size=4),
            "tagsRemoved": st.lists(tag, max_size=4),
            "identitiesAdded": user_identity(),
            "identitiesRemoved": user_identity(),
            "identitiesReplaced": st.lists(replacement, max_size=3),
        },
    ),
    "custom": ({"definitionId": name}, {"properties": attribute_map}, {}),
    "uninstall": ({}, {}, {}),
    "forget": ({}, {"userIdentity": user_identity()}, {}),
}


def event_of(event_type: str) -> Any:
    required, optional, one_of = SPECIFIC[event_type]
    base = st.fixed_dictionaries(
        {
            "eventId": name,
            "type": st.just(event_type),
            "timestamp": timestamp,
            "appCode": name,
            "pushRegistrationId": name,
            **required,
        },
        optional={**standard_properties, **optional, "schemaVersion": st.just(1)},
    )
    return _with_one_of(base, one_of) if one_of else base


valid_event = st.sampled_from(EVENT_TYPES).flatmap(event_of)


# ---------------------------------------------------------------- breaking a document


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value below the root."""
    out: list[tuple[Any, ...]] = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        out.append((*prefix, key))
        out.extend(paths(value, (*prefix, key)))
    return out


def get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def replaced(doc: Doc, path: tuple[Any, ...], value: Any) -> Doc:
    copy: Any = _deep_copy(doc)
    parent = get(copy, path[:-1])
    parent[path[-1]] = value
    return copy  # type: ignore[no-any-return]


def removed(doc: Doc, path: tuple[Any, ...]) -> Doc:
    copy: Any = _deep_copy(doc)
    parent = get(copy, path[:-1])
    del parent[path[-1]]
    return copy  # type: ignore[no-any-return]


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


any_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
nested_junk = st.one_of(
    st.just({"x": [1]}),
    st.just([{"y": {}}]),
    st.lists(any_json_scalar, min_size=1, max_size=3).map(lambda v: {"nested": v}),
)
