"""`idstream tail`: follow the profile-changes topic (with --all every output topic), one
readable line per record, identities masked.

Entry point. Reads with aiokafka without a consumer group (it commits nothing), from the
latest offset or with --from-beginning from the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from idstream.domain.identities import mask

_IDENTITY_CHANGES = ("identity_added", "identity_removed")


def _masked(kind: Any, value: Any) -> str:
    try:
        return mask(str(kind), str(value))
    except ValueError:  # an unknown kind: hide the whole value
        return "***"


def _short(values: Mapping[str, Any] | None) -> str:
    return ",".join(sorted(values or {})) or "-"


_COMMON_CHANGE_FIELDS = frozenset(
    {"profileId", "version", "kind", "eventId", "eventTime", "pushRegistrationId", "appCode"}
)


def change_line(v: Mapping[str, Any]) -> str:
    """One profile change, values of identities masked (identity_rejected comes masked)."""
    kind = v.get("kind")
    head = f"{v.get('profileId')} v{v.get('version')} {kind}"
    if kind in _IDENTITY_CHANGES:
        detail = f"{v.get('identityKind')}={_masked(v.get('identityKind'), v.get('value'))}"
    elif kind == "identity_rejected":
        detail = f"{v.get('identityKind')}={v.get('maskedValue')} reason={v.get('reason')}"
    elif kind == "merged":
        detail = f"{v.get('loser')} -> {v.get('survivor')}"
    elif kind == "created":
        detail = str(v.get("profileKind"))
    elif kind == "attributes_changed":
        attrs, custom = v.get("attributes"), v.get("customAttributes")
        detail = f"attributes={_short(attrs)} custom={_short(custom)}"
    elif kind == "tags_changed":
        detail = f"added={len(v.get('added') or [])} removed={len(v.get('removed') or [])}"
    elif kind in ("install_linked", "install_unlinked"):
        detail = str(v.get("pushRegistrationId"))
    elif kind == "install_updated":
        fields = {k: 1 for k in v if k not in _COMMON_CHANGE_FIELDS}
        detail = f"{v.get('pushRegistrationId')} {_short(fields)}"
    else:
        detail = ""
    return f"{head} {detail} event={v.get('eventId')}".replace("  ", " ")


def snapshot_line(key: str, v: Mapping[str, Any] | None) -> str:
    if v is None:
        return f"{key} tombstone"
    ids = v.get("identities") or {}
    return (
        f"{v.get('profileId')} v{v.get('version')} {v.get('kind')} pool={v.get('pool')} "
        f"externalUserId={'yes' if ids.get('externalUserId') else 'no'} "
        f"emails={len(ids.get('emails') or [])} phones={len(ids.get('phones') or [])} "
        f"installs={len(v.get('installs') or [])}"
    )


def resolved_line(v: Mapping[str, Any]) -> str:
    return (
        f"{v.get('profileId')} {v.get('type')} event={v.get('eventId')} "
        f"install={v.get('pushRegistrationId')} pool={v.get('pool')}"
    )


def dead_letter_line(v: Mapping[str, Any]) -> str:
    # The detail may quote the rejected input; the reason and position are enough here.
    source = v.get("source") or {}
    return (
        f"reason={v.get('reason')} from {source.get('topic')}/{source.get('partition')}"
        f"@{source.get('offset')}"
    )


def render(role: str, key: bytes | None, value: bytes | None) -> str:
    """One record of the output topic playing `role` as a line (no raw identity)."""
    key_text = (key or b"").decode("utf-8", "replace")
    try:
        data = None if value is None else json.loads(value)
    except ValueError:
        return f"{role} {key_text} (not JSON, {len(value or b'')} bytes)"
    if role == "profiles":
        body = snapshot_line(key_text, data)
    elif data is None:
        body = f"{key_text} tombstone"
    elif role == "profile-changes":
        body = change_line(data)
    elif role == "resolved-events":
        body = resolved_line(data)
    else:
        body = dead_letter_line(data)
    return f"{role} {body}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="every output topic, not only changes")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    parser.add_argument("--max", type=int, default=0, help="stop after this many records")
    parser.add_argument("--settings", help="settings file (TOML or JSON); IDSTREAM_* win")


async def follow(settings: Any, roles: dict[str, str], from_beginning: bool, limit: int) -> int:
    from aiokafka import TopicPartition

    from idstream.drivers.faust.topics import consumer as kafka_consumer

    consumer = kafka_consumer(settings)
    await consumer.start()
    try:
        tps: list[TopicPartition] = []
        for topic in roles:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        if not tps:
            print("idstream tail: none of the topics exists yet", file=sys.stderr)
            return 1
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        seen = 0
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    print(render(roles[record.topic], record.key, record.value), flush=True)
                    seen += 1
                    if limit and seen >= limit:
                        return 0
    finally:
        await consumer.stop()


def run(args: argparse.Namespace) -> int:
    from idstream.settings import load_settings

    settings = load_settings(args.settings)
    t = settings.topics
    roles = {t.profile_changes: "profile-changes"}
    if args.all:
        roles |= {
            t.resolved_events: "resolved-events",
            t.profiles: "profiles",
            t.dead_letter: "dead-letter",
        }
    try:
        return asyncio.run(follow(settings, roles, args.from_beginning, args.max))
    except KeyboardInterrupt:
        return 0
