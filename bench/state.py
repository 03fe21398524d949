"""State size per table and peak RSS after 2 and 6 days of the same population's traffic.

State must grow with people and installs, not with traffic: the same simulated users send the
same traffic per day for 2 days, then for 6 days (3 times the events), each replayed by
`idstream replay` (the in-process driver, RocksDB state) from an envelope file with record
times (as `idstream simulate --days D` writes them; reinstalls off), in one invocation.
Reported per table: live keys and bytes (key + value, as stored), pending claims included;
the peak RSS of the replay; and the 6-day / 2-day ratios. Goal (issue #13): total bytes at
most 1.25x, RSS flat.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Report, Sample
from bench.rebuild import replay

DESCRIPTION = "state keys and bytes per table, and peak RSS, after 2 and 6 days of traffic"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=200, help="simulated people (200)")
    parser.add_argument(
        "--events-per-day", type=int, default=50_000, help="records per day (50,000)"
    )
    parser.add_argument("--days", default="2,6", help="days of traffic, comma-separated (2,6)")


def table_sizes(state: Path) -> dict[str, dict[str, int]]:
    """Live keys and bytes of every table in a RocksStore directory."""
    from rocksdict import AccessType, Options, Rdict

    from idstream.storage.layout import SEPARATOR

    sizes: dict[str, dict[str, int]] = {}
    db = Rdict(str(state), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        for key, value in db.items():
            name, sep, _ = bytes(key).partition(SEPARATOR)
            table = name.decode("utf-8", "replace") if sep else "(reserved)"
            entry = sizes.setdefault(table, {"keys": 0, "bytes": 0})
            entry["keys"] += 1
            entry["bytes"] += len(key) + len(value)
    finally:
        db.close()
    return sizes


def simulate(path: Path, users: int, events: int, days: int) -> None:
    """The population's traffic: the default mix without uninstalls, and an `install` on a
    device that has the app already is a launch, not a reinstall. (Reinstalls and installs
    after an uninstall are new installs: state grows with them, as it should; here the
    population stays the same once every user has all their installs, within the first day.)"""
    from idstream.simulate import TrafficConfig
    from idstream.simulate.cli import write_envelopes
    from idstream.simulate.config import DEFAULT_MIX
    from idstream.simulate.traffic import Traffic

    gap = max(1, round(days * 86_400_000 / events))
    mix = {kind: weight for kind, weight in DEFAULT_MIX.items() if kind != "uninstall"}
    config = TrafficConfig(
        users=users, events=events, mean_gap_ms=gap, reinstall_share=0.0, mix=mix
    )
    write_envelopes(path, Traffic(config), "idstream.events", 6)


def run(args: argparse.Namespace) -> Report:
    days = [int(d) for d in args.days.split(",")]
    report = Report(
        "state",
        DESCRIPTION,
        params={"users": args.users, "events_per_day": args.events_per_day, "days": days},
    )
    totals: dict[int, list[tuple[int, int]]] = {d: [] for d in days}
    with tempfile.TemporaryDirectory(prefix="idstream-bench-state-") as tmp:
        for d in days:
            events = args.events_per_day * d
            path = Path(tmp) / f"days-{d}.jsonl"
            simulate(path, args.users, events, d)
            for i in range(args.runs):
                work = Path(tmp) / f"run-{d}-{i}"
                wall, rss_kib, _ = replay(path, work)
                sizes = table_sizes(work / "state")
                total = sum(t["bytes"] for t in sizes.values())
                totals[d].append((total, rss_kib))
                extra: dict[str, Any] = {
                    "days": d,
                    "state bytes": total,
                    "peak RSS MiB": round(rss_kib / 1024),
                    "tables": sizes,
                }
                report.samples.append(Sample(events, wall, extra))
                print(f"  {d} days, run {i + 1}: {total:,} bytes, {rss_kib / 1024:,.0f} MiB")
                for name, t in sorted(sizes.items()):
                    print(f"    {name:24} {t['keys']:>10,} keys {t['bytes']:>14,} bytes")
                subprocess.run(["rm", "-rf", str(work)], check=False)
    _notes(report, days, totals)
    return report


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2])


def _notes(report: Report, days: list[int], totals: dict[int, list[tuple[int, int]]]) -> None:
    for d in days:
        size = _median([t for t, _ in totals[d]])
        rss = _median([r for _, r in totals[d]]) / 1024
        report.notes.append(f"{d} days: state {size:,.0f} bytes, peak RSS {rss:,.0f} MiB (median)")
    if len(days) >= 2:
        low, high = days[0], days[-1]
        ratio = _median([t for t, _ in totals[high]]) / _median([t for t, _ in totals[low]])
        rss = _median([r for _, r in totals[high]]) / _median([r for _, r in totals[low]])
        report.notes.append(
            f"{high} / {low} days: state x{ratio:.2f}, peak RSS x{rss:.2f} "
            f"(events x{high / low:.0f}; goal: state <= x1.25)"
        )
