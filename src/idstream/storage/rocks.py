"""RocksDB-backed state tables (rocksdict): one database per state directory, a key prefix
per table, msgpack values, writes buffered and committed in one WriteBatch.

Storage layer. Reads see pending (not yet committed) writes. The driver calls `flush()` every
N inputs, so one WriteBatch carries the state changes of many events.
"""

from __future__ import annotations

import importlib
import logging
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec
from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from idstream.domain.ports import StateTable
from idstream.errors import ConfigurationError, StateFormatError
from idstream.storage.codec import ValueCodec
from idstream.storage.layout import (
    FORMAT_VERSION_KEY,
    KEY_FINGERPRINT_KEY,
    STATE_FORMAT_VERSION,
    prefix_upper_bound,
    table_prefix,
)

logger = logging.getLogger(__name__)

V = TypeVar("V")


class _Deleted:
    """Marks a pending delete."""


DELETED: Final = _Deleted()


class Tuning(Protocol):
    """What the store reads of storage.rocksdb_options.RocksDBOptions (the one place the
    tuning is decided); any object with these attributes will do."""

    @property
    def block_cache_size(self) -> int: ...
    @property
    def write_buffer_size(self) -> int: ...
    @property
    def max_write_buffer_number(self) -> int: ...
    @property
    def target_file_size_base(self) -> int: ...
    @property
    def max_open_files(self) -> int: ...
    @property
    def bloom_filter_size(self) -> int: ...


def _default_tuning() -> Tuning:
    # Imported by name: the options module is the foundation's, and optional here.
    try:
        module = importlib.import_module("idstream.storage.rocksdb_options")
    except ImportError:  # pragma: no cover - plain defaults then
        return _RocksDefaults()
    tuning: Tuning = module.RocksDBOptions()
    return tuning


class _RocksDefaults:
    block_cache_size = 32 << 20
    write_buffer_size = 64 << 20
    max_write_buffer_number = 2
    target_file_size_base = 64 << 20
    max_open_files = -1
    bloom_filter_size = 10


def _rocksdict_options(tuning: Tuning) -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(tuning.write_buffer_size)
    options.set_max_write_buffer_number(tuning.max_write_buffer_number)
    options.set_target_file_size_base(tuning.target_file_size_base)
    options.set_max_open_files(tuning.max_open_files)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(tuning.block_cache_size))
    table.set_bloom_filter(tuning.bloom_filter_size, False)
    options.set_block_based_table_factory(table)
    return options


class RocksTable(Generic[V]):
    """One table of a RocksStore: a key prefix with its own typed codec."""

    def __init__(self, store: RocksStore, name: str, value_type: type[V]) -> None:
        self.name = name
        self.value_type = value_type
        self._store = store
        self._db = store.db
        self._prefix = table_prefix(name)
        self._codec = ValueCodec(value_type)
        # Pending writes: full key -> value or DELETED; `_sorted` caches the sorted keys.
        self._pending: dict[bytes, Any] = {}
        self._sorted: list[bytes] | None = []
        # Values committed by recent flushes, decoded: most reads are of recently written keys.
        self._cache: dict[bytes, V] = {}
        self._cache_size = store.cache_entries

    def get(self, key: str) -> V | None:
        full = self._prefix + key.encode("utf-8")
        pending = self._pending.get(full)
        if pending is not None:
            return None if pending is DELETED else pending
        cached = self._cache.get(full)
        if cached is not None:
            return cached
        data = self._db.get(full)
        return None if data is None else self._codec.decode(data)

    def put(self, key: str, value: V) -> None:
        self._write(self._prefix + key.encode("utf-8"), value)

    def delete(self, key: str) -> None:
        self._write(self._prefix + key.encode("utf-8"), DELETED)

    def _write(self, full: bytes, value: Any) -> None:
        if full not in self._pending:
            self._sorted = None
        self._pending[full] = value
        self._store.pending_writes += 1

    def scan(
        self, prefix: str = "", *, reverse: bool = False, start: str = ""
    ) -> Iterator[tuple[str, V]]:
        within = self._prefix + prefix.encode("utf-8")
        first = self._prefix + start.encode("utf-8") if start and not reverse else within
        first = max(first, within)
        pending = self._pending_range(within, first, reverse=reverse)
        stored = self._stored_range(within, first, reverse=reverse)
        cut = len(self._prefix)
        for full, value in merge_sorted(stored, pending, reverse=reverse):
            if value is DELETED:
                continue
            if isinstance(value, bytes):
                value = self._codec.decode(value)
            yield full[cut:].decode("utf-8"), value

    def _pending_range(
        self, within: bytes, first: bytes, *, reverse: bool
    ) -> list[tuple[bytes, Any]]:
        if not self._pending:
            return []
        if self._sorted is None:
            self._sorted = sorted(self._pending)
        keys = self._sorted
        end = prefix_upper_bound(within)
        lo = bisect_left(keys, first)
        hi = len(keys) if end is None else bisect_left(keys, end)
        # A snapshot, so callers may write while they iterate.
        found = [(k, self._pending[k]) for k in keys[lo:hi]]
        if reverse:
            found.reverse()
        return found

    def _stored_range(
        self, start: bytes, first: bytes, *, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        if not reverse:
            it.seek(first)
            while it.valid():
                key: bytes = it.key()
                if not key.startswith(start):
                    return
                yield key, it.value()
                it.next()
            return
        end = prefix_upper_bound(start)
        if end is None:
            it.seek_to_last()
        else:
            it.seek_for_prev(end)
        while it.valid():
            key = it.key()
            if key.startswith(start):
                yield key, it.value()
            elif key < start:
                return
            it.prev()

    def commit_into(self, batch: WriteBatch) -> None:
        cache = self._cache
        if len(cache) + len(self._pending) > self._cache_size:
            cache.clear()
        encode = self._codec.encode
        for full, value in self._pending.items():
            if value is DELETED:
                batch.delete(full)
                cache.pop(full, None)
            else:
                batch.put(full, encode(value))
                cache[full] = value
        self._pending.clear()
        self._sorted = []


def merge_sorted(
    stored: Iterator[tuple[bytes, Any]], pending: list[tuple[bytes, Any]], *, reverse: bool
) -> Iterator[tuple[bytes, Any]]:
    """Merge two key-ordered streams; on equal keys the pending entry wins."""
    if not pending:
        yield from stored
        return
    i = 0
    for key, value in stored:
        while i < len(pending) and (pending[i][0] > key if reverse else pending[i][0] < key):
            yield pending[i]
            i += 1
        if i < len(pending) and pending[i][0] == key:
            yield pending[i]
            i += 1
            continue
        yield key, value
    yield from pending[i:]


class RocksStore:
    """A TableFactory over one RocksDB directory; writes are pending until `flush()`.

    Raises StateFormatError at open when the directory holds state of another format version.
    """

    def __init__(
        self, path: str | Path, tuning: Tuning | None = None, *, cache_entries: int = 50_000
    ) -> None:
        self.path = Path(path)
        self.cache_entries = cache_entries
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.db = Rdict(str(self.path), _rocksdict_options(tuning or _default_tuning()))
        except Exception as exc:  # rocksdict raises plain Exception (lock held, I/O)
            raise ConfigurationError(
                f"cannot open state in {self.path}: {exc} (is another process using it?)"
            ) from exc
        self.tables: dict[str, RocksTable[Any]] = {}
        self.pending_writes = 0
        try:
            self._check_format()
        except StateFormatError:
            self.db.close()
            raise

    def _check_format(self) -> None:
        found = self.db.get(FORMAT_VERSION_KEY)
        if found is None:
            it = self.db.iter()
            it.seek_to_first()
            if it.valid():
                raise StateFormatError(
                    f"{self.path} holds data without a state format version; "
                    "point --state at an empty directory or rebuild the state"
                )
            self.db.put(FORMAT_VERSION_KEY, msgspec.msgpack.encode(STATE_FORMAT_VERSION))
            return
        version = msgspec.msgpack.decode(found)
        if version != STATE_FORMAT_VERSION:
            raise StateFormatError(
                f"{self.path} holds state format {version}, this idstream reads "
                f"{STATE_FORMAT_VERSION}: rebuild the state into an empty directory"
            )

    def bind_key(self, fingerprint: str) -> None:
        """Refuse (StateFormatError) state built with another key for personal data; state
        without a fingerprint yet takes this one."""
        found = self.db.get(KEY_FINGERPRINT_KEY)
        if found is None:
            self.db.put(KEY_FINGERPRINT_KEY, fingerprint.encode("utf-8"))
        elif found.decode("utf-8") != fingerprint:
            raise StateFormatError(
                f"{self.path} was built with another key for personal data (its identity "
                "hashes would not match this key's: people would be split and a forget could "
                "miss them); use the deployment's key, or replay into an empty directory"
            )

    def __call__(self, name: str, value_type: type[V]) -> StateTable[V]:
        return self.open(name, value_type)

    def open(self, name: str, value_type: type[V]) -> RocksTable[V]:
        table = self.tables.get(name)
        if table is None:
            table = RocksTable(self, name, value_type)
            self.tables[name] = table
        elif table.value_type is not value_type:
            raise TypeError(f"table {name!r} is open with {table.value_type!r}")
        return table

    def flush(self) -> None:
        """Commit every pending write of every table in one WriteBatch."""
        if not self.pending_writes:
            return
        batch = WriteBatch(raw_mode=True)
        for table in self.tables.values():
            table.commit_into(batch)
        self.db.write(batch)
        self.pending_writes = 0

    def close(self) -> None:
        """Commit pending writes and close the database."""
        self.flush()
        self.db.close()

    def __enter__(self) -> RocksStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
