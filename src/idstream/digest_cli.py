"""`idstream digest`: a stable hash of all state tables of a state directory (or a dump).

Entry point. The same content gives the same digest whichever driver built the state.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, required=True, help="state directory (RocksDB)")
    parser.add_argument(
        "--dump", action="store_true", help="print every entry (table, key, value) too"
    )


def run(args: argparse.Namespace) -> int:
    from idstream.digest import dump_lines, state_digest
    from idstream.domain.install import open_install_tables
    from idstream.domain.pool import open_pool_tables
    from idstream.drivers.local.driver import DIGEST_EXCLUDED
    from idstream.errors import IdstreamError
    from idstream.storage.rocks import RocksStore

    if not args.state.is_dir():
        print(f"idstream digest: no state directory {args.state}", file=sys.stderr)
        return 2
    try:
        store = RocksStore(args.state)
    except IdstreamError as exc:
        print(f"idstream digest: {exc}", file=sys.stderr)
        return 2
    try:
        open_install_tables(store)
        open_pool_tables(store)
        if args.dump:
            for line in dump_lines(store.tables, DIGEST_EXCLUDED):
                print(line)
        print(state_digest(store.tables, DIGEST_EXCLUDED))
        sys.stdout.flush()
    except BrokenPipeError:
        # `idstream digest --dump | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        store.close()
    return 0
