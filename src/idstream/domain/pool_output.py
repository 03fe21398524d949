"""Profile snapshots and change events, derived by comparing pool state before and after a claim.

Domain layer, standard library only. Shapes are those of schemas/output (profile-change,
profile-snapshot); a test validates every record the drivers emit against them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from idstream.domain.events import IdentityKind
from idstream.domain.messages import Value
from idstream.domain.pool_profiles import LIFECYCLE_UNINSTALLED
from idstream.domain.pool_state import Entry, InstallRecord, ProfileRecord


@dataclass(frozen=True, slots=True)
class InstallView:
    push_registration_id: str
    app_code: str
    lifecycle: str
    primary_device: bool
    push_enabled: bool
    system_data: dict[str, Value]
    custom_attributes: dict[str, Value]


@dataclass(frozen=True, slots=True)
class ProfileView:
    """Everything a profile's snapshot and change events are made of."""

    profile_id: str
    kind: str
    created_at: int
    external_user_ids: tuple[str, ...]
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    attributes: dict[str, Value]
    custom_attributes: dict[str, Value]
    tags: tuple[str, ...]
    installs: tuple[InstallView, ...]
    merged_from: tuple[str, ...]


def _shown(entries: dict[str, Entry]) -> dict[str, Value]:
    return {k: e.value for k, e in sorted(entries.items()) if e.value is not None}


def profile_view(
    pid: str, record: ProfileRecord | None, install_of: Callable[[str], InstallRecord | None]
) -> ProfileView | None:
    if record is None:
        return None
    installs = []
    for prid in record.installs:
        install = install_of(prid)
        if install is not None:
            installs.append(
                InstallView(
                    prid,
                    install.app_code,
                    install.lifecycle,
                    install.primary_device,
                    install.push_enabled,
                    dict(install.system_data),
                    dict(install.custom_attributes),
                )
            )
    return ProfileView(
        pid,
        record.kind,
        record.created_at,
        record.external_user_ids,
        record.emails,
        record.phones,
        _shown(record.attributes),
        _shown(record.custom_attributes),
        tuple(sorted(t for t, e in record.tags.items() if e.present)),
        tuple(installs),
        record.merged_from,
    )


def snapshot(view: ProfileView, pool: str, version: int) -> dict[str, Any]:
    """The `profiles` record of SPEC §1 and §4.9."""

    def channel(values: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{"value": v, "primary": i == 0} for i, v in enumerate(values)]

    return {
        "profileId": view.profile_id,
        "kind": view.kind,
        "pool": pool,
        "version": version,
        "createdAt": view.created_at,
        "identities": {
            "externalUserId": view.external_user_ids[0] if view.external_user_ids else None,
            "emails": list(view.emails),
            "phones": list(view.phones),
        },
        "attributes": dict(view.attributes),
        "customAttributes": dict(view.custom_attributes),
        "tags": list(view.tags),
        "installs": [
            {
                "pushRegistrationId": i.push_registration_id,
                "appCode": i.app_code,
                "lifecycle": i.lifecycle,
                "primaryDevice": i.primary_device,
                "pushEnabled": i.push_enabled,
                "systemData": dict(i.system_data),
                "customAttributes": dict(i.custom_attributes),
            }
            for i in view.installs
        ],
        "channels": {
            "emails": channel(view.emails),
            "phones": channel(view.phones),
            "push": [
                {
                    "pushRegistrationId": i.push_registration_id,
                    "appCode": i.app_code,
                    "primary": i.primary_device,
                }
                for i in view.installs
                if i.push_enabled and i.lifecycle != LIFECYCLE_UNINSTALLED
            ],
        },
        "mergedFrom": list(view.merged_from),
    }


_KIND_FIELDS = (
    (IdentityKind.EXTERNAL_USER_ID, "external_user_ids"),
    (IdentityKind.EMAIL, "emails"),
    (IdentityKind.PHONE, "phones"),
)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        key: {"old": old.get(key), "new": new.get(key)}
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


def _install_changes(old: InstallView, new: InstallView) -> dict[str, Any]:
    """The fields of an `install_updated` change that differ (schema: install_updated)."""
    fields: dict[str, Any] = {}
    if system := _changed(old.system_data, new.system_data):
        fields["systemData"] = system
    if custom := _changed(old.custom_attributes, new.custom_attributes):
        fields["customAttributes"] = custom
    if old.primary_device != new.primary_device:
        fields["primaryDevice"] = {"old": old.primary_device, "new": new.primary_device}
    if old.lifecycle != new.lifecycle:
        fields["lifecycle"] = {"old": old.lifecycle, "new": new.lifecycle}
    if old.push_enabled != new.push_enabled:
        fields["pushEnabled"] = {"old": old.push_enabled, "new": new.push_enabled}
    return fields


def diff(before: ProfileView | None, after: ProfileView, pool: str) -> list[dict[str, Any]]:
    """Change events (without the common fields) that turn `before` into `after`."""
    changes: list[dict[str, Any]] = []
    if before is None:
        changes.append({"kind": "created", "profileKind": after.kind, "pool": pool})
    for kind, name in _KIND_FIELDS:
        old: tuple[str, ...] = getattr(before, name) if before is not None else ()
        new: tuple[str, ...] = getattr(after, name)
        changes.extend(
            {"kind": "identity_removed", "identityKind": kind.value, "value": v}
            for v in old
            if v not in new
        )
        changes.extend(
            {"kind": "identity_added", "identityKind": kind.value, "value": v}
            for v in new
            if v not in old
        )
    attributes = _changed(before.attributes if before else {}, after.attributes)
    custom = _changed(before.custom_attributes if before else {}, after.custom_attributes)
    if attributes or custom:
        changes.append(
            {"kind": "attributes_changed", "attributes": attributes, "customAttributes": custom}
        )
    old_tags = set(before.tags) if before is not None else set()
    added = sorted(set(after.tags) - old_tags)
    removed = sorted(old_tags - set(after.tags))
    if added or removed:
        changes.append({"kind": "tags_changed", "added": added, "removed": removed})
    old_installs = {i.push_registration_id: i for i in before.installs} if before else {}
    new_installs = {i.push_registration_id: i for i in after.installs}
    for prid in sorted(old_installs.keys() - new_installs.keys()):
        changes.append(
            {
                "kind": "install_unlinked",
                "pushRegistrationId": prid,
                "appCode": old_installs[prid].app_code,
            }
        )
    for prid, install in sorted(new_installs.items()):
        head = {"pushRegistrationId": prid, "appCode": install.app_code}
        if prid not in old_installs:
            changes.append({"kind": "install_linked", **head})
        elif old_installs[prid] != install:
            fields = _install_changes(old_installs[prid], install)
            if fields:
                changes.append({"kind": "install_updated", **head, **fields})
    return changes
