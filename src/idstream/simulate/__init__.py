"""Seeded SDK traffic for tests, benchmarks and the demo: `generate(TrafficConfig(...))`.

Simulation layer: standard library plus orjson; deterministic for a given config.
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
