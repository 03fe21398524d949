"""What the main job prints after a run: counts, merges, dead letters, one sample person.

Built from the output records alone (whichever driver produced them), so the same summary
describes a Kafka run and an in-process run. Identities are masked.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from idstream.domain.identities import mask
from idstream.domain.messages import OutputTopic

Record = tuple[OutputTopic, str, Mapping[str, Any] | None]


@dataclass
class Summary:
    sent: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_letter_types: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    merges: set[tuple[str, str]] = field(default_factory=set)
    profiles: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    history: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)

    @property
    def persons(self) -> list[Mapping[str, Any]]:
        return [p for p in self.profiles.values() if p.get("kind") == "person"]

    @property
    def dedup_drops(self) -> int:
        """Well-formed launches that produced no resolved event and no dead letter."""
        return (
            self.sent["appLaunch"]
            - self.resolved["appLaunch"]
            - self.dead_letter_types["appLaunch"]
        )


def _original_type(value: Mapping[str, Any]) -> str:
    try:
        original = orjson.loads(base64.b64decode(value.get("originalBase64") or ""))
    except (ValueError, orjson.JSONDecodeError):
        return "?"
    kind = original.get("type") if isinstance(original, dict) else None
    return kind if isinstance(kind, str) else "?"


def summarize(sent: Mapping[str, int], records: Iterable[Record]) -> Summary:
    """Fold the output records (in topic order) into a Summary; `sent` counts input labels."""
    summary = Summary(sent=Counter(sent))
    for topic, key, value in records:
        if topic is OutputTopic.RESOLVED_EVENTS and value is not None:
            summary.resolved[str(value.get("type"))] += 1
        elif topic is OutputTopic.DEAD_LETTER and value is not None:
            summary.dead_letters[str(value.get("reason"))] += 1
            summary.dead_letter_types[_original_type(value)] += 1
        elif topic is OutputTopic.PROFILE_CHANGES and value is not None:
            kind = str(value.get("kind"))
            summary.changes[kind] += 1
            if kind == "merged":
                summary.merges.add((str(value.get("loser")), str(value.get("survivor"))))
            summary.history.setdefault(key, []).append(value)
        elif topic is OutputTopic.PROFILES:
            if value is None:
                summary.profiles.pop(key, None)
            else:
                summary.profiles[key] = value
    return summary


def _masked_identities(profile: Mapping[str, Any]) -> str:
    ids = profile.get("identities") or {}
    shown = []
    if ids.get("externalUserId"):
        shown.append("externalUserId " + mask("externalUserId", ids["externalUserId"]))
    shown += ["email " + mask("email", e) for e in ids.get("emails", [])]
    shown += ["phone " + mask("phone", p) for p in ids.get("phones", [])]
    return ", ".join(shown) or "(none)"


def _change_line(change: Mapping[str, Any]) -> str:
    kind = change.get("kind")
    detail = ""
    if kind in ("identity_added", "identity_removed", "identity_rejected"):
        value = str(change.get("value") or change.get("maskedValue") or "")
        identity_kind = str(change.get("identityKind"))
        shown = value if kind == "identity_rejected" else mask(identity_kind, value)
        detail = f" {identity_kind} {shown}"
        if change.get("reason"):
            detail += f" ({change['reason']})"
    elif kind in ("install_linked", "install_unlinked", "install_updated"):
        detail = f" {change.get('pushRegistrationId')}"
    elif kind == "merged":
        detail = f" {change.get('loser')} -> {change.get('survivor')}"
        if change.get("reason") == "shared_identity":
            detail += f" (shared {change.get('identityKind')} {change.get('maskedValue')})"
        elif change.get("reason"):
            detail += f" ({change['reason']})"
    elif kind == "attributes_changed":
        keys = sorted({*change.get("attributes", {}), *change.get("customAttributes", {})})
        detail = " " + ", ".join(keys)
    return f"v{change.get('version')} {kind}{detail}"


def sample_person(summary: Summary) -> str | None:
    """The person the summary shows: one that absorbed another person if any (it answers
    "why merged?"), then one with a rejected identity ("why not attached?"), then the one with
    the most installs."""

    def absorbed(pid: str) -> bool:
        return any(
            c.get("kind") == "merged"
            and c.get("survivor") == pid
            and c.get("loser") != pid
            and c.get("reason") == "shared_identity"
            for c in summary.history.get(pid, [])
        )

    def rejected(pid: str) -> bool:
        return any(c.get("kind") == "identity_rejected" for c in summary.history.get(pid, []))

    persons = summary.persons
    if not persons:
        return None
    best = max(
        persons,
        key=lambda p: (
            absorbed(p["profileId"]),
            rejected(p["profileId"]),
            len(p.get("installs", [])),
            p["profileId"],
        ),
    )
    return str(best["profileId"])


def render(summary: Summary, *, where: str, max_history: int = 12) -> str:
    lines = [f"idstream demo — {where}", ""]
    lines.append("events sent per type:")
    for label, n in sorted(summary.sent.items()):
        lines.append(f"  {label:<24} {n:>7}")
    lines.append("resolved events per type:")
    for label, n in sorted(summary.resolved.items()):
        lines.append(f"  {label:<24} {n:>7}")
    persons = summary.persons
    sample_id = sample_person(summary)
    lines += [
        f"profiles: {len(summary.profiles)} ({len(persons)} persons, "
        f"{len(summary.profiles) - len(persons)} anonymous)",
        f"merges: {len(summary.merges)}",
        f"launches dropped by the 30-second dedup: {summary.dedup_drops}",
        "dead letters by reason: "
        + (", ".join(f"{r} {n}" for r, n in sorted(summary.dead_letters.items())) or "none"),
    ]
    if sample_id is not None:
        sample = summary.profiles[sample_id]
        pid = sample_id
        lines += ["", f"sample person {pid}:", f"  identities: {_masked_identities(sample)}"]
        for install in sample.get("installs", []):
            lines.append(
                f"  install {install['pushRegistrationId']} app {install['appCode']} "
                f"{install['lifecycle']}{' primary' if install.get('primaryDevice') else ''}"
            )
        history = summary.history.get(pid, [])
        lines.append(f"  change history ({len(history)} changes):")
        for change in history[:max_history]:
            lines.append("    " + _change_line(change))
        if len(history) > max_history:
            lines.append(f"    … {len(history) - max_history} more")
        lines += [
            "",
            "look up more while a worker runs (`make kafka`, then `idstream worker`):",
            f"  idstream profile {pid}",
            "  idstream profile email:<address>   idstream tail",
        ]
    return "\n".join(lines)
