"""schemas/ against the code: current, well-formed, examples valid and decodable, limits equal."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
from types import ModuleType
from typing import Any

import orjson
import pytest

from idstream.codecs import (
    DEFAULT_LIMITS,
    Rejection,
    dead_letter_record,
    decode,
    encode_record,
    event_to_wire,
    resolved_event_record,
)
from idstream.domain.events import EventType, RecordMeta
from idstream.domain.reasons import RejectReason
from tests.codecs import oracle

ALL = sorted(p.relative_to(oracle.SCHEMAS).as_posix() for p in oracle.SCHEMAS.rglob("*.json"))
INPUTS = [rel for rel in ALL if rel.startswith("input/")]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("schema_generate", oracle.SCHEMAS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_files_are_generated_and_current() -> None:
    generate = _generator()
    expected = {rel: generate.render(s) for rel, s in generate.all_schemas().items()}
    assert sorted(expected) == ALL
    for rel, text in expected.items():
        assert (oracle.SCHEMAS / rel).read_text(encoding="utf-8") == text, (
            f"{rel} is stale: run .venv/bin/python schemas/generate.py"
        )


def test_every_event_type_has_an_input_schema() -> None:
    assert sorted(INPUTS) == sorted(
        [f"input/{t.value}.schema.json" for t in EventType] + ["input/event.schema.json"]
    )


@pytest.mark.parametrize("rel", ALL)
def test_schema_is_draft_2020_12_with_id_version_and_examples(rel: str) -> None:
    schema = oracle.load(rel)
    oracle.StrictValidator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    name = rel.removesuffix(".schema.json")
    assert schema["$id"] == f"https://idstream.dev/schemas/{name}/v1"
    assert schema["x-idstream-version"] == 1
    assert isinstance(schema["x-idstream-minor"], int)
    assert schema["description"]
    assert schema["examples"]


@pytest.mark.parametrize("rel", ALL)
def test_every_field_is_described(rel: str) -> None:
    undescribed = [
        f"{node.get('title', '')}.{field}"
        for node in _walk(oracle.load(rel))
        if node.get("type") == "object" and isinstance(node.get("properties"), dict)
        for field, spec in node["properties"].items()
        if not {"description", "$ref", "const"} & set(spec)
    ]
    assert not undescribed


@pytest.mark.parametrize("rel", ALL)
def test_examples_validate(rel: str) -> None:
    validator = oracle.validator(rel)
    for example in oracle.load(rel)["examples"]:
        validator.validate(example)


@pytest.mark.parametrize("rel", INPUTS)
def test_input_examples_decode_and_round_trip(rel: str) -> None:
    for example in oracle.load(rel)["examples"]:
        raw = orjson.dumps(example)
        assert oracle.accepts(raw)
        event = decode(raw)
        assert not isinstance(event, Rejection), event
        assert event.type.value == example["type"]
        again = decode(encode_record(event_to_wire(event)))
        assert again == event


@pytest.mark.parametrize("rel", INPUTS)
def test_input_examples_are_accepted_by_the_one_type_schema(rel: str) -> None:
    for example in oracle.load(rel)["examples"]:
        oracle.validator(f"input/{example['type']}.schema.json").validate(example)


def test_dead_letter_reasons_equal_reject_reason() -> None:
    schema = oracle.load("output/dead-letter.schema.json")
    assert schema["properties"]["reason"]["enum"] == [r.value for r in RejectReason]


def test_identity_rejected_reasons_are_reject_reasons() -> None:
    schema = oracle.load("output/profile-change.schema.json")
    kind = next(
        k for k in schema["oneOf"] if k["properties"]["kind"]["const"] == "identity_rejected"
    )
    assert set(kind["properties"]["reason"]["enum"]) <= {r.value for r in RejectReason}


def _walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            out.extend(_walk(value))
    return out


def test_schema_limits_equal_default_limits() -> None:
    schema = oracle.load("input/event.schema.json")
    nodes = _walk(schema["$defs"])
    max_lengths = {n["maxLength"] for n in nodes if "maxLength" in n}
    assert max_lengths == {DEFAULT_LIMITS.max_string_chars}
    assert {n["maxProperties"] for n in nodes if "maxProperties" in n} == {
        DEFAULT_LIMITS.max_attributes
    }
    assert {n["maxItems"] for n in nodes if "maxItems" in n} == {
        DEFAULT_LIMITS.max_identities_per_kind,
        DEFAULT_LIMITS.max_tags,
    }
    tags = schema["$defs"]["personUpdate"]["properties"]["tagsAdded"]
    assert tags["maxItems"] == DEFAULT_LIMITS.max_tags
    emails = schema["$defs"]["userIdentity"]["properties"]["emails"]
    assert emails["maxItems"] == DEFAULT_LIMITS.max_identities_per_kind


def test_schema_timestamp_pattern_is_the_decoders() -> None:
    from idstream.codecs.wire import RFC3339_PATTERN

    timestamp = oracle.load("input/appLaunch.schema.json")["properties"]["timestamp"]
    assert timestamp["anyOf"][1]["pattern"] == RFC3339_PATTERN
    re.compile(RFC3339_PATTERN)


@pytest.mark.parametrize("rel", [r for r in INPUTS if r != "input/event.schema.json"])
def test_resolved_event_records_follow_their_schema(rel: str) -> None:
    for example in oracle.load(rel)["examples"]:
        event = decode(orjson.dumps(example))
        assert not isinstance(event, Rejection)
        record = resolved_event_record(event, profile_id="p-1", pool="default")
        oracle.validator("output/resolved-event.schema.json").validate(
            json.loads(encode_record(record))
        )


def test_dead_letter_record_follows_its_schema_and_keeps_the_bytes() -> None:
    raw = b'{"type": "appLaunch", \xff'
    meta = RecordMeta(
        topic="idstream.events",
        partition=2,
        offset=41,
        record_timestamp=1_732_352_400_000,
        key=b"fcm:abc",
        headers=(("sdk", b"5.2.1"), ("trace", b"\x00\x01")),
    )
    rejection = decode(raw, meta)
    assert isinstance(rejection, Rejection)
    record = json.loads(encode_record(dead_letter_record(raw, meta, rejection)))
    oracle.validator("output/dead-letter.schema.json").validate(record)

    assert base64.b64decode(record["originalBase64"]) == raw
    assert base64.b64decode(record["key"]) == b"fcm:abc"
    assert record["reason"] == "malformed_json"
    assert record["source"] == {
        "topic": "idstream.events",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_732_352_400_000,
    }
    assert [base64.b64decode(h["valueBase64"]) for h in record["headers"]] == [
        b"5.2.1",
        b"\x00\x01",
    ]


def test_encode_record_writes_read_only_mappings_and_sets() -> None:
    from types import MappingProxyType

    record = {"a": MappingProxyType({"b": frozenset({"y", "x"})}), "c": (1, 2)}
    assert encode_record(record) == b'{"a":{"b":["x","y"]},"c":[1,2]}'
    with pytest.raises(TypeError):
        encode_record({"x": object()})


def test_schema_forbidden_characters_are_the_domains() -> None:
    from idstream.domain.identities import FORBIDDEN_RANGES

    assert tuple(_generator().FORBIDDEN_RANGES) == FORBIDDEN_RANGES
    listed = {cp for low, high in FORBIDDEN_RANGES for cp in range(low, high + 1)}
    pattern = re.compile(oracle.load("input/event.schema.json")["$defs"]["name"]["not"]["pattern"])
    assert {cp for cp in range(0x110000) if pattern.fullmatch(chr(cp))} == listed
