"""A minimal Faust worker for tests/integration/test_stack.py (run as a subprocess).

Counts records per key in a RocksDB (rocksdict) table and emits each new count:

    STACK_BOOTSTRAP=127.0.0.1:9092 STACK_APP_ID=... STACK_INPUT=... STACK_OUTPUT=...
    STACK_DATA_DIR=... STACK_PARTITIONS=2 python -m tests.support.stack_app
"""

from __future__ import annotations

import logging
import os
from typing import Any

import faust

from idstream.storage.rocksdb_options import RocksDBOptions

TABLE = "counts"
READY_LINE = "[^Worker]: Ready"

logger = logging.getLogger(__name__)


def create_app(env: dict[str, str]) -> faust.App:
    partitions = int(env.get("STACK_PARTITIONS", "2"))
    app = faust.App(
        env["STACK_APP_ID"],
        broker=f"kafka://{env['STACK_BOOTSTRAP']}",
        store="rocksdb://",
        datadir=env["STACK_DATA_DIR"],
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        web_enabled=False,
        # Commit often so a stop soon after processing loses little and tests stay quick.
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
    )
    # Raw bytes both ways: faust's default serializer is JSON even for value_type=bytes.
    raw = {"key_serializer": "raw", "value_serializer": "raw", "partitions": partitions}
    source = app.topic(env["STACK_INPUT"], key_type=bytes, value_type=bytes, **raw)
    sink = app.topic(env["STACK_OUTPUT"], key_type=bytes, value_type=bytes, **raw)
    counts = app.Table(
        TABLE,
        default=int,
        key_type=str,
        value_type=int,
        partitions=partitions,
        options=RocksDBOptions().to_table_options(),
    )

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            key = event.key.decode()
            counts[key] += 1
            # One line per record, so a test failure shows what was processed twice.
            logger.info(
                "processed key=%s partition=%s offset=%s count=%s",
                key,
                event.message.partition,
                event.message.offset,
                counts[key],
            )
            await sink.send(key=event.key, value=str(counts[key]).encode())

    return app


def main() -> None:
    app = create_app(dict(os.environ))
    worker = faust.Worker(app, loglevel="info")
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
