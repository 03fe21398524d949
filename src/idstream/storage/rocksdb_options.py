"""RocksDB tuning for the Faust table stores, in one place (storage layer).

Faust 0.15 opens one RocksDB per table partition and reads its options from the
table's ``options=`` mapping (there is no app-wide setting), so every table passes
``RocksDBOptions().to_table_options()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class RocksDBOptions:
    """Options for each per-partition RocksDB (sized for a 2-core box with ~100 partition DBs).

    Worst case per partition DB is about block_cache_size + write_buffer_size *
    max_write_buffer_number (64 MiB); the caches only fill as keys are read.
    """

    # Faust's default is 2 GiB *per partition*; 32 MiB keeps the hot keys of a partition.
    block_cache_size: int = 32 * MiB
    # Memtable size: small enough that 100 DBs stay within a few GiB, large enough to batch.
    write_buffer_size: int = 16 * MiB
    # One memtable being flushed while the other takes writes; no more.
    max_write_buffer_number: int = 2
    # SST size target: a few flushes per file, so compaction stays cheap on 2 cores.
    target_file_size_base: int = 32 * MiB
    # Per DB; faust's default is 90% of the process limit for *each* DB, which overcommits.
    max_open_files: int = 256
    # Bloom bits per key: ~1% false positives for the point lookups the resolver does.
    bloom_filter_size: int = 10
    # Name the driver so the store never falls back to python-rocksdb.
    driver: str = "rocksdict"

    def to_table_options(self) -> dict[str, Any]:
        """A fresh ``options=`` mapping for ``app.Table`` (faust pops keys from it: never share)."""
        return {
            "driver": self.driver,
            "block_cache_size": self.block_cache_size,
            "write_buffer_size": self.write_buffer_size,
            "max_write_buffer_number": self.max_write_buffer_number,
            "target_file_size_base": self.target_file_size_base,
            "max_open_files": self.max_open_files,
            "bloom_filter_size": self.bloom_filter_size,
        }
