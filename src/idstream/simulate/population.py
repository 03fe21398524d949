"""The simulated people, their devices and their app installs.

Simulation layer: plain mutable records the generator updates as it goes; every random
choice comes from the generator's own `random.Random`.
"""

from __future__ import annotations

import random
from typing import Any

FIRST_NAMES = (
    "Ana", "Ben", "Chloe", "David", "Eva", "Femi", "Greta", "Hugo", "Ines", "Jonas",
    "Kim", "Lena", "Marco", "Nora", "Omar", "Priya", "Quinn", "Rui", "Sara", "Tomas",
)  # fmt: skip
LAST_NAMES = (
    "Silva", "Novak", "Meyer", "Okafor", "Rossi", "Kowalski", "Dubois", "Tanaka",
    "Haddad", "Larsen", "Moreau", "Costa", "Nguyen", "Fischer", "Olsen", "Garcia",
)  # fmt: skip
CITIES = (
    ("Lisbon", "PT"), ("Prague", "CZ"), ("Berlin", "DE"), ("Lagos", "NG"), ("Milan", "IT"),
    ("Paris", "FR"), ("Osaka", "JP"), ("Oslo", "NO"), ("Madrid", "ES"), ("Austin", "US"),
)  # fmt: skip
LANGUAGES = ("en", "pt", "cs", "de", "fr", "it", "ja", "es")
ANDROID_MODELS = (
    ("Google", "Pixel 8"), ("Samsung", "SM-S918B"), ("Samsung", "SM-A546B"),
    ("Xiaomi", "2201117TG"), ("OnePlus", "CPH2449"),
)  # fmt: skip
IOS_MODELS = (("Apple", "iPhone15,2"), ("Apple", "iPhone14,7"), ("Apple", "iPad13,18"))
ANDROID_VERSIONS = ("12", "13", "14", "15")
IOS_VERSIONS = ("16.7", "17.5", "18.1")
APP_VERSIONS = ("3.12.0", "3.13.1", "3.14.0", "3.15.2", "4.0.0")
SDK_VERSIONS = ("5.1.0", "5.2.1", "5.3.0")


class Device:
    """One phone or tablet; a shared one has a second person who logs in on it too."""

    __slots__ = ("language", "manufacturer", "model", "os_version", "other_user", "platform")

    def __init__(self, rng: random.Random, other_user: int) -> None:
        if rng.random() < 0.6:
            self.platform = "Android"
            self.manufacturer, self.model = rng.choice(ANDROID_MODELS)
            self.os_version = rng.choice(ANDROID_VERSIONS)
        else:
            self.platform = "iOS"
            self.manufacturer, self.model = rng.choice(IOS_MODELS)
            self.os_version = rng.choice(IOS_VERSIONS)
        self.language = rng.choice(LANGUAGES)
        self.other_user = other_user


class User:
    """A person with the identities they log in with; any of them may change later."""

    __slots__ = (
        "apps", "city", "devices", "devices_wanted", "email", "email_changes", "external_id",
        "first", "index", "last", "logged_in", "phone", "slots",
    )  # fmt: skip

    def __init__(
        self, rng: random.Random, index: int, seed: int, apps: tuple[str, ...], devices: int
    ) -> None:
        self.index = index
        self.first = rng.choice(FIRST_NAMES)
        self.last = rng.choice(LAST_NAMES)
        self.city = rng.choice(CITIES)
        # Every user has an email; most also have an app account id, some a phone.
        self.external_id: str | None = f"cust-{seed}-{index}" if rng.random() < 0.7 else None
        self.email = f"{self.first.lower()}.{self.last.lower()}.{index}@example.com"
        self.phone: str | None = (
            f"+4207{rng.randrange(10_000_000, 99_999_999)}" if rng.random() < 0.4 else None
        )
        self.email_changes = 0
        self.apps = apps
        self.devices: list[Device] = []
        self.slots: dict[tuple[int, int], Install] = {}
        self.logged_in = False
        self.devices_wanted = devices

    def identity(self, rng: random.Random) -> dict[str, Any]:
        identity: dict[str, Any] = {}
        if self.external_id is not None:
            identity["externalUserId"] = self.external_id
        if self.external_id is None or rng.random() < 0.8:
            identity["emails"] = [self.email]
        if self.phone is not None and rng.random() < 0.5:
            identity["phones"] = [self.phone]
        return identity

    def attributes(self, rng: random.Random) -> dict[str, Any]:
        city, country = self.city
        i = self.index
        return {
            "firstName": self.first,
            "lastName": self.last,
            "gender": "female" if self.first in ("Ana", "Chloe", "Eva", "Greta") else "male",
            "birthday": f"{1960 + i % 45}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "city": city,
            "country": country,
            "customAttributes": {
                "loyaltyTier": rng.choice(("bronze", "silver", "gold")),
                "newsletter": rng.random() < 0.5,
                "points": rng.randrange(0, 5000),
            },
        }


class Install:
    """One app instance on one device: the unit every SDK event is keyed by."""

    __slots__ = (
        "active_pos", "base", "device", "first_ms", "key", "last_launch_ms", "last_ms",
        "linked_pos", "person", "user",
    )  # fmt: skip

    def __init__(
        self, rng: random.Random, number: int, user: User, device: Device, app_code: str
    ) -> None:
        prefix = "fcm" if device.platform == "Android" else "apns"
        prid = f"{prefix}:{rng.getrandbits(64):016x}{number:x}"
        self.key = prid.encode()
        self.user = user
        self.device = device
        # Fields every event of this install carries, in wire order.
        self.base: dict[str, Any] = {
            "appCode": app_code,
            "pushRegistrationId": prid,
            "applicationVersion": rng.choice(APP_VERSIONS),
            "deviceManufacturer": device.manufacturer,
            "deviceModel": device.model,
            "osLanguage": device.language,
            "osVersion": device.os_version,
            "platform": device.platform,
            "sdkVersion": rng.choice(SDK_VERSIONS),
        }
        self.first_ms = 0
        self.last_ms = 0
        self.last_launch_ms = -1
        # Index of the person logged in (-1: anonymous); positions in the generator's pools.
        self.person = -1
        self.active_pos = -1
        self.linked_pos = -1

    def system_data(self, rng: random.Random) -> dict[str, Any]:
        base = self.base
        return {
            "platform": base["platform"],
            "sdkVersion": base["sdkVersion"],
            "osVersion": base["osVersion"],
            "deviceManufacturer": base["deviceManufacturer"],
            "deviceModel": base["deviceModel"],
            "applicationVersion": base["applicationVersion"],
            "appVersion": base["applicationVersion"],
            "osLanguage": base["osLanguage"],
            "pushRegistrationEnabled": rng.random() < 0.9,
            "registrationsEnabled": True,
            "geofencingEnabled": rng.random() < 0.3,
            "deviceSecure": rng.random() < 0.8,
            "notificationsEnabled": rng.random() < 0.7,
        }
