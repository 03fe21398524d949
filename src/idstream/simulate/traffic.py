"""The seeded SDK traffic generator: a stream of input records as the producers would send them.

Simulation layer. A discrete simulation over one `random.Random(seed)` and a simulated
clock that starts at `TrafficConfig.start_ms`: no global random, no wall clock, so the
same config always yields the same bytes. Memory grows with users and installs, never
with the number of events.
"""

from __future__ import annotations

import heapq
import random
import time
from bisect import bisect
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, NamedTuple

import orjson

from idstream.simulate.config import TrafficConfig
from idstream.simulate.junk import MALFORMED_KINDS, junk_identity, malformed_value
from idstream.simulate.population import APP_VERSIONS, Device, Install, User

DEFINITIONS = ("view_item", "add_to_cart", "search", "purchase", "share", "open_push")
TAGS = ("vip", "newsletter", "beta", "churn-risk", "frequent-buyer", "b2b")
_NO_FLAGS: tuple[str, ...] = ()
# Relaunches land this far after the previous launch: always inside the 30 s window.
_RELAUNCH_MAX_MS = 29_000
_RECENT_LAUNCHES = 64
# Custom events that belong to one of the latest sessions rather than to any install.
_IN_SESSION = 0.8


class SimRecord(NamedTuple):
    """One input record: Kafka key and value, what it is, and what makes it special."""

    key: bytes
    value: bytes
    # The event type, or "malformed:<kind>" for a record that is not a valid event.
    label: str
    # Simulated arrival time (ms): usable as the Kafka record timestamp.
    record_ms: int
    # Markers for tests and reports: relaunch, late, jitter, rfc3339, junk, junk_only,
    # conflict, shared_device, email_change, lost_install, force.
    flags: tuple[str, ...] = _NO_FLAGS

    def json(self) -> Any:
        """The decoded value (raises for invalid JSON)."""
        return orjson.loads(self.value)

    @property
    def malformed(self) -> bool:
        return self.label.startswith("malformed:")


@dataclass
class TrafficStats:
    """Running counts of what the generator produced so far."""

    labels: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    installs: int = 0
    users_seen: int = 0

    @property
    def total(self) -> int:
        return sum(self.labels.values())

    @property
    def malformed(self) -> int:
        return sum(n for label, n in self.labels.items() if label.startswith("malformed:"))


def rfc3339(ms: int) -> str:
    """Epoch ms as an RFC 3339 UTC string with milliseconds."""
    seconds, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z"


class Traffic:
    """Iterate to get `config.events` records; `stats` counts them as they go."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        self.stats = TrafficStats()
        self._rng = random.Random(config.seed)
        types = [t for t, w in config.mix.items() if w > 0]
        self._types = types
        self._cum = list(accumulate(config.mix[t] for t in types))
        self._malformed_kinds = [k for k, _ in MALFORMED_KINDS]
        self._malformed_cum = list(accumulate(w for _, w in MALFORMED_KINDS))
        self._users: list[User | None] = [None] * config.users
        self._known_users: list[User] = []
        # Pools with O(1) random pick and removal (swap with the last).
        self._active: list[Install] = []
        self._linked: list[Install] = []
        self._recent: deque[Install] = deque(maxlen=_RECENT_LAUNCHES)
        # Late events waiting for their turn: (record number to follow, seq, record).
        self._late: list[tuple[int, int, SimRecord]] = []
        self._now = config.start_ms
        self._ids = 0
        self._n = 0
        self._installs = 0

    def __iter__(self) -> Iterator[SimRecord]:
        config = self.config
        rng = self._rng
        rand = rng.random
        labels = self.stats.labels
        flag_counts = self.stats.flags
        late = self._late
        types, cum, total_weight = self._types, self._cum, self._cum[-1]
        makers = {
            "install": self._install,
            "appLaunch": self._app_launch,
            "custom": self._custom,
            "installUpdate": self._install_update,
            "personalize": self._personalize,
            "depersonalize": self._depersonalize,
            "personUpdate": self._person_update,
            "uninstall": self._uninstall,
            "forget": self._forget,
        }
        gap2 = 2 * config.mean_gap_ms
        malformed_share = config.malformed_share
        for n in range(config.events):
            self._n = n
            self._now += int(rand() * gap2) + 1
            if late and late[0][0] <= n:
                record = heapq.heappop(late)[2]._replace(record_ms=self._now)
            elif malformed_share and rand() < malformed_share:
                record = self._malformed()
            else:
                record = makers[types[bisect(cum, rand() * total_weight)]]()
            labels[record.label] += 1
            for flag in record.flags:
                flag_counts[flag] += 1
            yield record

    # --- helpers -------------------------------------------------------------------------

    def _event(
        self, install: Install, kind: str, ts: int, flags: tuple[str, ...], extra: dict[str, Any]
    ) -> SimRecord:
        self._ids += 1
        config = self.config
        if ts < self._now and "late" not in flags:
            flags = (*flags, "jitter")
        stamp: int | str = ts
        if config.rfc3339_share and self._rng.random() < config.rfc3339_share:
            stamp = rfc3339(ts)
            flags = (*flags, "rfc3339")
        value = {
            "eventId": f"{config.seed}-{self._ids}",
            "type": kind,
            "timestamp": stamp,
            **install.base,
            **extra,
        }
        if ts > install.last_ms:
            install.last_ms = ts
        return SimRecord(install.key, orjson.dumps(value), kind, self._now, flags)

    def _stamp(self, install: Install) -> int:
        """Now, or with a small share a little earlier (never before the install's first event)."""
        share = self.config.jitter_share
        if share and self._rng.random() < share:
            return max(self._now - self._rng.randrange(1, 5000), install.first_ms + 1)
        return self._now

    def _user(self, index: int) -> User:
        user = self._users[index]
        if user is None:
            rng = self._rng
            codes = self.config.app_codes
            first = rng.randrange(len(codes))
            apps: tuple[str, ...] = (codes[first],)
            if len(codes) > 1 and rng.random() < self.config.multi_app_share:
                apps = (*apps, codes[(first + 1 + rng.randrange(len(codes) - 1)) % len(codes)])
            devices = 1 + bisect((0.6, 0.9), rng.random())
            user = User(rng, index, self.config.seed, apps, devices)
            self._users[index] = user
            self.stats.users_seen += 1
        return user

    @staticmethod
    def _add(pool: list[Install], install: Install, linked: bool) -> None:
        if linked:
            install.linked_pos = len(pool)
        else:
            install.active_pos = len(pool)
        pool.append(install)

    @staticmethod
    def _remove(pool: list[Install], install: Install, linked: bool) -> None:
        pos = install.linked_pos if linked else install.active_pos
        if pos < 0:
            return
        last = pool.pop()
        if last is not install:
            pool[pos] = last
            if linked:
                last.linked_pos = pos
            else:
                last.active_pos = pos
        if linked:
            install.linked_pos = -1
        else:
            install.active_pos = -1

    def _pick_active(self) -> Install | None:
        active = self._active
        return active[int(self._rng.random() * len(active))] if active else None

    def _pick_linked(self) -> Install | None:
        linked = self._linked
        return linked[int(self._rng.random() * len(linked))] if linked else None

    # --- event makers --------------------------------------------------------------------

    def _install(self) -> SimRecord:
        rng = self._rng
        user = self._user(rng.randrange(self.config.users))
        if len(user.devices) < user.devices_wanted:
            other = -1
            if self.config.users > 1 and rng.random() < self.config.shared_device_share:
                other = (user.index + 1 + rng.randrange(self.config.users - 1)) % self.config.users
            user.devices.append(Device(rng, other))
        slot = (rng.randrange(len(user.devices)), rng.randrange(len(user.apps)))
        # A reinstall (new push token) replaces the slot's old install, which falls silent.
        old = user.slots.get(slot)
        if old is not None and old.active_pos >= 0 and rng.random() >= self.config.reinstall_share:
            return self._launch(old, _NO_FLAGS)
        if old is not None:
            self._remove(self._active, old, False)
            self._remove(self._linked, old, True)
        self._installs += 1
        self.stats.installs += 1
        install = Install(rng, self._installs, user, user.devices[slot[0]], user.apps[slot[1]])
        user.slots[slot] = install
        install.first_ms = self._now
        self._add(self._active, install, False)
        share = self.config.lost_install_share
        if share and rng.random() < share:
            return self._launch(install, ("lost_install",))
        extra: dict[str, Any] = {}
        if rng.random() < 0.8:
            extra["systemData"] = install.system_data(rng)
        return self._event(install, "install", self._now, _NO_FLAGS, extra)

    def _launch(self, install: Install, flags: tuple[str, ...]) -> SimRecord:
        ts = self._stamp(install)
        install.last_launch_ms = max(install.last_launch_ms, ts)
        self._recent.append(install)
        return self._event(install, "appLaunch", ts, flags, {})

    def _app_launch(self) -> SimRecord:
        rng = self._rng
        if self._recent and rng.random() < self.config.relaunch_share:
            # Look back over the latest launches for one still inside its 30 s window.
            recent = self._recent
            now = self._now
            for _ in range(4):
                candidate = recent[-1 - int(rng.random() * min(len(recent), 16))]
                if candidate.active_pos >= 0 and 0 < now - candidate.last_launch_ms <= (
                    _RELAUNCH_MAX_MS
                ):
                    candidate.last_launch_ms = now
                    recent.append(candidate)
                    return self._event(candidate, "appLaunch", now, ("relaunch",), {})
        install = self._pick_active()
        if install is None:
            return self._install()
        return self._launch(install, _NO_FLAGS)

    def _in_session(self) -> Install | None:
        """Mostly an install launched a moment ago (custom events come in sessions)."""
        recent = self._recent
        if recent and self._rng.random() < _IN_SESSION:
            candidate = recent[-1 - int(self._rng.random() * min(len(recent), 16))]
            if candidate.active_pos >= 0:
                return candidate
        return self._pick_active()

    def _custom(self) -> SimRecord:
        install = self._in_session()
        if install is None:
            return self._install()
        rng = self._rng
        definition = DEFINITIONS[int(rng.random() * len(DEFINITIONS))]
        properties: dict[str, Any] = {"screen": definition.split("_")[0]}
        if definition in ("view_item", "add_to_cart", "purchase"):
            properties["itemId"] = f"sku-{rng.randrange(5000)}"
            properties["price"] = round(rng.random() * 200, 2)
            properties["quantity"] = 1 + int(rng.random() * 3)
            properties["inStock"] = rng.random() < 0.9
        elif definition == "search":
            properties["query"] = rng.choice(("shoes", "red dress", "gift", "sale"))
            properties["coupon"] = None
        extra = {"definitionId": definition, "properties": properties}
        return self._event(install, "custom", self._stamp(install), _NO_FLAGS, extra)

    def _install_update(self) -> SimRecord:
        install = self._pick_active()
        if install is None:
            return self._install()
        rng = self._rng
        extra: dict[str, Any] = {}
        variant = rng.random()
        if variant < 0.5:
            if rng.random() < 0.3:
                # An app upgrade: later events carry the new version too.
                install.base = {**install.base, "applicationVersion": rng.choice(APP_VERSIONS)}
            extra["systemData"] = install.system_data(rng)
        if variant >= 0.4:
            extra["customAttributes"] = {
                "theme": rng.choice(("dark", "light")),
                "fontScale": rng.choice((1, 1.15, 1.3)),
                "marketingOptIn": rng.random() < 0.5,
                "nickname": None if rng.random() < 0.5 else install.user.first,
            }
        if variant >= 0.85:
            extra["primaryDevice"] = rng.random() < 0.7
        return self._event(install, "installUpdate", self._stamp(install), _NO_FLAGS, extra)

    def _personalize(self) -> SimRecord:
        install = self._pick_active()
        if install is None:
            return self._install()
        rng = self._rng
        config = self.config
        flags: tuple[str, ...] = ()
        person = install.user
        other = install.device.other_user
        if other >= 0 and rng.random() < 0.5:
            # The second person of a shared device takes a turn.
            person = self._user(other)
            flags = ("shared_device",)
        extra: dict[str, Any] = {}
        if rng.random() < config.junk_share:
            all_junk = rng.random() < 0.3
            identity = junk_identity(rng, all_junk)
            if not all_junk:
                for kind, values in person.identity(rng).items():
                    identity.setdefault(kind, values)
            flags = (*flags, "junk_only" if all_junk else "junk")
        else:
            identity = person.identity(rng)
        if self._known_users and rng.random() < config.conflict_share:
            claimed = self._known_users[int(rng.random() * len(self._known_users))]
            if claimed is not person:
                identity["emails"] = [*identity.get("emails", ()), claimed.email]
                flags = (*flags, "conflict")
        extra["userIdentity"] = identity
        if rng.random() < 0.6:
            extra["userAttributes"] = person.attributes(rng)
        if install.person >= 0 and install.person != person.index and rng.random() < 0.7:
            extra["forceDepersonalize"] = True
            flags = (*flags, "force")
        if not person.logged_in:
            person.logged_in = True
            self._known_users.append(person)
        if install.linked_pos < 0:
            self._add(self._linked, install, True)
        install.person = person.index
        return self._event(install, "personalize", self._stamp(install), flags, extra)

    def _depersonalize(self) -> SimRecord:
        install = self._pick_linked()
        if install is None:
            return self._personalize()
        self._remove(self._linked, install, True)
        install.person = -1
        return self._event(install, "depersonalize", self._stamp(install), _NO_FLAGS, {})

    def _person_update(self) -> SimRecord:
        install = self._pick_linked()
        if install is None:
            return self._personalize()
        rng = self._rng
        config = self.config
        person = self._user(install.person)
        flags: tuple[str, ...] = ()
        extra: dict[str, Any] = {}
        if rng.random() < config.email_change_share:
            person.email_changes += 1
            new = f"{person.first.lower()}.{person.index}.v{person.email_changes}@example.org"
            extra["identitiesReplaced"] = [{"kind": "email", "old": person.email, "new": new}]
            person.email = new
            flags = ("email_change",)
        else:
            variant = rng.random()
            if variant < 0.5:
                extra["attributes"] = {
                    "city": rng.choice(("Porto", "Brno", "Hamburg", "Lyon")),
                    "customAttributes": {"points": rng.randrange(0, 5000), "lastOrder": None},
                }
            elif variant < 0.8:
                extra["tagsAdded"] = rng.sample(TAGS, 1 + int(rng.random() * 2))
                if rng.random() < 0.3:
                    extra["tagsRemoved"] = [rng.choice(TAGS)]
            elif rng.random() < config.junk_share * 10:
                extra["identitiesAdded"] = junk_identity(rng, False)
                flags = ("junk",)
            elif variant < 0.95 or person.phone is None:
                person.phone = f"+4207{rng.randrange(10_000_000, 99_999_999)}"
                extra["identitiesAdded"] = {"phones": [person.phone]}
            else:
                extra["identitiesRemoved"] = {"phones": [person.phone]}
                person.phone = None
        return self._event(install, "personUpdate", self._stamp(install), flags, extra)

    def _uninstall(self) -> SimRecord:
        install = self._pick_active()
        if install is None:
            return self._install()
        rng = self._rng
        self._remove(self._active, install, False)
        self._remove(self._linked, install, True)
        record = self._event(install, "uninstall", max(self._now, install.last_ms), _NO_FLAGS, {})
        if rng.random() < self.config.late_share:
            # A launch the device stamped before the uninstall but delivered after it.
            stamped = max(install.last_ms - rng.randrange(1000, 60_000), install.first_ms + 1)
            late = self._event(install, "appLaunch", stamped, ("late",), {})
            after = self._n + 1 + rng.randrange(50)
            heapq.heappush(self._late, (after, self._ids, late))
        return record

    def _forget(self) -> SimRecord:
        install = self._pick_linked()
        if install is None:
            return self._personalize()
        person = self._user(install.person)
        extra: dict[str, Any] = {}
        if self._rng.random() < 0.5:
            extra["userIdentity"] = {"emails": [person.email]}
        self._remove(self._linked, install, True)
        install.person = -1
        return self._event(install, "forget", self._stamp(install), _NO_FLAGS, extra)

    def _malformed(self) -> SimRecord:
        rng = self._rng
        kind = self._malformed_kinds[
            bisect(self._malformed_cum, rng.random() * self._malformed_cum[-1])
        ]
        install = self._pick_active()
        self._ids += 1
        prid = install.base["pushRegistrationId"] if install else f"junk-{self._ids}"
        valid: dict[str, Any] = {
            "eventId": f"{self.config.seed}-{self._ids}",
            "type": "appLaunch",
            "timestamp": self._now,
            "appCode": self.config.app_codes[0],
            "pushRegistrationId": prid,
        }
        key = install.key if install else prid.encode()
        return SimRecord(key, malformed_value(rng, kind, valid), f"malformed:{kind}", self._now)


def generate(config: TrafficConfig) -> Iterator[SimRecord]:
    """Yield `config.events` records; use `Traffic` directly to read the counts as well."""
    return iter(Traffic(config))
