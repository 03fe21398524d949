"""`idstream rebuild`: rebuild every table from the input topic, with a progress bar.

Entry point (driver layer). Stop all workers first; then start them again as usual.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="settings file (TOML or JSON); IDSTREAM_* win")
    parser.add_argument(
        "--timeout", type=float, default=24 * 3600, help="give up after this many seconds"
    )


def _bar(done: int, total: int, started: float, width: int = 30) -> str:
    share = 1.0 if total == 0 else min(1.0, done / total)
    rate = done / max(time.monotonic() - started, 1e-6)
    filled = int(share * width)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} events ({rate:,.0f}/s)"


def run(args: argparse.Namespace) -> int:
    from idstream.devbroker import die_with_parent
    from idstream.drivers.faust.rebuild import reset
    from idstream.drivers.faust.topics import group_lag, pending_claims, pipeline_topics
    from idstream.errors import IdstreamError
    from idstream.settings import load_settings

    try:
        settings = load_settings(args.settings)
        settings.personal_key()  # the rebuilt state must hash as the live one did
        total = asyncio.run(reset(settings))
    except IdstreamError as exc:
        print(f"idstream rebuild: {exc}", file=sys.stderr)
        return 2
    print(f"reset {settings.app_id}; reprocessing {total} input records", file=sys.stderr)
    command = [sys.executable, "-m", "idstream", "worker"]
    if args.settings:
        command += ["--settings", args.settings]
    worker = subprocess.Popen(
        command, env=dict(os.environ), start_new_session=True, preexec_fn=die_with_parent
    )
    started = time.monotonic()
    caught_up = 0
    try:
        while caught_up < 2:  # twice: a decision can make the install stage send more
            if worker.poll() is not None:
                print(
                    f"\nidstream rebuild: the worker exited ({worker.returncode})",
                    file=sys.stderr,
                )
                return 1
            if time.monotonic() - started > args.timeout:
                print("\nidstream rebuild: timed out", file=sys.stderr)
                return 1
            lag = asyncio.run(group_lag(settings, pipeline_topics(settings)))
            input_lag = asyncio.run(group_lag(settings, [settings.topics.events]))
            print(_bar(total - input_lag, total, started), end="", file=sys.stderr, flush=True)
            # Done when everything is read and no claim waits for a tick.
            quiet = lag == 0 and asyncio.run(pending_claims(settings)) == 0
            caught_up = caught_up + 1 if quiet else 0
            time.sleep(0.5)
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
    elapsed = time.monotonic() - started
    print(f"\nrebuilt from {total} input records in {elapsed:.1f} s", file=sys.stderr)
    return 0
