"""Settings: defaults, file, environment precedence, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from idstream.domain.config import ConflictMode, Continuity
from idstream.errors import ConfigurationError
from idstream.settings import Settings, load_settings


def test_defaults_give_default_rules() -> None:
    rules = load_settings(environ={}).rules()
    assert rules.pool_of("any-app") == "default"
    assert rules.launch_dedup_ms == 30_000
    assert rules.rules_of(rules.pool_of("x")).continuity is Continuity.LINK


def test_file_then_environment(tmp_path: Path) -> None:
    file = tmp_path / "idstream.toml"
    file.write_text(
        'partitions = 12\npools = { vendor = "vendors", buyer = "buyers" }\n'
        'conflict_mode = { buyers = "strict" }\n[topics]\nevents = "sdk.events"\n'
    )
    env = {"IDSTREAM_PARTITIONS": "3", "IDSTREAM_TOPICS__DEAD_LETTER": "dlq"}
    settings = load_settings(file, environ=env)
    assert settings.partitions == 3  # environment wins over the file
    assert settings.topics.events == "sdk.events"
    assert settings.topics.dead_letter == "dlq"
    rules = settings.rules()
    assert rules.pool_of("vendor") == "vendors"
    assert rules.rules_of(rules.pool_of("buyer")).conflict_mode is ConflictMode.STRICT
    assert rules.rules_of(rules.pool_of("vendor")).conflict_mode is ConflictMode.PRIORITY


def test_environment_mapping_syntax() -> None:
    settings = load_settings(environ={"IDSTREAM_POOLS": "a=p1, b=p1"})
    assert settings.rules().pool_of("b") == "p1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IDSTREAM_PARTITIONS": "many"}, "partitions must be an integer"),
        ({"IDSTREAM_DEFAULT_CONTINUITY": "merge-all"}, "invalid pool rule"),
        ({"IDSTREAM_POOLS": "novalue"}, "key=value"),
        ({"IDSTREAM_DEAD_LETTER_MAX_BYTES": "1024"}, "dead_letter_max_bytes must be >="),
        ({"IDSTREAM_ALIGN_MS": "500"}, "align_ms must be >= 10 \\* tick_ms"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(environ=env)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "s.json"
    file.write_text('{"partitons": 3}')
    with pytest.raises(ConfigurationError, match="partitons"):
        load_settings(file, environ={})


def test_secrets_are_redacted() -> None:
    shown = Settings(
        sasl_password="hunter2",
        http_token="t0ken",
        http_raw_token="r4w",
        http_forward_secret="f0rward",
    ).redacted()
    assert shown["sasl_password"] == "***"
    for secret in ("hunter2", "t0ken", "r4w", "f0rward"):
        assert secret not in repr(shown)
