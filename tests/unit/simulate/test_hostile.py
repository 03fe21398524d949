"""The hostile record generator (idstream.simulate.hostile): every kind issue #11 lists, every
id field with every separator, deterministic for a seed, mixed with valid traffic; and what
the decoder makes of each kind."""

from __future__ import annotations

import hashlib
from collections import Counter
from functools import cache

import orjson
import pytest

from idstream.codecs import Rejection, decode
from idstream.errors import ConfigurationError
from idstream.simulate import SimRecord
from idstream.simulate.hostile import (
    FORMAT_CHARACTERS,
    HOSTILE_KINDS,
    ID_FIELDS,
    OVERSIZE_FROM,
    SEPARATORS,
    Hostile,
    HostileConfig,
    hostile,
)

CONFIG = HostileConfig(seed=7, events=6000, max_oversize_bytes=512 * 1024, big_every=5)


@cache
def stream() -> tuple[SimRecord, ...]:
    return tuple(hostile(CONFIG))


def of_kind(kind: str) -> list[SimRecord]:
    return [r for r in stream() if r.label == f"hostile:{kind}"]


def test_every_kind_is_generated_among_valid_traffic() -> None:
    records = stream()
    assert len(records) == CONFIG.events
    kinds = Counter(
        r.label.removeprefix("hostile:") for r in records if r.label.startswith("hostile:")
    )
    assert set(kinds) == {kind for kind, _ in HOSTILE_KINDS}
    valid = [r for r in records if not r.label.startswith(("hostile:", "malformed:"))]
    assert len(valid) >= CONFIG.events // 2
    assert all(r.key for r in records)
    times = [r.record_ms for r in records]
    assert times == sorted(times)  # record time never goes back


def test_separators_in_every_id_field() -> None:
    seen = {r.flags for r in of_kind("separator_field")}
    assert {(field, sep) for field in ID_FIELDS for sep in SEPARATORS} <= seen


def test_format_characters_in_identities_and_in_ids() -> None:
    identities = {r.flags[1] for r in of_kind("format_identity")}
    assert identities == set(FORMAT_CHARACTERS)
    ids = {r.flags for r in of_kind("format_id")}
    assert {f for f, _ in ids} == set(ID_FIELDS) - {"identities"}
    assert {c for _, c in ids} == set(FORMAT_CHARACTERS)


def test_an_install_next_to_the_same_id_with_a_separator_and_a_suffix() -> None:
    pairs = of_kind("separator_pair")
    assert pairs
    by_key: dict[bytes, set[str]] = {}
    for r in pairs:
        by_key.setdefault(r.key, set()).add(orjson.loads(r.value)["pushRegistrationId"])
    for key, prids in by_key.items():
        v = key.decode()
        assert v in prids
        assert any(p != v and p.startswith(v) and p[len(v)] in SEPARATORS for p in prids)
    assert {r.flags[1] for r in pairs} == set(SEPARATORS)


def test_prid_a_sep_b_with_event_c_next_to_prid_a_with_event_b_sep_c() -> None:
    docs = [(r.key, orjson.loads(r.value)) for r in of_kind("separator_split")]
    found = 0
    for key, doc in docs:
        a = key.decode()
        prid, event_id = doc["pushRegistrationId"], doc["eventId"]
        if prid != a and event_id == "c":
            sep = prid[len(a)]
            assert sep in SEPARATORS and prid == f"{a}{sep}b"
            assert any(d["pushRegistrationId"] == a and d["eventId"] == f"b{sep}c" for _, d in docs)
            found += 1
    assert found


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others() -> None:
    def digest(config: HostileConfig) -> str:
        h = hashlib.sha256()
        for r in hostile(config):
            h.update(r.key + b"\x00" + r.value + r.label.encode() + repr(r.flags).encode())
        return h.hexdigest()

    small = HostileConfig(seed=3, events=1500, max_oversize_bytes=OVERSIZE_FROM + 10)
    assert digest(small) == digest(small)
    assert digest(small) != digest(
        HostileConfig(seed=4, events=1500, max_oversize_bytes=OVERSIZE_FROM + 10)
    )


def test_oversize_records_span_the_range() -> None:
    sizes = [len(r.value) for r in of_kind("oversize")]
    assert sizes and all(OVERSIZE_FROM <= s <= CONFIG.max_oversize_bytes for s in sizes)
    assert CONFIG.max_oversize_bytes in sizes


def test_kinds_are_counted() -> None:
    generator = Hostile(HostileConfig(seed=2, events=800))
    records = list(generator)
    clusters = sum(generator.kinds.values())
    assert 0 < clusters <= sum(r.label.startswith("hostile:") for r in records)


# What the decoder says of each kind (the input policy of docs/decoding.md).
EXPECTED: dict[str, set[str]] = {
    "lone_surrogate": {"malformed_json"},
    "invalid_utf8": {"malformed_json"},
    "oversize": {"oversize"},
    "giant_array": {"oversize", "schema_violation"},
    "deep_nesting": {"malformed_json", "oversize", "schema_violation"},
    "huge_number": {"malformed_json", "schema_violation"},
    "format_id": {"schema_violation"},
    "format_identity": {"accepted"},  # the resolver drops that identity alone
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_what_the_decoder_makes_of_each_kind(kind: str) -> None:
    verdicts = set()
    for r in of_kind(kind):
        result = decode(r.value)
        verdicts.add(result.reason.value if isinstance(result, Rejection) else "accepted")
    assert verdicts and verdicts <= EXPECTED[kind], verdicts


def test_separators_refuse_the_record_unless_in_an_identity() -> None:
    for kind in ("separator_field", "separator_pair", "separator_split"):
        for r in of_kind(kind):
            result = decode(r.value)
            doc = orjson.loads(r.value)
            has_separator = any(s in r.value.decode() for s in SEPARATORS) or any(
                f"\\u00{ord(s):02x}" in r.value.decode() for s in SEPARATORS
            )
            if r.flags[0] == "identities" or not has_separator:
                assert not isinstance(result, Rejection), (r.flags, doc)
            else:
                assert isinstance(result, Rejection), (r.flags, doc)
                assert result.reason.value == "schema_violation"


def test_timestamps_out_of_range_are_refused_in_both_forms() -> None:
    forms = set()
    for r in of_kind("timestamp_range"):
        result = decode(r.value)
        if r.flags == ("valid-rfc3339",):
            assert not isinstance(result, Rejection)
            continue
        assert isinstance(result, Rejection) and result.reason.value == "schema_violation", r.value
        forms.add(type(orjson.loads(r.value)["timestamp"]).__name__)
    assert forms == {"int", "str"}


@pytest.mark.parametrize(
    "config",
    [
        {"hostile_share": 1.5},
        {"events": -1},
        {"max_oversize_bytes": 1000},
        {"big_every": 0},
    ],
)
def test_bad_configs_are_refused(config: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        HostileConfig(**config)  # type: ignore[arg-type]
