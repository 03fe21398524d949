"""`idstream worker`: run one stream-processing worker until SIGTERM or Ctrl-C.

Entry point (driver layer). Start more workers with the same settings to scale out; Kafka's
consumer group spreads the partitions over them.

When an agent finds records that faust did not deliver (drivers/faust/continuity.py), the
worker stops and executes itself again, so it goes on from the committed offsets in the same
process (same pid), at most MAX_RESTARTS times.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MAX_RESTARTS = 20
_RESTARTS_ENV = "IDSTREAM_WORKER_RESTARTS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="settings file (TOML or JSON); IDSTREAM_* win")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from faust.worker import Worker

    from idstream.drivers.faust.app import create_app
    from idstream.drivers.faust.continuity import RESTART
    from idstream.drivers.faust.topics import ensure_topics
    from idstream.settings import load_settings

    settings = load_settings(args.settings)
    # Faust creates only the last level of its data dir.
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(ensure_topics(settings))
    app = create_app(settings)
    worker = Worker(app, loglevel=args.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if RESTART.reason is None:
            raise
        _restart(RESTART.reason)
    return 0


def _restart(reason: str) -> None:
    restarts = int(os.environ.get(_RESTARTS_ENV, "0")) + 1
    if restarts > MAX_RESTARTS:
        print(f"idstream worker: gave up after {MAX_RESTARTS} restarts: {reason}", file=sys.stderr)
        raise SystemExit(1)
    print(f"idstream worker: restarting ({restarts}): {reason}", file=sys.stderr, flush=True)
    os.environ[_RESTARTS_ENV] = str(restarts)
    os.execv(sys.executable, [sys.executable, "-m", "idstream", *sys.argv[1:]])
