"""The peer of `python -m bench peers`: a Quix Streams app doing only idstream's launch dedup.

Written the way Quix Streams users write an app: an `Application`, a `StreamingDataFrame` over
the input topic, a stateful filter (RocksDB state per message key, the pushRegistrationId),
`to_topic`, `app.run()`. Quix's defaults throughout (JSON via orjson, at-least-once, commit
every 5 s, changelog topic for the state) except the consumer group, `earliest` and the state
directory. An `appLaunch` passes only if more than 30 s of event time separate it from the
install's latest accepted launch; every other event passes. Runs until SIGTERM or Ctrl-C.

    python -m bench.quix_dedup --bootstrap H:P --input T --output T --group G --state-dir D

Needs the bench extra: `pip install -c constraints.txt -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from quixstreams import Application, State

DEDUP_MS = 30_000


def event_ms(stamp: int | str) -> int:
    """The event time in epoch ms: the SDK sends epoch ms or an RFC 3339 string."""
    if isinstance(stamp, str):
        return round(datetime.fromisoformat(stamp).timestamp() * 1000)
    return stamp


def accept(event: dict[str, Any], state: State) -> bool:
    """False for an appLaunch within 30 s of the install's latest accepted launch."""
    if event.get("type") != "appLaunch":
        return True
    ts = event_ms(event["timestamp"])
    last = state.get("last_launch")
    if last is not None and abs(ts - last) <= DEDUP_MS:
        return False
    state.set("last_launch", ts if last is None else max(last, ts))
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quix_dedup", description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--input", required=True, help="input topic (SDK events)")
    parser.add_argument("--output", required=True, help="output topic (accepted events)")
    parser.add_argument("--group", required=True, help="consumer group")
    parser.add_argument("--state-dir", required=True, help="RocksDB state directory")
    args = parser.parse_args(argv)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
    )
    events = app.topic(args.input, value_deserializer="json")
    accepted = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(events)
    sdf = sdf.filter(accept, stateful=True)
    sdf.to_topic(accepted)
    app.run()


if __name__ == "__main__":
    main()
