"""`idstream digest`: a stable hash of all state tables of a state directory (or a dump).

Entry point. The same content gives the same digest whichever driver built the state.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state", type=Path, help="state directory of `idstream replay`")
    where.add_argument(
        "--faust-dir",
        type=Path,
        help="data directory of one or more stopped workers (IDSTREAM_DATA_DIR); each "
        "partition is read from its newest copy",
    )
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

    if args.faust_dir is not None:
        return _faust_digest(args)
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


def _faust_digest(args: argparse.Namespace) -> int:
    from idstream.digest import (
        RESOLVER_DIGEST_EXCLUDED,
        RESOLVER_TABLE_TYPES,
        dump_lines,
        state_digest,
    )
    from idstream.errors import IdstreamError
    from idstream.storage.partitions import STAGE_TABLES, latest_partition_dbs, load_tables

    dbs = latest_partition_dbs(args.faust_dir, STAGE_TABLES) if args.faust_dir.is_dir() else []
    if not dbs:
        print(f"idstream digest: no worker state under {args.faust_dir}", file=sys.stderr)
        return 2
    try:
        tables = load_tables(dbs, RESOLVER_TABLE_TYPES)
    except IdstreamError as exc:
        print(f"idstream digest: {exc} (stop the workers first)", file=sys.stderr)
        return 2
    if args.dump:
        for line in dump_lines(tables, RESOLVER_DIGEST_EXCLUDED):
            print(line)
    print(state_digest(tables, RESOLVER_DIGEST_EXCLUDED))
    return 0
