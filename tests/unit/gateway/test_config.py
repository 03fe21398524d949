"""Gateway settings: write keys from the environment, checked at start, never shown."""

from __future__ import annotations

import pytest

from idstream.errors import ConfigurationError
from idstream.gateway.config import GatewayConfig
from idstream.settings import load_settings

KEYS = "wk_secret_ios=shop-ios, wk_secret_android=shop-android"


def test_write_keys_map_to_app_codes() -> None:
    settings = load_settings(environ={"IDSTREAM_GATEWAY_WRITE_KEYS": KEYS})
    config = GatewayConfig.from_settings(settings)
    assert config.app_code("wk_secret_ios") == "shop-ios"
    assert config.app_code("wk_secret_android") == "shop-android"
    assert config.app_code("wk_secret_io") is None
    assert config.app_code("") is None


def test_write_keys_are_never_shown() -> None:
    settings = load_settings(environ={"IDSTREAM_GATEWAY_WRITE_KEYS": KEYS})
    assert settings.redacted()["gateway_write_keys"] == "***"
    config = GatewayConfig.from_settings(settings)
    assert "wk_secret" not in repr(config) and "2 keys" in repr(config)


def test_the_other_settings_reach_the_intake() -> None:
    env = {
        "IDSTREAM_GATEWAY_WRITE_KEYS": KEYS,
        "IDSTREAM_GATEWAY_SIGN_OUT_EVENTS": "Logged Out,Signed Out",
        "IDSTREAM_GATEWAY_FORCE_DEPERSONALIZE": "false",
        "IDSTREAM_GATEWAY_MAX_MESSAGE_BYTES": "1000",
        "IDSTREAM_GATEWAY_CORS_ORIGINS": "https://a.example,https://b.example",
        "IDSTREAM_MAX_RECORD_BYTES": "2000",
    }
    config = GatewayConfig.from_settings(load_settings(environ=env))
    assert config.intake.sign_out_events == {"Logged Out", "Signed Out"}
    assert config.intake.force_depersonalize is False
    assert config.intake.max_message_bytes == 1000
    assert config.intake.limits.max_record_bytes == 2000
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.max_pending_bytes == 16 * 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no write keys"),
        ({"IDSTREAM_GATEWAY_WRITE_KEYS": "k="}, "needs an appCode"),
        (
            {"IDSTREAM_GATEWAY_WRITE_KEYS": KEYS, "IDSTREAM_GATEWAY_MAX_BODY_BYTES": "10"},
            "gateway_max_message_bytes",
        ),
        (
            {"IDSTREAM_GATEWAY_WRITE_KEYS": KEYS, "IDSTREAM_GATEWAY_MAX_BATCH_MESSAGES": "0"},
            "gateway_max_batch_messages",
        ),
    ],
)
def test_bad_gateway_settings_are_named_without_the_keys(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        GatewayConfig.from_settings(load_settings(environ=env))
    assert "wk_secret" not in str(caught.value)
