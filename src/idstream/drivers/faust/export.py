"""`idstream export`: a topic's records, as they are on the broker, to an envelope file.

Driver layer (entry point and library). Every record of every partition up to the end offsets
seen at the start, with partition, offset, record time, key and headers, one envelope per line
(codecs/envelope.py). `idstream replay` of that file rebuilds what the workers built from the
same records: the input log is the same, so is the state.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from idstream.codecs.envelope import Envelope, encode_envelope
from idstream.domain.erasure import Erased, read_register
from idstream.errors import IdstreamError
from idstream.settings import Settings, load_settings

# Records per fetch while exporting.
_FETCH = 5000


async def read_envelopes(settings: Settings, topic: str) -> AsyncIterator[Envelope]:
    """Every record of `topic` now on the broker, partition by partition, in offset order."""
    from aiokafka import TopicPartition

    from idstream.drivers.faust.topics import consumer

    client = consumer(settings)
    await client.start()
    try:
        numbers = client.partitions_for_topic(topic)
        if not numbers:
            # A consumer without subscriptions has no metadata yet: ask the broker.
            await client._client.force_metadata_update()
            numbers = client.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(numbers)]
        ends = await client.end_offsets(tps)
        for tp in tps:
            client.assign([tp])
            await client.seek_to_beginning(tp)
            while await client.position(tp) < ends[tp]:
                fetched = await client.getmany(tp, timeout_ms=1000, max_records=_FETCH)
                for record in fetched.get(tp, []):
                    if record.offset >= ends[tp]:
                        break
                    yield Envelope(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        timestamp=record.timestamp,
                        key=record.key,
                        headers=tuple((k, bytes(v or b"")) for k, v in record.headers),
                        value=record.value or b"",
                    )
    finally:
        await client.stop()


async def read_forget_register(settings: Settings) -> Erased:
    """The forget register as it is on the broker (empty when the topic does not exist yet)."""
    import orjson

    records = []
    async for envelope in read_envelopes(settings, settings.topics.forget_register):
        value = None if not envelope.value else orjson.loads(envelope.value)
        records.append(((envelope.key or b"").decode("utf-8"), value))
    return read_register(records)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="envelope file to write")
    parser.add_argument(
        "--topic", help="topic to export (default: the input topic of the settings)"
    )
    parser.add_argument("--settings", type=Path, help="settings file (TOML or JSON)")


async def _export(settings: Settings, topic: str, path: Path) -> int:
    count = 0
    with open(path, "wb") as out:
        async for envelope in read_envelopes(settings, topic):
            out.write(encode_envelope(envelope))
            count += 1
    return count


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.settings)
        topic = args.topic or settings.topics.events
        count = asyncio.run(_export(settings, topic, args.output))
    except (IdstreamError, OSError) as exc:
        print(f"idstream export: {exc}", file=sys.stderr)
        return 2
    print(f"exported {count:,} records of {topic} to {args.output}", file=sys.stderr)
    return 0
