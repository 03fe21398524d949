"""What happened to each input record (SPEC §5), by its (partition, offset): resolved,
dead-lettered, or skipped by a rule. Read from a deployment's output topics on the broker, or
from the in-process driver's sink.

Every resolved event and every dead letter names its input record (`source`); a skip has no
output, so on the broker it shows only as a position without one (and in the worker's
`idstream_skipped_total`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from idstream.domain.messages import OutputTopic
from idstream.drivers.local.sinks import MemorySink

if TYPE_CHECKING:  # the in-process side needs no Kafka client
    from tests.support.topology import Topology

Position = tuple[int, int]  # (partition, offset) of an input record
RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Outcome:
    """`what`: "resolved", "dead_letter:<reason>" or a skip reason; `detail`: a dead letter's."""

    what: str
    detail: str = ""


def _outcome(source: Mapping[str, Any], value: Mapping[str, Any], topic: str) -> Outcome:
    assert source["topic"] == topic, f"an output names another input topic: {source}"
    if "reason" in value:
        return Outcome(f"dead_letter:{value['reason']}", value["detail"])
    return Outcome(RESOLVED)


async def broker_outcomes(topology: Topology) -> dict[Position, list[Outcome]]:
    """The outcome of each input record found in the deployment's resolved-events and
    dead-letter topics now on the broker (skips have none)."""
    found: dict[Position, list[Outcome]] = defaultdict(list)
    for role in ("resolved_events", "dead_letter"):
        for _, raw in await topology.read(topology.topics[role]):
            assert raw is not None, f"a tombstone in {role}"
            value = orjson.loads(raw)
            source = value["source"]
            outcome = _outcome(source, value, topology.topics["events"])
            found[(source["partition"], source["offset"])].append(outcome)
    return dict(found)


def sink_outcomes(sink: MemorySink, topic: str) -> dict[Position, list[Outcome]]:
    """The outcome of each input record of `topic` the in-process driver reported, skips
    included."""
    found: dict[Position, list[Outcome]] = defaultdict(list)
    for output_topic in (OutputTopic.RESOLVED_EVENTS, OutputTopic.DEAD_LETTER):
        for output in sink[output_topic]:
            assert output.value is not None
            source = output.value["source"]
            outcome = _outcome(source, output.value, topic)
            found[(source["partition"], source["offset"])].append(outcome)
    for reason, skipped_topic, partition, offset in sink.skips:
        assert skipped_topic == topic, f"a skip of another input topic: {skipped_topic}"
        found[(partition, offset)].append(Outcome(reason))
    return dict(found)
