"""A stable hash of the logical content of all state tables, and a readable dump of it.

Used to check that any partitioning, arrival order, duplicate delivery or replay into empty
state ends in the same state: sha256 over (table, key, canonical JSON of value) in table-name
and key order, leaving out the tables whose content depends on arrival order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from idstream.domain import install, pool
from idstream.domain.ports import StateTable
from idstream.storage.codec import canonical_json

# Every state table of the resolver (name -> value type), and those a digest leaves out
# (bookkeeping that depends on arrival order or source offsets). Any driver that keeps these
# tables under these names gets the same digest for the same logical state.
RESOLVER_TABLE_TYPES: Mapping[str, type] = {
    **install.INSTALL_TABLE_TYPES,
    **pool.POOL_TABLE_TYPES,
}
# The in-process driver's own bookkeeping of the input log (drivers/local/driver.py): which
# offsets its end-of-run tick records took.
REPLAY_TICKS = "replay_ticks"
RESOLVER_DIGEST_EXCLUDED: frozenset[str] = (
    install.DIGEST_EXCLUDED | pool.DIGEST_EXCLUDED | {REPLAY_TICKS}
)


def _included(
    tables: Mapping[str, StateTable[Any]], excluded: frozenset[str]
) -> list[tuple[str, StateTable[Any]]]:
    return [(name, tables[name]) for name in sorted(tables) if name not in excluded]


def state_digest(tables: Mapping[str, StateTable[Any]], excluded: frozenset[str]) -> str:
    """Hex sha256 of every entry of every table not in `excluded`."""
    digest = hashlib.sha256()
    for name, table in _included(tables, excluded):
        # Length-prefixed fields: no entry can be confused with another.
        for part in (b"T", name.encode("utf-8")):
            digest.update(len(part).to_bytes(8, "big") + part)
        for key, value in table.scan():
            for part in (b"K", key.encode("utf-8"), canonical_json(value)):
                digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def dump_lines(tables: Mapping[str, StateTable[Any]], excluded: frozenset[str]) -> Iterator[str]:
    """One line per entry: table, key (escaped like JSON) and the canonical JSON value."""
    for name, table in _included(tables, excluded):
        for key, value in table.scan():
            shown = canonical_json(key).decode("utf-8")
            yield f"{name}\t{shown}\t{canonical_json(value).decode('utf-8')}"
