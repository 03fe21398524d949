"""Identity values: normalization, junk blocklist, masking for logs and changes, keyed hashes;
and the characters no id, name or identity may hold.

Domain layer, standard library only. SPEC §4.3. Decisions (also in docs/architecture.md):
- every identity: refused (`invalid_identity`) when it holds a forbidden character (see
  `FORBIDDEN_RANGES`), else NFC-normalized before anything else. Look-alike letters from other
  scripts (confusables) are not detected.
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

import hashlib
import hmac
import re
import unicodedata
from typing import Final

from idstream.domain.events import IdentityKind
from idstream.domain.keys import key
from idstream.domain.reasons import RejectReason

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PHONE_NOISE = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"[0-9]{8,15}")
_ZEROS_AND_DASHES = re.compile(r"[0\-]*|-1")

MAX_EMAIL = 254
MAX_EXTERNAL_USER_ID = 256

# What no id, name or identity may hold (inclusive code point ranges): Unicode categories Cc
# (controls, separators like \x1f included) and Cf (format: soft hyphen, zero-width characters,
# bidi controls, BOM, tags), surrogates (Cs) and the 66 non-characters. Written out, as of
# Unicode 14.0.0 (Python 3.11), rather than asked of `unicodedata`: a newer Python must not
# refuse what an older one accepted, or a replay would differ. tests/unit/domain/
# test_identities.py compares it with the running interpreter's database.
FORBIDDEN_RANGES: Final[tuple[tuple[int, int], ...]] = tuple(
    sorted(
        [
            (0x0000, 0x001F),  # Cc C0 controls
            (0x007F, 0x009F),  # Cc DEL, C1 controls
            (0x00AD, 0x00AD),  # soft hyphen
            (0x0600, 0x0605),  # Arabic number signs
            (0x061C, 0x061C),  # Arabic letter mark
            (0x06DD, 0x06DD),
            (0x070F, 0x070F),
            (0x0890, 0x0891),
            (0x08E2, 0x08E2),
            (0x180E, 0x180E),  # Mongolian vowel separator
            (0x200B, 0x200F),  # zero-width space, ZWNJ, ZWJ, LRM, RLM
            (0x202A, 0x202E),  # bidi embeddings and overrides
            (0x2060, 0x2064),  # word joiner, invisible operators
            (0x2066, 0x206F),  # bidi isolates, deprecated format characters
            (0xD800, 0xDFFF),  # Cs surrogates
            (0xFDD0, 0xFDEF),  # non-characters
            (0xFEFF, 0xFEFF),  # BOM, zero-width no-break space
            (0xFFF9, 0xFFFB),  # interlinear annotation
            (0xFFFE, 0xFFFF),  # non-characters
            (0x110BD, 0x110BD),
            (0x110CD, 0x110CD),
            (0x13430, 0x13438),  # Egyptian hieroglyph format controls
            (0x1BCA0, 0x1BCA3),  # shorthand format controls
            (0x1D173, 0x1D17A),  # musical symbol format controls
            *((plane + 0xFFFE, plane + 0xFFFF) for plane in range(0x10000, 0x110000, 0x10000)),
            (0xE0001, 0xE0001),  # language tag
            (0xE0020, 0xE007F),  # tag characters
        ]
    )
)


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    def escape(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"

    return "[" + "".join(escape(a) + ("" if a == b else "-" + escape(b)) for a, b in ranges) + "]"


FORBIDDEN_CHARACTERS: Final = re.compile(_char_class(FORBIDDEN_RANGES))


def forbidden_character(value: str) -> int:
    """The index of the first character no id, name or identity may hold, or -1."""
    # Every forbidden character is also one `isprintable` refuses (C* categories), and most
    # values are printable: the regex runs only on the rest.
    if value.isprintable():
        return -1
    found = FORBIDDEN_CHARACTERS.search(value)
    return -1 if found is None else found.start()


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
    """(normalized value, None) or (None, why it cannot be used).

    A value holding a forbidden character is invalid, whatever else it holds; the rest is
    NFC-normalized first, so composed and decomposed accents are the same identity.
    """
    if forbidden_character(raw) >= 0:
        return None, RejectReason.INVALID_IDENTITY
    raw = unicodedata.normalize("NFC", raw)
    if is_blocked(raw, blocklist):
        return None, RejectReason.BLOCKED_IDENTITY
    value = _NORMALIZERS[kind](raw)
    if value is None:
        return None, RejectReason.INVALID_IDENTITY
    if is_blocked(value, blocklist):
        return None, RejectReason.BLOCKED_IDENTITY
    return value, None


def mask(kind: IdentityKind | str, value: str) -> str:
    """A value safe for logs and change events: `j***@e***.com`, `+38******67`, `a***z`.

    A value that holds a forbidden character (a bidi override, a zero-width space…) shows none
    of its characters: what is shown must not be able to spoof anything.
    """
    kind = IdentityKind(kind)
    if forbidden_character(value) >= 0:
        return "***"
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


def _mac(secret: bytes, *parts: str) -> str:
    # Keyed (HMAC-SHA256): without the deployment's secret, a hash cannot be confirmed for a
    # guessed email or phone, nor reversed by trying them all. Parts encoded injectively.
    message = key(*parts).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:40]


def key_fingerprint(secret: bytes) -> str:
    """Names the deployment's key without revealing it: state built with one key is refused
    by a process that has another (its hashes would not find the state's)."""
    return "k" + _mac(secret, "fingerprint of the key for personal data")[:16]


def identity_hash(secret: bytes, pool: str, kind: IdentityKind | str, value: str) -> str:
    """What stands for a normalized identity wherever it is a key (the identity index, the
    forget register): no table or changelog key holds a raw identity."""
    return "i" + _mac(secret, "identity", pool, str(kind), value)


def install_hash(secret: bytes, pool: str, push_registration_id: str) -> str:
    """The forget register's key for an install."""
    return "d" + _mac(secret, "install", pool, push_registration_id)
