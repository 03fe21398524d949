"""Every well-formed simulated record obeys the input contract in schemas/input/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from idstream.simulate import TrafficConfig, generate

SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "input" / "event.schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is not in this checkout yet")
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_well_formed_records_match_the_input_schema(validator: Draft202012Validator) -> None:
    config = TrafficConfig(seed=3, events=3000, junk_share=0.2, conflict_share=0.2)
    checked = 0
    for record in generate(config):
        errors = list(validator.iter_errors(record.json()))
        assert not errors, (record.label, record.value, [e.message for e in errors[:3]])
        checked += 1
    assert checked == 3000


def test_malformed_records_do_not_match(validator: Draft202012Validator) -> None:
    config = TrafficConfig(seed=4, events=2000, malformed_share=0.3)
    for record in generate(config):
        if record.label in ("malformed:invalid_json", "malformed:oversize"):
            continue  # rejected before the schema: by the JSON parser or the size limit
        if record.malformed:
            assert not validator.is_valid(record.json()), record.value
