"""Proof of the stack: Faust worker + rocksdict table + Kafka 4.1, across restarts.

A worker subprocess counts records per key in a RocksDB table and emits each count.
It is stopped and restarted (1) on the same data dir with the changelog emptied, so the
state can only come from RocksDB, then (2) on an empty data dir, so it can only come
from the changelog.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.kafka import (
    TopicReader,
    all_committed,
    create_topics,
    delete_all_records,
    produce,
)
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool
from tests.support.stack_app import READY_LINE, TABLE
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 2
# Keys "a" and "d"/"f" land on different partitions (murmur2), so both changelogs count.
TIMEOUT = 90.0


def counts(*values: int) -> list[bytes]:
    return [str(v).encode() for v in values]


class Stack:
    """Runs the stack_app worker in phases: start, feed keys, check output, stop."""

    def __init__(
        self, bootstrap: str, names: UniqueNames, processes: ProcessPool, data_dir: Path
    ) -> None:
        self.bootstrap = bootstrap
        self.processes = processes
        self.app_id = names.app_id()
        self.source, self.sink = names.topic("input"), names.topic("output")
        self.changelog = f"{self.app_id}-{TABLE}-changelog"
        self.env = {
            "STACK_BOOTSTRAP": bootstrap,
            "STACK_APP_ID": self.app_id,
            "STACK_INPUT": self.source,
            "STACK_OUTPUT": self.sink,
            "STACK_DATA_DIR": str(data_dir),
            "STACK_PARTITIONS": str(PARTITIONS),
        }

    async def phase(
        self, name: str, reader: TopicReader, keys: list[bytes], expected: dict[bytes, list[bytes]]
    ) -> None:
        worker = self.processes.start_python_module(
            "tests.support.stack_app", name=name, env=self.env
        )
        # Records that arrive while the worker recovers can be delivered twice (faust
        # seeks the stream to its committed offsets when recovery ends); feed it after.
        await wait_for(
            lambda: READY_LINE in worker.log_text() or not worker.is_running(),
            TIMEOUT,
            message=f"{name} to log {READY_LINE!r}",
        )
        assert worker.is_running(), f"{name} exited {worker.returncode}:\n{worker.log_tail()}"
        await produce(self.bootstrap, self.source, [(key, b"x") for key in keys])

        def output_complete() -> bool:
            assert worker.is_running(), f"{name} exited {worker.returncode}:\n{worker.log_tail()}"
            return all(reader.values.get(key) == vals for key, vals in expected.items())

        try:
            await wait_for(output_complete, TIMEOUT, interval=0.2, message=f"output {expected}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noutput so far: {dict(reader.values)}") from None
        # Faust may stop before committing its last offsets (at-least-once); wait for the
        # commit so the next phase does not count a record twice.
        await wait_for(
            lambda: all_committed(self.bootstrap, self.app_id, self.source),
            TIMEOUT,
            interval=0.3,
            message=f"{name} to commit its input offsets",
        )
        assert worker.stop() == 0, worker.log_tail()


async def test_table_survives_restart_and_rebuilds_from_changelog(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    data_dir = tmp_path / "faust-data"
    stack = Stack(kafka_bootstrap, names, processes, data_dir)
    await create_topics(kafka_bootstrap, [stack.source, stack.sink], PARTITIONS)

    async with TopicReader(kafka_bootstrap, stack.sink) as reader:
        # First run: counts from nothing.
        await stack.phase(
            "worker-first",
            reader,
            [b"a", b"a", b"d", b"a", b"d"],
            {b"a": counts(1, 2, 3), b"d": counts(1, 2)},
        )
        assert any(data_dir.rglob("*.sst")) or any(data_dir.rglob("*.log")), "no RocksDB files"

        # Same data dir, changelog emptied: the counts can only come from RocksDB.
        await delete_all_records(kafka_bootstrap, stack.changelog)
        await stack.phase(
            "worker-rocksdb",
            reader,
            [b"a", b"d"],
            {b"a": counts(1, 2, 3, 4), b"d": counts(1, 2, 3)},
        )

        # Data dir gone: the counts can only come back from the changelog.
        shutil.rmtree(data_dir)
        await stack.phase(
            "worker-changelog",
            reader,
            [b"a", b"d", b"f"],
            {b"a": counts(1, 2, 3, 4, 5), b"d": counts(1, 2, 3, 4), b"f": counts(1)},
        )
