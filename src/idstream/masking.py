"""Masked views of what the lookup API answers: profile snapshots and install views.

Presentation layer, pure (standard library and the domain's `mask`): the worker's HTTP API,
`idstream profile` and any later page share it. Masking keeps the shape an operator needs to
debug (which identities and attributes are set, ids, installs, lifecycle) and hides the
personal values: identities as `mask` shows them in logs (`j***@e***.com`, `+49********67`,
`c***2`), attribute values as `***`. Fields this module does not know are hidden too, so a
field the resolver adds later is never shown raw by accident.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from idstream.domain.events import IdentityKind
from idstream.domain.identities import mask

# What a masked attribute value reads as; null (unset) stays null.
HIDDEN = "***"

_Rule = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _hidden(value: Any) -> Any:
    return None if value is None else HIDDEN


def _apply(rules: Mapping[str, _Rule], value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: rules.get(k, _hidden)(v) for k, v in value.items()}


def mask_attribute_values(values: Any) -> Any:
    """Every value of an attribute map hidden, the names kept (which attributes are set)."""
    if not isinstance(values, Mapping):
        return _hidden(values)
    return {name: _hidden(v) for name, v in values.items()}


def _identity(kind: IdentityKind) -> _Rule:
    def rule(value: Any) -> Any:
        return mask(kind, value) if isinstance(value, str) else _hidden(value)

    return rule


def _each(rule: _Rule) -> _Rule:
    def apply(values: Any) -> Any:
        return [rule(v) for v in values] if isinstance(values, list) else _hidden(values)

    return apply


def _fields(rules: Mapping[str, _Rule]) -> _Rule:
    """An object whose known fields follow their rule; unknown fields are hidden."""

    def apply(value: Any) -> Any:
        return _apply(rules, value) if isinstance(value, Mapping) else _hidden(value)

    return apply


_EMAIL = _identity(IdentityKind.EMAIL)
_PHONE = _identity(IdentityKind.PHONE)

_IDENTITIES = _fields(
    {
        "externalUserId": _identity(IdentityKind.EXTERNAL_USER_ID),
        "emails": _each(_EMAIL),
        "phones": _each(_PHONE),
    }
)

# An install inside a snapshot: device and app data stay, its custom attribute values go.
_SNAPSHOT_INSTALL = _fields(
    {
        "pushRegistrationId": _same,
        "appCode": _same,
        "lifecycle": _same,
        "primaryDevice": _same,
        "pushEnabled": _same,
        "systemData": _same,
        "standardProperties": _same,
        "customAttributes": mask_attribute_values,
        "linkedAt": _same,
    }
)

_CHANNELS = _fields(
    {
        "emails": _each(_fields({"value": _EMAIL, "primary": _same})),
        "phones": _each(_fields({"value": _PHONE, "primary": _same})),
        "push": _each(_fields({"pushRegistrationId": _same, "appCode": _same, "primary": _same})),
    }
)

# Every field of schemas/output/profile-snapshot.schema.json, classified.
SNAPSHOT_RULES: Mapping[str, _Rule] = {
    "profileId": _same,
    "kind": _same,
    "pool": _same,
    "version": _same,
    "createdAt": _same,
    "identities": _IDENTITIES,
    # Standard person attributes (names, birthday, gender, address, city, country,
    # preferredLanguage): all personal.
    "attributes": mask_attribute_values,
    "customAttributes": mask_attribute_values,
    # Tags are segment names from the operator's own vocabulary, needed to debug targeting.
    "tags": _same,
    "installs": _each(_SNAPSHOT_INSTALL),
    "channels": _CHANNELS,
    "mergedFrom": _same,
}

# Every field of the install view (`GET /installs/{pushRegistrationId}`), classified.
INSTALL_VIEW_RULES: Mapping[str, _Rule] = {
    "pushRegistrationId": _same,
    "appCode": _same,
    "pool": _same,
    "profileId": _same,
    "lifecycle": _same,
    "pending": _same,
    "uninstalledAt": _same,
    "primaryDevice": _same,
    "systemData": _same,
    "customAttributes": mask_attribute_values,
    "lastLaunch": _same,
    "droppedLaunches": _same,
}


def mask_snapshot(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """A profile snapshot with identities masked and personal attribute values hidden."""
    return _apply(SNAPSHOT_RULES, snapshot)


def mask_install_view(view: Mapping[str, Any]) -> dict[str, Any]:
    """An install view with its custom attribute values hidden."""
    return _apply(INSTALL_VIEW_RULES, view)
