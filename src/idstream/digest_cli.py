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
    from idstream.digest import (
        RESOLVER_DIGEST_EXCLUDED,
        RESOLVER_TABLE_TYPES,
        dump_lines,
        state_digest,
    )
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
        for name, value_type in RESOLVER_TABLE_TYPES.items():
            store.open(name, value_type)
        if args.dump:
            for line in dump_lines(store.tables, RESOLVER_DIGEST_EXCLUDED):
                print(line)
        print(state_digest(store.tables, RESOLVER_DIGEST_EXCLUDED))
        sys.stdout.flush()
    except BrokenPipeError:
        # `idstream digest --dump | head`: the reader left; say nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        store.close()
    return 0
