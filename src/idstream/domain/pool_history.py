"""Each profile's history for the profile explorer: why it merged, what was rejected, and its
latest changes. Bounded per profile, moved with the profile on merges, erased on forget.

Domain layer, standard library only. pool.py calls `record` with the changes a claim emitted
for a live profile, `move` when a profile was merged away and `erase` when it was forgotten.
A profile's history has three sections, each in input-log order:

- merges: one entry per profile in its `mergedFrom` (persons merged in, bounded by the merge
  cap, and the newest anonymous periods); a merged-in person's own merges move with it, so the
  entries form the tree of merges;
- rejections: the newest `HistoryLimits.rejections` `identity_rejected` changes;
- changes: the newest `HistoryLimits.changes` other changes.

Entries hold no raw personal value: identities masked as in logs, attribute and custom
attribute names without their values, at most MAX_NAMES names per list. See docs/explorer.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any

from idstream.domain.config import HistoryLimits
from idstream.domain.erasure import ForgetEntry
from idstream.domain.identities import mask
from idstream.domain.keys import from_number, key, number, parts
from idstream.domain.messages import LogPosition
from idstream.domain.pool_state import HistoryEntry, HistoryHead, PoolTables

MERGES = "m"
REJECTIONS = "r"
CHANGES = "c"
# Names kept per list of an entry (changed attributes, tags, install fields), and their length.
MAX_NAMES = 10
MAX_NAME_CHARS = 100

# Scalar fields an entry keeps, by change kind; identity values are masked first.
_FIELDS: Mapping[str, tuple[str, ...]] = {
    "created": ("profileKind",),
    "merged": ("loser", "survivor", "reason", "identityKind", "maskedValue", "pushRegistrationId"),
    "identity_added": ("identityKind", "maskedValue"),
    "identity_removed": ("identityKind", "maskedValue"),
    "identity_rejected": ("reason", "identityKind", "maskedValue", "limit"),
    "install_linked": ("pushRegistrationId", "appCode"),
    "install_unlinked": ("pushRegistrationId", "appCode"),
    "install_updated": ("pushRegistrationId", "appCode", "lifecycle"),
}


@dataclass(frozen=True, slots=True)
class History:
    """A profile's history as read back, each section oldest first; `timeline` is all of it in
    the input log's order."""

    head: HistoryHead
    merges: tuple[HistoryEntry, ...]
    rejections: tuple[HistoryEntry, ...]
    changes: tuple[HistoryEntry, ...]
    timeline: tuple[HistoryEntry, ...]


def profile_hash(pool: str, profile_id: str) -> str:
    """The key under which a forgotten profile id is remembered: no id is kept in clear."""
    text = "\x1f".join(("forget-profile", pool, profile_id))
    return blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _short(names: Iterable[str]) -> tuple[tuple[str, ...], int]:
    listed = sorted(names)
    kept = tuple(n if len(n) <= MAX_NAME_CHARS else n[: MAX_NAME_CHARS - 1] + "…" for n in listed)
    return kept[:MAX_NAMES], max(0, len(listed) - MAX_NAMES)


def entry_of(change: Mapping[str, Any]) -> HistoryEntry:
    """The history entry of an emitted change (schemas/output/profile-change)."""
    kind = str(change["kind"])
    values = dict(change)
    if kind in ("identity_added", "identity_removed"):
        values["maskedValue"] = mask(str(change["identityKind"]), str(change["value"]))
    if kind == "install_updated" and "lifecycle" in change:
        values["lifecycle"] = change["lifecycle"]["new"]
    fields = {
        name: str(values[name]) for name in _FIELDS.get(kind, ()) if values.get(name) is not None
    }
    lists: dict[str, Iterable[str]] = {}
    if kind == "attributes_changed":
        lists = {"attributes": change["attributes"], "customAttributes": change["customAttributes"]}
    elif kind == "tags_changed":
        lists = {"added": change["added"], "removed": change["removed"]}
    elif kind == "install_updated":
        changed = [n for n in ("primaryDevice", "pushEnabled", "lifecycle") if n in change]
        changed += [f"systemData.{n}" for n in change.get("systemData", {})]
        changed += [f"customAttributes.{n}" for n in change.get("customAttributes", {})]
        lists = {"fields": changed}
    names: dict[str, tuple[str, ...]] = {}
    more = 0
    for name, listed in lists.items():
        names[name], left_out = _short(listed)
        more += left_out
    return HistoryEntry(
        str(change["profileId"]),
        int(change["version"]),
        kind,
        str(change["eventId"]),
        int(change["eventTime"]),
        fields,
        names,
        more,
    )


def _section(kind: str) -> str:
    return REJECTIONS if kind == "identity_rejected" else CHANGES


def _entry_key(pool: str, owner: str, section: str, position: LogPosition, e: HistoryEntry) -> str:
    time, partition, offset = position
    return key(
        pool,
        owner,
        section,
        number(time),
        number(partition),
        number(offset),
        e.profile_id,
        number(e.version),
    )


def record(
    tables: PoolTables,
    pool: str,
    profile_id: str,
    position: LogPosition,
    changes: Sequence[Mapping[str, Any]],
    merged_from: tuple[str, ...] | None,
    limits: HistoryLimits,
) -> None:
    """Add the changes one claim (at `position`) made to a live profile. `merged_from` is the
    profile's `mergedFrom` when the claim changed it (None: unchanged)."""
    head = tables.history_heads.get(key(pool, profile_id)) or HistoryHead()
    added = {CHANGES: 0, REJECTIONS: 0}
    for change in changes:
        entry = entry_of(change)
        if entry.kind == "merged":
            if entry.fields.get("survivor") != profile_id:
                continue  # the loser's side: its history moves (`move`)
            section = MERGES
        else:
            section = _section(entry.kind)
            added[section] += 1
        tables.history.put(_entry_key(pool, profile_id, section, position, entry), entry)
    head = replace(
        head, changes=head.changes + added[CHANGES], rejections=head.rejections + added[REJECTIONS]
    )
    if merged_from is not None:
        head = _keep_merges(tables, pool, profile_id, merged_from, head)
    _put_head(tables, pool, profile_id, _trim(tables, pool, profile_id, head, limits))


def move(
    tables: PoolTables,
    pool: str,
    loser: str,
    survivor: str,
    merged_from: tuple[str, ...],
    limits: HistoryLimits,
) -> None:
    """The history of a profile merged away joins its survivor's (whose `mergedFrom` is given),
    keeping each entry's place in the log; then the survivor's bounds apply."""
    prefix = key(pool, loser)
    moved = HistoryHead()
    for found, entry in list(tables.history.scan(prefix)):
        section, *suffix = parts(found)[2:]
        tables.history.delete(found)
        tables.history.put(key(pool, survivor, section) + key(*suffix), entry)
    old = tables.history_heads.get(prefix)
    if old is not None:
        moved = old
        tables.history_heads.delete(prefix)
    head = tables.history_heads.get(key(pool, survivor)) or HistoryHead()
    head = HistoryHead(
        changes=head.changes + moved.changes,
        rejections=head.rejections + moved.rejections,
        changes_dropped=head.changes_dropped + moved.changes_dropped,
        rejections_dropped=head.rejections_dropped + moved.rejections_dropped,
        merges_dropped=head.merges_dropped + moved.merges_dropped,
    )
    head = _keep_merges(tables, pool, survivor, merged_from, head)
    _put_head(tables, pool, survivor, _trim(tables, pool, survivor, head, limits))


def erase(
    tables: PoolTables,
    pool: str,
    profile_id: str,
    merged_from: tuple[str, ...],
    timestamp: int,
    position: LogPosition,
) -> None:
    """Delete a forgotten profile's history; remember (hashed) that it and the profiles merged
    into it were forgotten, so the explorer says "forgotten" instead of "not found"."""
    prefix = key(pool, profile_id)
    for found, _ in list(tables.history.scan(prefix)):
        tables.history.delete(found)
    tables.history_heads.delete(prefix)
    for pid in (profile_id, *merged_from):
        entry = ForgetEntry(timestamp, position)
        tables.forgotten_profiles.put(key(pool, profile_hash(pool, pid)), entry)


def read(tables: PoolTables, pool: str, profile_id: str) -> History:
    """A profile's history (empty for an unknown profile)."""
    sections: dict[str, list[HistoryEntry]] = {MERGES: [], REJECTIONS: [], CHANGES: []}
    logged: list[tuple[tuple[int, int, int, str, int], HistoryEntry]] = []
    for found, entry in tables.history.scan(key(pool, profile_id)):
        _, _, section, time, partition, offset, origin, version = parts(found)
        sections[section].append(entry)
        at = (from_number(time), from_number(partition), from_number(offset))
        logged.append(((*at, origin, from_number(version)), entry))
    head = tables.history_heads.get(key(pool, profile_id)) or HistoryHead()
    return History(
        head,
        tuple(sections[MERGES]),
        tuple(sections[REJECTIONS]),
        tuple(sections[CHANGES]),
        tuple(entry for _, entry in sorted(logged, key=lambda found: found[0])),
    )


def is_forgotten(tables: PoolTables, pool: str, profile_id: str) -> bool:
    """Whether a profile id (or one merged into it) was erased by a forget."""
    return tables.forgotten_profiles.get(key(pool, profile_hash(pool, profile_id))) is not None


def _keep_merges(
    tables: PoolTables, pool: str, owner: str, merged_from: tuple[str, ...], head: HistoryHead
) -> HistoryHead:
    """Keep the merge entries of the profiles in `mergedFrom` (it lets the oldest anonymous
    periods go, domain/pool_profiles.py)."""
    kept = set(merged_from)
    dropped = 0
    for found, entry in list(tables.history.scan(key(pool, owner, MERGES))):
        if entry.fields.get("loser") not in kept:
            tables.history.delete(found)
            dropped += 1
    return replace(head, merges_dropped=head.merges_dropped + dropped) if dropped else head


def _trim(
    tables: PoolTables, pool: str, owner: str, head: HistoryHead, limits: HistoryLimits
) -> HistoryHead:
    """Let the oldest entries of a section go beyond its bound."""
    for section, count, bound in (
        (CHANGES, head.changes, limits.changes),
        (REJECTIONS, head.rejections, limits.rejections),
    ):
        excess = count - max(0, bound)
        if excess <= 0:
            continue
        oldest = []
        for found, _ in tables.history.scan(key(pool, owner, section)):
            oldest.append(found)
            if len(oldest) == excess:
                break
        for found in oldest:
            tables.history.delete(found)
        if section == CHANGES:
            head = replace(
                head, changes=count - excess, changes_dropped=head.changes_dropped + excess
            )
        else:
            head = replace(
                head, rejections=count - excess, rejections_dropped=head.rejections_dropped + excess
            )
    return head


def _put_head(tables: PoolTables, pool: str, owner: str, head: HistoryHead) -> None:
    if tables.history_heads.get(key(pool, owner)) != head:
        tables.history_heads.put(key(pool, owner), head)
