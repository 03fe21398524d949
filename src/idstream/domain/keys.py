"""State keys built from several parts, injectively: no two part lists give the same key.

Domain layer. Every part is user input somewhere (a pushRegistrationId, an eventId, an
identity), and may hold any character, separators included. So parts are never joined with a
separator; each is written as its length in code points, a colon, then the part itself
(``5:hello``). Reading a key back is unambiguous from left to right, so:
- two different part lists never encode to the same key (injective);
- the keys that start with ``key(a, b)`` are exactly those whose first parts are ``a, b``: a
  prefix scan never returns a foreign key.
Numbers that must sort as numbers are written with a fixed width (`number`).
"""

from __future__ import annotations

# A signed 64-bit value shifted to be non-negative fits 20 decimal digits.
_NUMBER_OFFSET = 2**63
_NUMBER_WIDTH = 20


def key(*parts: str) -> str:
    """The key of a list of parts; also the prefix of every key that starts with them."""
    # One and two parts are most keys: spelled out, they cost a third of the general case.
    if len(parts) == 1:
        (a,) = parts
        return f"{len(a)}:{a}"
    if len(parts) == 2:
        a, b = parts
        return f"{len(a)}:{a}{len(b)}:{b}"
    return "".join([f"{len(part)}:{part}" for part in parts])


def parts(encoded: str) -> list[str]:
    """The parts of a key made by `key` (ValueError for anything else)."""
    out: list[str] = []
    at = 0
    while at < len(encoded):
        colon = encoded.index(":", at)
        digits = encoded[at:colon]
        start = colon + 1
        if not (digits.isascii() and digits.isdigit()) or start + int(digits) > len(encoded):
            raise ValueError(f"not a composite key: {encoded!r}")
        length = int(digits)
        out.append(encoded[start : start + length])
        at = start + length
    return out


def number(value: int) -> str:
    """An integer as a key part that sorts numerically among parts made the same way."""
    return f"{value + _NUMBER_OFFSET:0{_NUMBER_WIDTH}d}"


def from_number(part: str) -> int:
    return int(part) - _NUMBER_OFFSET
