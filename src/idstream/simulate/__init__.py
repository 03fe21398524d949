"""Seeded SDK traffic for tests, benchmarks and the demo.

Simulation layer: standard library plus orjson; one `random.Random(seed)` and a simulated
clock starting at `START_MS` (2026-01-01T00:00:00Z), so a config always gives the same bytes.

    from idstream.simulate import Traffic, TrafficConfig, generate

    for record in generate(TrafficConfig(seed=1, users=1000, events=10_000)):
        record.key        # pushRegistrationId as bytes (the Kafka key)
        record.value      # the wire JSON value (bytes, one line)
        record.label      # event type, or "malformed:<kind>"
        record.flags      # ("relaunch",), ("late",), ("junk",), ("conflict",), ...
        record.record_ms  # simulated arrival time, usable as the Kafka record timestamp

    traffic = Traffic(config)      # the same, with running counts:
    for record in traffic: ...
    traffic.stats.labels           # Counter per label; .flags per marker; .malformed

`TrafficConfig` sets the mix (relative weights per event type, `DEFAULT_MIX` per 1,000 events)
and the shares of odd traffic: malformed records, blocklisted identities, conflicting email
claims, shared devices, users on two appCodes, relaunches inside 30 s, late events after an
uninstall, lost install events, backwards jitter, RFC 3339 timestamps, email changes.
`idstream simulate` (cli.py) writes the stream to a JSONL file or a Kafka topic.
`idstream.simulate.hostile` mixes hostile records (issue #11) into the same traffic.
"""

from __future__ import annotations

from idstream.simulate.config import DEFAULT_MIX, START_MS, TrafficConfig
from idstream.simulate.traffic import SimRecord, Traffic, TrafficStats, generate

__all__ = [
    "DEFAULT_MIX",
    "START_MS",
    "SimRecord",
    "Traffic",
    "TrafficConfig",
    "TrafficStats",
    "generate",
]
