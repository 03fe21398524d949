"""What the profile explorer's page asks for: a profile, its graph and its history, as JSON.

Presentation layer, pure (the domain and masking.py): both web servers (a worker's, and the
demo's over in-process state) answer `/profiles/{profileId}/history` with `explore`, masked by
`mask_view` unless the raw token asks for raw values. Also here: the answers the lookup API and
the explorer share (`install_view`, `pool_names`), free of any web framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from idstream.domain import pool_history
from idstream.domain.config import DEFAULT_POOL, HistoryLimits
from idstream.domain.install_state import InstallRecord
from idstream.domain.keys import key
from idstream.domain.pool import profile_snapshot
from idstream.domain.pool_state import HistoryEntry, PoolTables
from idstream.masking import mask_snapshot
from idstream.settings import Settings

LIVE = "live"
MERGED = "merged"  # the id asked for was merged away: the answer is its survivor's
FORGOTTEN = "forgotten"  # the id was erased by a forget: nothing else is said


def pool_names(settings: Settings) -> list[str]:
    """Every pool a profile can live in: the configured ones and the default."""
    named = {*settings.pools.values(), *settings.continuity, *settings.conflict_mode}
    return [DEFAULT_POOL, *sorted(named - {DEFAULT_POOL})]


def install_view(rec: InstallRecord) -> dict[str, Any]:
    """What /installs/{pushRegistrationId} answers."""
    return {
        "pushRegistrationId": rec.push_registration_id,
        "appCode": rec.app_code,
        "pool": rec.pool,
        "profileId": rec.profile,
        "lifecycle": rec.lifecycle,
        # The pool has not answered an identity event of the install yet.
        "pending": rec.answered < rec.awaiting,
        "uninstalledAt": rec.uninstalled_at,
        "primaryDevice": None if rec.primary_device is None else rec.primary_device.value,
        "systemData": {k: s.value for k, s in sorted(rec.system_data.items())},
        "customAttributes": {
            k: s.value for k, s in sorted(rec.custom_attributes.items()) if s.value is not None
        },
        "lastLaunch": rec.last_launch,
        "droppedLaunches": rec.dropped_launches,
    }


def entry_view(entry: HistoryEntry) -> dict[str, Any]:
    """One history entry as JSON: the change's common fields, its details, its name lists."""
    return {
        "profileId": entry.profile_id,
        "version": entry.version,
        "kind": entry.kind,
        "eventId": entry.event_id,
        "eventTime": entry.event_time,
        **entry.fields,
        **{name: list(values) for name, values in entry.names.items()},
        **({"more": entry.more} if entry.more else {}),
    }


def explore(
    tables: PoolTables, pool: str, profile_id: str, limits: HistoryLimits
) -> dict[str, Any] | None:
    """The explorer's answer for a profile id in one pool (None: the pool never had it), raw.

    A merged-away id answers with its survivor (`state` "merged", `requested` the id asked
    for); a forgotten one with `state` "forgotten" and nothing else.
    """
    survivor = profile_id
    found = profile_snapshot(tables, pool, profile_id)
    if found is None:
        alias = tables.aliases.get(key(pool, profile_id))
        if alias is not None:
            survivor = alias.survivor
            found = profile_snapshot(tables, pool, survivor)
    if found is None:
        if pool_history.is_forgotten(tables, pool, profile_id):
            return {"state": FORGOTTEN, "requested": profile_id, "pool": pool}
        return None
    history = pool_history.read(tables, pool, survivor)
    head = history.head
    return {
        "state": LIVE if survivor == profile_id else MERGED,
        "requested": profile_id,
        "profileId": survivor,
        "pool": pool,
        "profile": found,
        "merges": [entry_view(e) for e in history.merges],
        # Newest first, as the page lists it.
        "timeline": [entry_view(e) for e in reversed(history.timeline)],
        "kept": {"changes": limits.changes, "rejections": limits.rejections},
        "dropped": {
            "changes": head.changes_dropped,
            "rejections": head.rejections_dropped,
            "merges": head.merges_dropped,
        },
    }


def mask_view(view: Mapping[str, Any]) -> dict[str, Any]:
    """The explorer's answer with the profile masked as the lookup API masks it. The history
    holds no raw personal value (identities masked, attribute names only): it stays."""
    masked = dict(view)
    if isinstance(view.get("profile"), Mapping):
        masked["profile"] = mask_snapshot(view["profile"])
    return masked
