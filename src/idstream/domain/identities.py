"""Identity values: normalization, junk blocklist, masking for logs and changes, forget hashes.

Domain layer, standard library only. SPEC §4.3. Decisions (also in docs/architecture.md):
- email: trimmed, lower-cased, one `@`, a non-empty local part, a dotted domain, no spaces,
  at most 254 characters.
- phone: E.164 as `+` and digits. Spaces, dashes, dots and parentheses are removed, then one
  leading `+` or `00` (international prefix); what is left must be 8 to 15 ASCII digits not
  starting with 0 (a trunk prefix means a national number we cannot place).
- externalUserId: trimmed; at most 256 characters.
- blocked: compared trimmed, lower-cased and without one pair of surrounding quotes; empty,
  only zeros and dashes (`0`, `000-000`, `--`), `-1`, or on the configured blocklist. The check
  runs on the raw value and on the normalized one.
"""

from __future__ import annotations

import re
from hashlib import blake2b

from idstream.domain.events import IdentityKind
from idstream.domain.reasons import RejectReason

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PHONE_NOISE = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"[0-9]{8,15}")
_ZEROS_AND_DASHES = re.compile(r"[0\-]*|-1")

MAX_EMAIL = 254
MAX_EXTERNAL_USER_ID = 256


def normalize_email(raw: str) -> str | None:
    """The canonical form of an email address, or None when it does not look like one."""
    value = raw.strip().lower()
    if len(value) > MAX_EMAIL or _EMAIL.fullmatch(value) is None:
        return None
    return value


def normalize_phone(raw: str) -> str | None:
    """The E.164 form (`+` and 8-15 digits) of a phone number, or None when it is not one."""
    value = _PHONE_NOISE.sub("", raw.strip())
    if value.startswith("+"):
        value = value[1:]
    elif value.startswith("00"):
        value = value[2:]
    if _DIGITS.fullmatch(value) is None or value.startswith("0"):
        return None
    return "+" + value


def normalize_external_user_id(raw: str) -> str | None:
    value = raw.strip()
    if not value or len(value) > MAX_EXTERNAL_USER_ID:
        return None
    return value


_NORMALIZERS = {
    IdentityKind.EXTERNAL_USER_ID: normalize_external_user_id,
    IdentityKind.EMAIL: normalize_email,
    IdentityKind.PHONE: normalize_phone,
}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'`":
        return value[1:-1].strip()
    return value


def is_blocked(value: str, blocklist: frozenset[str]) -> bool:
    """True for junk that must never be used as an identity (SPEC §4.3)."""
    folded = _unquote(value.strip().lower())
    return not folded or _ZEROS_AND_DASHES.fullmatch(folded) is not None or folded in blocklist


def normalize_identity(
    kind: IdentityKind, raw: str, blocklist: frozenset[str]
) -> tuple[str | None, RejectReason | None]:
    """(normalized value, None) or (None, why it cannot be used)."""
    if is_blocked(raw, blocklist):
        return None, RejectReason.BLOCKED_IDENTITY
    value = _NORMALIZERS[kind](raw)
    if value is None:
        return None, RejectReason.INVALID_IDENTITY
    if is_blocked(value, blocklist):
        return None, RejectReason.BLOCKED_IDENTITY
    return value, None


def mask(kind: IdentityKind | str, value: str) -> str:
    """A value safe for logs and change events: `j***@e***.com`, `+38******67`, `a***z`."""
    kind = IdentityKind(kind)
    if kind is IdentityKind.EMAIL and "@" in value:
        local, _, domain = value.rpartition("@")
        head, dot, suffix = domain.rpartition(".")
        if not dot:
            head, suffix = domain, ""
        return f"{local[:1]}***@{head[:1]}***{dot}{suffix}"
    if kind is IdentityKind.PHONE:
        plus = "+" if value.startswith("+") else ""
        digits = value[len(plus) :]
        if len(digits) <= 4:
            return plus + "*" * len(digits)
        return plus + digits[:2] + "*" * (len(digits) - 4) + digits[-2:]
    if len(value) <= 2:
        return "***"
    return f"{value[:1]}***{value[-1:]}"


def _hash(*parts: str) -> str:
    return blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def identity_hash(pool: str, kind: IdentityKind | str, value: str) -> str:
    """The forget register's key for an identity: no raw personal data is kept."""
    return "i" + _hash("forget-identity", pool, str(kind), value)


def install_hash(pool: str, push_registration_id: str) -> str:
    """The forget register's key for an install."""
    return "d" + _hash("forget-install", pool, push_registration_id)
