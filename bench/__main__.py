"""`python -m bench [NAME ...] [--runs N]`: run benchmarks, print summaries, write results.

With no NAME, every benchmark whose module is present runs, cheapest first.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from bench import harness

# Cheapest first; a module that is not there (yet) is left out.
ORDER = (
    "generate",
    "decode",
    "ceiling",
    "core",
    "pool",
    "gateway",
    "state",
    "memory",
    "rebuild",
    "e2e",
    "peers",
    "soak",
)


def _available() -> list[str]:
    return [name for name in ORDER if importlib.util.find_spec(f"bench.{name}") is not None]


def main(argv: Sequence[str] | None = None) -> int:
    available = _available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(available)}")
    parser.add_argument("--runs", type=int, default=3, help="timed runs each (default 3)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    known, rest = parser.parse_known_args(argv)
    unknown = [n for n in known.names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(available)}")
    failed = 0
    names = known.names or available
    if rest and len(names) != 1:
        parser.error(f"options {' '.join(rest)} need exactly one NAME")
    # Extra options go to the benchmark only when it alone was named.
    extra = rest if len(names) == 1 else []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            # A module with its own command line (no harness Report): bench/decode.py.
            failed += 1 if module.main([*extra, "--runs", str(known.runs)]) else 0
            continue
        sub = argparse.ArgumentParser(prog=f"python -m bench {name}")
        if hasattr(module, "add_arguments"):
            module.add_arguments(sub)
        args = sub.parse_args(extra)
        args.runs = known.runs
        report: harness.Report = module.run(args)
        # Load average as it was while this benchmark ran.
        machine = harness.machine_info()
        print(harness.summary(report, machine), flush=True)
        if not known.no_save:
            print(f"  saved {harness.write_result(report, machine)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
