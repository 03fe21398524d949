"""The reference verdict for the codec tests: stdlib json + jsonschema on schemas/input.

Independent of idstream.codecs: strict JSON (UTF-8, no NaN/Infinity, no duplicate keys, no
lone surrogates), then the draft 2020-12 schema with RFC 3339 formats asserted,
integers written without a fraction and a date-time timestamp in the integers' range (which
JSON Schema cannot say of a string).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
MAX_RECORD_BYTES = 64 * 1024

_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

format_checker = jsonschema.FormatChecker()


@format_checker.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.fullmatch(value)  # `$` alone would allow a final newline
    if not match:
        return False
    try:
        datetime.strptime(value[:19].replace("t", "T").replace(" ", "T"), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    offset = match.group(2)
    return offset in "Zz" or (int(offset[1:3]) <= 23 and int(offset[4:6]) <= 59)


@format_checker.checks("date")
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        return bool(_DATE.fullmatch(value)) and bool(datetime.strptime(value, "%Y-%m-%d"))
    except ValueError:
        return False


def _strict_integer(checker: object, value: object) -> bool:
    # JSON Schema calls 1.0 an integer; the contract wants integers written as integers.
    return isinstance(value, int) and not isinstance(value, bool)


StrictValidator = jsonschema.validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)


def load(rel: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / rel).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def validator(rel: str) -> Any:
    return StrictValidator(load(rel), format_checker=format_checker)


class Rejected(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise Rejected("duplicate key")
    return out


def _constant(name: str) -> Any:
    raise Rejected(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Rejected("number out of range")
    return value


def _check_strings(value: Any) -> None:
    # json.loads lets lone surrogate escapes through; they are not Unicode text.
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for k, v in value.items():
            k.encode("utf-8")
            _check_strings(v)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v)


def parse(raw: bytes) -> Any:
    """Strict JSON, or Rejected."""
    try:
        text = raw.decode("utf-8")
        doc = json.loads(
            text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float
        )
        _check_strings(doc)
    except (ValueError, RecursionError) as exc:  # UnicodeError and JSONDecodeError included
        raise Rejected(str(exc)) from exc
    return doc


MAX_TIMESTAMP_MS = 253_402_300_799_999


def _timestamp_in_range(doc: Any) -> bool:
    stamp = doc.get("timestamp")
    if not isinstance(stamp, str):
        return True  # integers: the schema's minimum and maximum
    whole, rest = stamp[:19], stamp[19:]
    fraction = re.match(r"\.([0-9]+)", rest)
    millis = int(fraction.group(1)[:3].ljust(3, "0")) if fraction else 0
    zone = rest[fraction.end() if fraction else 0 :]
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    seconds = (moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
    ms = int(seconds) * 1000 + millis - (offset if zone[0] == "+" else -offset) * 1000
    return 0 <= ms <= MAX_TIMESTAMP_MS


def accepts(raw: bytes) -> bool:
    """The reference verdict on one input record value."""
    if len(raw) > MAX_RECORD_BYTES:
        return False
    try:
        doc = parse(raw)
    except Rejected:
        return False
    if not validator("input/event.schema.json").is_valid(doc):
        return False
    return _timestamp_in_range(doc)
