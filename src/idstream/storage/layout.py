"""On-disk layout of the driver state: key prefixes, reserved keys, the format version.

Storage layer. One RocksDB per state directory; every table is a key prefix in it:
``<table name> NUL <key as UTF-8>``. Reserved keys start with NUL, which no table name does.
Bump STATE_FORMAT_VERSION whenever a change makes old state unreadable (and say so in
CHANGELOG.md); a store refuses to open state written with another version.
"""

from __future__ import annotations

from typing import Final

STATE_FORMAT_VERSION: Final = 2  # 2: log-ordered pool, injective keys

# Reserved keys (outside every table's prefix).
FORMAT_VERSION_KEY: Final = b"\x00idstream\x00state_format_version"

# A fingerprint of the key for hashes of personal data the state was built with.
KEY_FINGERPRINT_KEY: Final = b"\x00idstream\x00personal_key_fingerprint"

SEPARATOR: Final = b"\x00"


def table_prefix(name: str) -> bytes:
    """The key prefix of a table; names are non-empty and contain no NUL."""
    if not name or "\x00" in name:
        raise ValueError(f"bad table name {name!r}")
    return name.encode("utf-8") + SEPARATOR


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
