"""The rule configuration the stages obey (SPEC §4): pools, strategies, limits, blocklist, dedup.

Domain layer. settings.py builds one from environment variables or a file; tests build their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from idstream.domain.events import PoolId

DEFAULT_POOL = PoolId("default")


class Continuity(StrEnum):
    """What a personalize does with the install's anonymous history (SPEC §4.4)."""

    LINK = "link"  # merge the anonymous profile into the person
    SEPARATE = "separate"  # keep it apart; only later events go to the person


class ConflictMode(StrEnum):
    """What a personalize does when its identities belong to persons that may not merge."""

    PRIORITY = "priority"  # link to the owner of the highest-priority identity; reject the rest
    STRICT = "strict"  # reject the whole personalize


# SPEC §4.3 defaults. Compared after trimming, lower-casing and removing one pair of quotes.
DEFAULT_BLOCKLIST: frozenset[str] = frozenset(
    {
        "null",
        "undefined",
        "none",
        "nan",
        "true",
        "false",
        "anonymous",
        "guest",
        "id",
        "email",
        "not_authenticated",
        "[object object]",
        "test@test.com",
    }
)


@dataclass(frozen=True, slots=True)
class PersonLimits:
    """Per-person caps (SPEC §4.6). A change that would exceed one is rejected.

    `installs` bounds the installs linked to one person (uninstalled ones included): a
    personalize that would link one more stays on its anonymous profile, and a merge that
    would exceed it is skipped. It keeps a person's snapshot under Kafka's message size and
    the work of each claim on that person flat, whatever the input.

    `tags`, `custom_attributes` (per person) and `install_custom_attributes` (per install)
    bound names that have a value: a write of a new name beyond one is ignored, as are the
    names a merge would bring beyond it (the survivor's are kept, then the loser's in the
    order it got them), so an SDK that writes a new name per event cannot grow a record
    without end.
    """

    external_user_ids: int = 1
    emails: int = 100
    phones: int = 100
    merges_absorbed: int = 100
    tags: int = 500
    installs: int = 100
    custom_attributes: int = 200
    install_custom_attributes: int = 100


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """What each profile's history keeps for the profile explorer (domain/pool_history.py):
    every merge (bounded by the merge cap), the newest `rejections` identity rejections and the
    newest `changes` other changes."""

    changes: int = 30
    rejections: int = 100


@dataclass(frozen=True, slots=True)
class PoolRules:
    continuity: Continuity = Continuity.LINK
    conflict_mode: ConflictMode = ConflictMode.PRIORITY


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """Everything the resolver's decisions depend on besides the events themselves."""

    # appCode -> pool; unlisted appCodes share DEFAULT_POOL (SPEC §2).
    pools: Mapping[str, PoolId] = field(default_factory=lambda: MappingProxyType({}))
    # pool -> its rules; unlisted pools use `default_rules`.
    pool_rules: Mapping[PoolId, PoolRules] = field(default_factory=lambda: MappingProxyType({}))
    default_rules: PoolRules = PoolRules()
    limits: PersonLimits = PersonLimits()
    history: HistoryLimits = HistoryLimits()
    blocklist: frozenset[str] = DEFAULT_BLOCKLIST
    launch_dedup_ms: int = 30_000
    # How long an applied eventId is remembered (SPEC §4.1), in record time: the window in
    # which SDKs retry.
    dedup_window_ms: int = 24 * 60 * 60 * 1000
    # The deployment's secret for keyed hashes of personal data (identity index, forget
    # register); settings.py reads it, never from the data dir, never logged.
    personal_key: bytes = field(default=b"", repr=False)

    @property
    def all_pools(self) -> tuple[PoolId, ...]:
        """Every pool an event can belong to: the configured ones and the default."""
        return tuple(sorted({DEFAULT_POOL, *self.pools.values()}))

    def pool_of(self, app_code: str) -> PoolId:
        return self.pools.get(app_code, DEFAULT_POOL)

    def rules_of(self, pool: str) -> PoolRules:
        return self.pool_rules.get(PoolId(pool), self.default_rules)


DEFAULT_RULES = RuleConfig()
