"""Hostile input through a Kafka worker (issue #11 item 5): over 2,000 records built to break the
resolver's keys, the input policy and the limits (idstream.simulate.hostile), mixed with valid
traffic. The worker never stops; every input record on the broker, counted by (partition,
offset), has exactly one outcome (SPEC §5), the one the in-process driver gives it; and the
worker's state has the in-process driver's digest.

A skip has no output: on the broker it is a position without a resolved event or a dead letter,
which must be one the in-process driver skipped, counted by the worker under the same reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from idstream.domain.identities import forbidden_character
from idstream.domain.messages import SKIP_REASONS
from idstream.simulate.hostile import HostileConfig, hostile
from tests.support.kafka import end_offsets
from tests.support.names import UniqueNames
from tests.support.outcomes import Outcome, Position, broker_outcomes, sink_outcomes
from tests.support.processes import ProcessPool
from tests.support.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Hostile records up to 900 KB: under the broker's and the producer's default of 1 MiB.
CONFIG = HostileConfig(seed=21, events=3_000, hostile_share=0.7, max_oversize_bytes=900_000)
MIN_HOSTILE = 2_000


def several(found: dict[Position, list[Outcome]]) -> dict[Position, list[str]]:
    return {p: [o.what for o in found[p]] for p in sorted(found) if len(found[p]) > 1}


async def test_hostile_records_through_a_worker_each_have_one_outcome_and_the_replay_digest(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    records = list(hostile(CONFIG))
    labels = Counter(r.label.split(":")[0] for r in records)
    assert labels["hostile"] >= MIN_HOSTILE, labels
    assert len(records) - labels["hostile"] >= 500, "valid traffic too"

    topology = Topology(kafka_bootstrap, names, processes, tmp_path, partitions=4)
    await topology.create_input()
    await topology.send([(r.key, r.value) for r in records])
    worker = await topology.start(0)
    await topology.wait_done(240)
    # The worker never stopped: the process started first is still running.
    assert worker.is_running(), f"worker exited {worker.returncode}"
    metrics = await topology.metrics()
    topology.stop_all()

    ends = await end_offsets(kafka_bootstrap, topology.topics["events"])
    inputs = {(tp.partition, offset) for tp, end in ends.items() for offset in range(end)}
    assert len(inputs) >= len(records)  # the worker's tick records come on top
    found = await broker_outcomes(topology)
    expected, sink = await topology.replayed()
    in_process = sink_outcomes(sink, topology.topics["events"])

    # Exactly one outcome per input record, on the broker and in process.
    assert several(found) == {}
    assert several(in_process) == {}
    assert set(in_process) == inputs
    assert set(found) <= inputs
    # The outcome the in-process driver gives each record, resolved or dead-lettered (with its
    # reason); the rest are the records it skipped, which the worker counts by reason.
    published = {p: o[0].what for p, o in in_process.items() if p in found}
    assert {p: o[0].what for p, o in found.items()} == published
    unpublished = {p: o[0].what for p, o in in_process.items() if p not in found}
    lost = {p: what for p, what in unpublished.items() if what not in SKIP_REASONS}
    assert lost == {}, "records the worker published nothing for, though they are not skipped"
    skipped = Counter(unpublished.values())
    counted = {
        label.removeprefix('reason="').removesuffix('"'): int(value)
        for (name, label), value in metrics.items()
        if name == "idstream_skipped_total" and value
    }
    assert counted == dict(skipped)
    kinds = Counter(o[0].what.partition(":")[0] for o in found.values())
    assert kinds["resolved"] > 0 and kinds["dead_letter"] >= labels["hostile"] // 2, kinds

    # No identity holding a control or format character (or worse) was published.
    identities: list[str] = []
    for _, raw in await topology.read(topology.topics["profiles"]):
        if raw is not None:  # None: the tombstone of a forgotten or merged profile
            found_in = orjson.loads(raw)["identities"]
            external = [found_in["externalUserId"]] if found_in["externalUserId"] else []
            identities += [*external, *found_in["emails"], *found_in["phones"]]
    assert identities
    assert [v for v in identities if forbidden_character(v) >= 0] == []

    assert topology.digest() == expected
