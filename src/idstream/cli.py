"""The `idstream` command line: a thin entry point that hands each subcommand to its module.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`, and keeps heavy
imports (faust, rocksdict) inside `run` so that `idstream --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("idstream.demo", "the main job: broker, worker, simulated traffic, summary"),
    "replay": ("idstream.drivers.local.cli", "process a JSONL file of events in-process"),
    "simulate": ("idstream.simulate.cli", "generate seeded SDK traffic to Kafka or a file"),
    "worker": ("idstream.drivers.faust.cli_worker", "run a stream-processing worker"),
    "rebuild": ("idstream.drivers.faust.cli_rebuild", "rebuild state from the input topic"),
    "export": ("idstream.drivers.faust.export", "write a topic's records to an envelope file"),
    "digest": ("idstream.digest_cli", "print a stable hash of all state tables"),
    "profile": ("idstream.lookup_cli", "look a profile up on a worker (HTTP API), masked"),
    "tail": ("idstream.tail_cli", "follow profile changes (--all: every output topic)"),
    "gateway": ("idstream.gateway.cli", "Segment/RudderStack-compatible tracking API to Kafka"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idstream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if not _available(module):
            continue
        command = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(command)
        command.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = importlib.import_module(args._module).run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
