"""Where the local driver's output records go: memory (tests) or one JSONL file per topic.

Drivers layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Protocol

import orjson

from idstream.domain.messages import Output, OutputTopic


class Sink(Protocol):
    def emit(self, output: Output) -> None: ...

    def skip(self, reason: str, topic: str, partition: int, offset: int) -> None:
        """An input record skipped by a rule (SPEC §5): it has no output."""
        ...

    def close(self) -> None: ...


class MemorySink:
    """Keeps every output record, per topic, in emission order."""

    def __init__(self) -> None:
        self.records: dict[OutputTopic, list[Output]] = {topic: [] for topic in OutputTopic}
        self.skips: list[tuple[str, str, int, int]] = []  # (reason, topic, partition, offset)

    def emit(self, output: Output) -> None:
        self.records[output.topic].append(output)

    def skip(self, reason: str, topic: str, partition: int, offset: int) -> None:
        self.skips.append((reason, topic, partition, offset))

    def close(self) -> None:
        """Nothing to release."""

    def __getitem__(self, topic: OutputTopic) -> list[Output]:
        return self.records[topic]


class JsonlSink:
    """Appends to `<topic>.jsonl` files in a directory: one {"key", "value"} object per line
    (value null: a tombstone). Appends, so a replay that continues a state continues its
    outputs too."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = {topic: directory / f"{topic.value}.jsonl" for topic in OutputTopic}
        self._files: dict[OutputTopic, IO[bytes]] = {
            topic: open(path, "ab", buffering=1 << 20)  # noqa: SIM115 - closed in close()
            for topic, path in self.paths.items()
        }
        self.counts: dict[OutputTopic, int] = dict.fromkeys(OutputTopic, 0)
        self.skipped: dict[str, int] = {}

    def emit(self, output: Output) -> None:
        value = None if output.value is None else dict(output.value)
        self._files[output.topic].write(
            orjson.dumps({"key": output.key, "value": value}, option=orjson.OPT_APPEND_NEWLINE)
        )
        self.counts[output.topic] += 1

    def skip(self, reason: str, topic: str, partition: int, offset: int) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def close(self) -> None:
        for file in self._files.values():
            file.close()
