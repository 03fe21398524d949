"""`idstream worker`: run one stream-processing worker until SIGTERM or Ctrl-C.

Entry point (driver layer). Start more workers with the same settings to scale out; Kafka's
consumer group spreads the partitions over them.

Exit code 2: the settings or the topics are refused (the message says why). Exit code 70:
storage or delivery failed (the batch stays uncommitted). Exit code 69: Kafka did not answer
for longer than `broker_outage_s`, or the worker read nothing of its backlog for that long
(watchdog.py). Restart the worker, as on any crash: it goes on from the committed offsets.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="settings file (TOML or JSON); IDSTREAM_* win")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from faust.worker import Worker

    from idstream.drivers.faust.app import create_app, halt
    from idstream.drivers.faust.export import read_forget_register
    from idstream.drivers.faust.topics import ensure_topics
    from idstream.drivers.faust.watchdog import Liveness, Watchdog
    from idstream.errors import ConfigurationError
    from idstream.settings import load_settings

    try:
        settings = load_settings(args.settings)
        settings.personal_key()  # refuse to start without one (outside dev mode)
        # Faust creates only the last level of its data dir.
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        asyncio.run(ensure_topics(settings))
        # Before any record: a rebuild must publish nothing of a forgotten person.
        erased = asyncio.run(read_forget_register(settings))
    except ConfigurationError as exc:
        print(f"idstream worker: {exc}", file=sys.stderr)
        return 2
    liveness = Liveness()
    app = create_app(settings, erased, liveness)
    # Started before Faust: a broker gone while the worker starts is waited out the same way.
    Watchdog(settings, liveness, lambda: app.consumer.assignment(), halt).start()
    worker = Worker(app, loglevel=args.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0
