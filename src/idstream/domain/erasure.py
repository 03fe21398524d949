"""The forget register (SPEC §4.10): what a forget leaves behind, and what it keeps out.

Domain layer, standard library only. A forget registers keyed hashes (identities.py) of the
person's identities and installs with the forget's event time and its position in the input
log. The pool keeps the register in its state (`pool_forgotten`): a claim of a forgotten
identity or install that is logged after the forget but stamped before it (an offline queue
delivered late) is dropped. The register is also published (the compacted forget-register
topic), so that a replay of the input log can be given it before it starts (`Erased`): every
record of a forgotten person from *before* the forget is then still applied (the state comes
out the same) but publishes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from idstream.domain.messages import LogPosition, Output, OutputTopic


@dataclass(frozen=True, slots=True)
class ForgetEntry:
    """A hashed identity or install was forgotten by an event stamped `timestamp` (device
    time), at `position` in the input log."""

    timestamp: int
    position: LogPosition


# A register given to a replay before it starts: keyed hash -> the forget.
Erased = Mapping[str, ForgetEntry]
NOTHING_ERASED: Erased = MappingProxyType({})


def erased_later(erased: Erased, hashes: Iterable[str], position: LogPosition) -> bool:
    """Whether one of `hashes` is forgotten by a forget later in the log than `position`:
    what the record at `position` would publish must not be published again."""
    for hashed in hashes:
        entry = erased.get(hashed)
        if entry is not None and entry.position > position:
            return True
    return False


def register_record(pool: str, hashed: str, entry: ForgetEntry) -> Output:
    """The forget-register topic's record of one hash (the key names the pool too)."""
    value = {
        "pool": pool,
        "timestamp": entry.timestamp,
        "position": list(entry.position),
    }
    return Output(OutputTopic.FORGET_REGISTER, hashed, value)


def read_register(records: Iterable[tuple[str, Mapping[str, Any] | None]]) -> Erased:
    """A register from the forget-register topic's records (key, value), latest per key."""
    found: dict[str, ForgetEntry] = {}
    for hashed, value in records:
        if value is None:
            found.pop(hashed, None)
            continue
        time, partition, offset = (int(n) for n in value["position"])
        found[hashed] = ForgetEntry(int(value["timestamp"]), (time, partition, offset))
    return MappingProxyType(found)
