"""What the traffic simulator generates: size, seed, event mix and the shares of odd traffic.

Simulation layer: standard library only. Shares are probabilities in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from idstream.domain.events import EventType
from idstream.errors import ConfigurationError

# 2026-01-01T00:00:00Z: simulated time starts here, never at the wall clock.
START_MS = 1_767_225_600_000

# Relative weights per 1,000 events of SDK traffic (issue #6).
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        EventType.APP_LAUNCH.value: 550.0,
        EventType.CUSTOM.value: 300.0,
        EventType.INSTALL_UPDATE.value: 60.0,
        EventType.INSTALL.value: 40.0,
        EventType.PERSONALIZE.value: 25.0,
        EventType.DEPERSONALIZE.value: 10.0,
        EventType.PERSON_UPDATE.value: 10.0,
        EventType.UNINSTALL.value: 5.0,
        EventType.FORGET.value: 0.5,
    }
)

_SHARES = (
    "malformed_share",
    "junk_share",
    "conflict_share",
    "shared_device_share",
    "multi_app_share",
    "relaunch_share",
    "late_share",
    "lost_install_share",
    "jitter_share",
    "rfc3339_share",
    "email_change_share",
    "reinstall_share",
)


def _default_mix() -> Mapping[str, float]:
    return DEFAULT_MIX


@dataclass(frozen=True)
class TrafficConfig:
    """Parameters of one simulated stream; the same config always gives the same bytes."""

    seed: int = 1
    users: int = 1000
    events: int = 10_000
    app_codes: tuple[str, ...] = ("shop", "shop-tablet")
    # Relative weights by event type; types left out never appear.
    mix: Mapping[str, float] = field(default_factory=_default_mix)
    start_ms: int = START_MS
    # Mean simulated time between two consecutive records of the whole stream.
    mean_gap_ms: int = 500
    # Records that are not valid events (bad JSON, wrong types, unknown type, > 64 KiB).
    malformed_share: float = 0.0
    # Identity-bearing events (personalize, personUpdate additions) carrying a blocklisted value.
    junk_share: float = 0.02
    # Personalizes that also claim an email another user already logged in with.
    conflict_share: float = 0.03
    # Devices shared by two people who take turns logging in.
    shared_device_share: float = 0.05
    # Users who have the app under a second appCode too.
    multi_app_share: float = 0.2
    # App launches inside 30 s of the same install's previous launch.
    relaunch_share: float = 0.15
    # Uninstalls followed later in the stream by an event stamped before the uninstall.
    late_share: float = 0.05
    # Installs whose `install` event the SDK never sent (the install starts with a launch).
    lost_install_share: float = 0.0
    # Events stamped a little (up to 5 s) before the install's previous event.
    jitter_share: float = 0.01
    # Events whose timestamp is an RFC 3339 string instead of epoch ms.
    rfc3339_share: float = 0.01
    # personUpdates that replace the person's email (identitiesReplaced).
    email_change_share: float = 0.3
    # `install` events on a device and app that have an install already: a reinstall (a new
    # install, the old one falls silent). The rest of them are app launches instead, so that
    # the population of installs stops growing once every user has all their devices.
    reinstall_share: float = 1.0

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ConfigurationError(f"users must be at least 1, got {self.users}")
        if self.events < 0:
            raise ConfigurationError(f"events must not be negative, got {self.events}")
        if not self.app_codes or any(not code for code in self.app_codes):
            raise ConfigurationError("app_codes must name at least one non-empty appCode")
        if self.mean_gap_ms < 1:
            raise ConfigurationError(f"mean_gap_ms must be at least 1, got {self.mean_gap_ms}")
        known = {t.value for t in EventType}
        unknown = sorted(set(self.mix) - known)
        if unknown:
            raise ConfigurationError(f"mix names unknown event types: {', '.join(unknown)}")
        if any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ConfigurationError("mix weights must be non-negative with a positive sum")
        for name in _SHARES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must be within [0, 1], got {value}")
