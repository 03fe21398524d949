"""The gateway's configuration, read from Settings and checked once at start-up.

Entry-point layer. Write keys are secrets: this module never prints them, and `__repr__`
shows only how many there are.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from idstream.codecs import Limits
from idstream.errors import ConfigurationError
from idstream.gateway.intake import IntakeConfig
from idstream.settings import Settings


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    intake: IntakeConfig
    cors_origins: tuple[str, ...] = ("*",)
    produce_timeout_s: float = 10.0
    # Unacknowledged bytes the producer may hold during an outage before requests get a 503
    # at once: 16 full batches (64 MiB by default).
    max_pending_bytes: int = 16 * 4 * 1024 * 1024
    write_keys: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"GatewayConfig({self.intake!r}, write_keys=<{len(self.write_keys)} keys>)"

    def app_code(self, write_key: str) -> str | None:
        """The appCode of a write key, or None (compared in constant time per key)."""
        found = None
        given = write_key.encode()
        for key, app_code in self.write_keys.items():
            if hmac.compare_digest(key.encode(), given):
                found = app_code
        return found

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        """Raises ConfigurationError naming the setting that is wrong (never a key's value)."""
        keys = dict(settings.gateway_write_keys)
        if not keys:
            raise ConfigurationError(
                "no write keys: set IDSTREAM_GATEWAY_WRITE_KEYS=<write key>=<appCode>,… "
                "(or gateway_write_keys in the settings file)"
            )
        if any(not key or not app for key, app in keys.items()):
            raise ConfigurationError("gateway_write_keys: every write key needs an appCode")
        body, message = settings.gateway_max_body_bytes, settings.gateway_max_message_bytes
        if message < 1 or body < message:
            raise ConfigurationError(
                "gateway_max_message_bytes must be >= 1 and <= gateway_max_body_bytes"
            )
        if settings.gateway_max_batch_messages < 1:
            raise ConfigurationError("gateway_max_batch_messages must be >= 1")
        if settings.gateway_produce_timeout_ms < 1:
            raise ConfigurationError("gateway_produce_timeout_ms must be >= 1")
        return cls(
            intake=IntakeConfig(
                max_body_bytes=body,
                max_message_bytes=message,
                max_batch_messages=settings.gateway_max_batch_messages,
                sign_out_events=frozenset(settings.gateway_sign_out_events),
                force_depersonalize=settings.gateway_force_depersonalize,
                limits=Limits(
                    max_record_bytes=settings.max_record_bytes,
                    max_future_skew_ms=settings.max_future_skew_ms,
                ),
            ),
            cors_origins=settings.gateway_cors_origins,
            produce_timeout_s=settings.gateway_produce_timeout_ms / 1000,
            max_pending_bytes=16 * body,
            write_keys=keys,
        )
