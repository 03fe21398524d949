"""Read the state that Faust workers left in their per-partition RocksDB files (storage layer).

Faust keeps one RocksDB per table partition. Every logical table inside uses the same key
layout as RocksStore (storage/layout.py), so loading all partitions of all stage tables into
DictTables gives the same tables the in-process driver has: `idstream digest --faust-dir`.
Read-only and in memory: for digests, dumps and tests, not for serving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict

from idstream.errors import ConfigurationError
from idstream.storage.codec import ValueCodec
from idstream.storage.layout import SEPARATOR
from idstream.storage.memory import DictTable

# The Faust tables of the two stages (drivers/faust/app.py): one RocksDB per partition each.
INSTALL_TABLE = "install-state"
POOL_TABLE = "pool-state"
STAGE_TABLES = (INSTALL_TABLE, POOL_TABLE)

# Faust records in each partition DB the last changelog offset it holds.
FAUST_OFFSET_KEY = b"__faust\x00offset__"


def partition_dbs(data_dir: Path, table_names: Iterable[str]) -> list[Path]:
    """Every `<table>-<partition>.db` directory under a Faust data dir, in a stable order."""
    found: list[Path] = []
    for name in table_names:
        found.extend(p for p in data_dir.rglob(f"{name}-*.db") if p.is_dir())
    return sorted(found)


def _persisted_offset(path: Path) -> int:
    db = _open(path)
    try:
        raw = db.get(FAUST_OFFSET_KEY)
    finally:
        db.close()
    return -1 if raw is None else int(raw)


def latest_partition_dbs(data_dir: Path, table_names: Iterable[str]) -> list[Path]:
    """One DB per (table, partition): the one holding the newest changelog offset.

    Several workers' data dirs may hold the same partition: a worker keeps the files of a
    partition it lost in a rebalance. The newest owner restored the changelog before it went
    on, so its DB holds the largest offset and everything the older copies hold.
    """
    best: dict[str, tuple[int, Path]] = {}
    for path in partition_dbs(data_dir, table_names):
        offset = _persisted_offset(path)
        if path.name not in best or offset > best[path.name][0]:
            best[path.name] = (offset, path)
    return sorted(path for _, path in best.values())


def _open(path: Path) -> Rdict:
    try:
        return Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    except Exception as exc:  # rocksdict raises plain Exception (missing, locked)
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc


def load_tables(
    db_paths: Iterable[Path], table_types: Mapping[str, type]
) -> dict[str, DictTable[Any]]:
    """Every logical table found in the given RocksDB directories, decoded by its type."""
    tables: dict[str, DictTable[Any]] = {name: DictTable(t) for name, t in table_types.items()}
    codecs: dict[str, ValueCodec[Any]] = {name: ValueCodec(t) for name, t in table_types.items()}
    for path in db_paths:
        db = _open(path)
        try:
            for raw_key, raw_value in db.items():
                assert isinstance(raw_key, bytes) and isinstance(raw_value, bytes)
                name, sep, key = raw_key.partition(SEPARATOR)
                table = name.decode("utf-8", "replace")
                # Faust's own bookkeeping (its changelog offset) is not one of our tables.
                if not sep or table not in tables:
                    continue
                tables[table].put(key.decode("utf-8"), codecs[table].decode(raw_value))
        finally:
            db.close()
    return tables
