"""Profile snapshots and change events, derived by comparing pool state before and after a call.

Domain layer, standard library only. Shapes are those of SPEC §6 and docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from idstream.domain.events import IdentityKind
from idstream.domain.pool_profiles import LIFECYCLE_UNINSTALLED
from idstream.domain.pool_state import Entry, InstallRecord, ProfileRecord, StoredValue


@dataclass(frozen=True, slots=True)
class InstallView:
    push_registration_id: str
    app_code: str
    lifecycle: str
    primary_device: bool
    push_enabled: bool
    system_data: dict[str, StoredValue]

    def fields(self) -> dict[str, Any]:
        return {
            "appCode": self.app_code,
            "lifecycle": self.lifecycle,
            "primaryDevice": self.primary_device,
            "pushEnabled": self.push_enabled,
            "systemData": self.system_data,
        }


@dataclass(frozen=True, slots=True)
class ProfileView:
    """Everything a profile's snapshot and change events are made of."""

    profile_id: str
    kind: str
    created_at: int
    external_user_ids: tuple[str, ...]
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    attributes: dict[str, StoredValue]
    custom_attributes: dict[str, StoredValue]
    tags: tuple[str, ...]
    installs: tuple[InstallView, ...]
    merged_from: tuple[str, ...]


def _shown(entries: dict[str, Entry]) -> dict[str, StoredValue]:
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


def diff(before: ProfileView | None, after: ProfileView) -> list[dict[str, Any]]:
    """Change events (without the common fields) that turn `before` into `after`."""
    changes: list[dict[str, Any]] = []
    if before is None:
        changes.append({"type": "created", "kind": after.kind})
    for kind, name in _KIND_FIELDS:
        old: tuple[str, ...] = getattr(before, name) if before is not None else ()
        new: tuple[str, ...] = getattr(after, name)
        changes.extend(
            {"type": "identity_removed", "kind": kind.value, "value": v}
            for v in old
            if v not in new
        )
        changes.extend(
            {"type": "identity_added", "kind": kind.value, "value": v} for v in new if v not in old
        )
    attributes = _changed(before.attributes if before else {}, after.attributes)
    custom = _changed(before.custom_attributes if before else {}, after.custom_attributes)
    if attributes or custom:
        changes.append(
            {"type": "attributes_changed", "attributes": attributes, "customAttributes": custom}
        )
    old_tags = set(before.tags) if before is not None else set()
    added = sorted(set(after.tags) - old_tags)
    removed = sorted(old_tags - set(after.tags))
    if added or removed:
        changes.append({"type": "tags_changed", "added": added, "removed": removed})
    old_installs = {i.push_registration_id: i for i in before.installs} if before else {}
    new_installs = {i.push_registration_id: i for i in after.installs}
    for prid in sorted(old_installs.keys() - new_installs.keys()):
        changes.append({"type": "install_unlinked", "pushRegistrationId": prid})
    for prid, install in sorted(new_installs.items()):
        if prid not in old_installs:
            changes.append({"type": "install_linked", "pushRegistrationId": prid})
        elif old_installs[prid] != install:
            fields = _changed(old_installs[prid].fields(), install.fields())
            changes.append(
                {"type": "install_updated", "pushRegistrationId": prid, "changes": fields}
            )
    return changes
