"""One frozen settings object for every driver, read from IDSTREAM_* variables and/or a file.

Edge layer: builds the domain's RuleConfig and the Kafka/Faust options. Secrets never printed.
Precedence: defaults < settings file (TOML or JSON, `IDSTREAM_SETTINGS_FILE` or --settings) <
environment variables.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from idstream.codecs.limits import Limits
from idstream.domain.config import (
    DEFAULT_BLOCKLIST,
    ConflictMode,
    Continuity,
    HistoryLimits,
    PersonLimits,
    PoolRules,
    RuleConfig,
)
from idstream.domain.events import PoolId
from idstream.domain.messages import DEAD_LETTER_MAX_BYTES
from idstream.errors import ConfigurationError

ENV_PREFIX = "IDSTREAM_"
_SECRET_FIELDS = frozenset(
    {
        "sasl_password",
        "http_token",
        "http_raw_token",
        "http_forward_secret",
        "gateway_write_keys",
        "personal_data_key",
    }
)
# The key `dev_mode` uses: every deployment that runs it shares it, so hashes made with it
# protect nothing. Only for trying idstream out (the demo, tests).
DEV_PERSONAL_DATA_KEY = b"idstream-dev-mode-not-a-secret"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names (SPEC §1). Internal topics carry messages between the stages."""

    events: str = "idstream.events"
    resolved_events: str = "idstream.resolved-events"
    profile_changes: str = "idstream.profile-changes"
    profiles: str = "idstream.profiles"
    dead_letter: str = "idstream.dead-letter"
    claims: str = "idstream.internal.claims"
    decisions: str = "idstream.internal.decisions"
    # Compacted, no raw personal data; a rebuild keeps it and applies it first (SPEC §4.10).
    forget_register: str = "idstream.forget-register"


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "idstream"
    partitions: int = 6
    data_dir: str = "./state"
    topics: Topics = Topics()
    # Kafka security, passed through to aiokafka (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    # Every topic idstream creates (worker, rebuild, gateway, simulate): its replication factor
    # and min.insync.replicas. 0 = from the brokers the cluster lists at creation: replication
    # min(3, brokers), min.insync replication - 1 (at least 1). Existing topics are left as
    # they are (docs/operations.md, "A production cluster").
    replication_factor: int = 0
    min_insync_replicas: int = 0
    # A broker outage up to this long is waited out; past it the worker halts (exit 69) with
    # the reason in its log. Also the longest a worker may have records to read and read
    # none while the brokers answer (a stuck consumer) before it halts.
    broker_outage_s: int = 300
    # Profile lookup and metrics HTTP server of each worker.
    http_host: str = "127.0.0.1"
    http_port: int = 6066
    http_token: str | None = None
    # The lookup API's checks (docs/operations.md, "Lookup API"): raw values only with the raw
    # token; forwarded requests signed with a secret only workers hold; Host names allowed
    # besides localhost and IP addresses; identity lookups per token (or client address) and
    # worker, 0: no limit.
    http_raw_token: str | None = None
    http_forward_secret: str | None = None
    http_allowed_hosts: tuple[str, ...] = ()
    http_lookups_per_minute: int = 60
    http_lookup_burst: int = 20
    # Rules (SPEC §4).
    pools: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    continuity: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    conflict_mode: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    default_continuity: str = Continuity.LINK.value
    default_conflict_mode: str = ConflictMode.PRIORITY.value
    max_external_user_ids: int = 1
    max_emails: int = 100
    max_phones: int = 100
    max_merges: int = 100
    max_tags: int = 500
    max_installs: int = 100
    max_custom_attributes: int = 200
    max_install_custom_attributes: int = 100
    extra_blocklist: tuple[str, ...] = ()
    # Each profile's history for the profile explorer (docs/explorer.md): every merge, the
    # newest `history_rejections` identity rejections and `history_changes` other changes.
    history_changes: int = 30
    history_rejections: int = 100
    launch_dedup_ms: int = 30_000
    # How long an applied eventId is remembered (SPEC §4.1), in record time.
    dedup_window_ms: int = 24 * 3600 * 1000
    # Decoder limits (codecs.Limits): every place that decodes input uses these.
    max_record_bytes: int = 65_536
    max_string_chars: int = 1024
    max_attributes: int = 100
    max_identities_per_kind: int = 20
    max_tags_per_event: int = 50
    max_future_skew_ms: int = 24 * 3600 * 1000
    # Original bytes a dead letter carries; above it a prefix, the length and the sha256. The
    # dead-letter topic is created with a max.message.bytes to match (drivers/faust/topics.py).
    dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES
    # The input log's order (SPEC §5): a silent input partition a pool waits for gets a tick
    # record after this long.
    tick_ms: int = 100
    # An input partition more than this far ahead (in record time) of the lowest watermark of
    # the pools holding claims back is paused until the others catch up, so a rebuild's fast
    # sources cannot fill `pool_pending` (docs/architecture.md, "Alignment"). Far above what
    # live traffic sees (ticks keep idle partitions within ~tick_ms, a restarted worker's
    # partitions within its restart time), far below the dedup window.
    align_ms: int = 5 * 60 * 1000
    # Personal data (docs/operations.md, "Personal data"): the secret of every keyed hash of an
    # identity (identity index, forget register). Every worker, rebuild and replay of one
    # deployment must share it; from the environment or a file outside the data dir.
    personal_data_key: str | None = None
    personal_data_key_file: str | None = None
    # Without a key, a worker, rebuild or replay refuses to start, unless dev_mode says this
    # deployment is for trying idstream out (a fixed, public key is used then).
    dev_mode: bool = False
    # Erasure deadline on the broker: compacted topics (profiles, table changelogs, the forget
    # register) are compacted at the latest this long after a record is superseded.
    erasure_deadline_ms: int = 24 * 3600 * 1000
    # How long the internal topics (claims, decisions) keep records: longer than the worst
    # lag a worker may fall behind, shorter than you may keep personal data in transit.
    internal_retention_ms: int = 7 * 24 * 3600 * 1000
    # Ingestion gateway (`idstream gateway`, docs/gateway.md). Write keys are secrets.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8088
    gateway_write_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    gateway_max_body_bytes: int = 4 * 1024 * 1024  # RudderStack's batch limit; also unzipped
    gateway_max_message_bytes: int = 32 * 1024  # Segment's limit per message
    gateway_max_batch_messages: int = 1_000  # SDKs send 100 or fewer; bounds dead letters too
    gateway_sign_out_events: tuple[str, ...] = ("Signed Out",)
    gateway_force_depersonalize: bool = True
    gateway_cors_origins: tuple[str, ...] = ("*",)
    gateway_produce_timeout_ms: int = 10_000

    def rules(self) -> RuleConfig:
        """The domain's rule configuration, validated."""
        try:
            pool_names = {PoolId(p) for p in self.pools.values()}
            pool_names |= {PoolId(p) for p in self.continuity} | {
                PoolId(p) for p in self.conflict_mode
            }
            pool_rules = {
                pool: PoolRules(
                    continuity=Continuity(self.continuity.get(pool, self.default_continuity)),
                    conflict_mode=ConflictMode(
                        self.conflict_mode.get(pool, self.default_conflict_mode)
                    ),
                )
                for pool in pool_names
            }
            default_rules = PoolRules(
                continuity=Continuity(self.default_continuity),
                conflict_mode=ConflictMode(self.default_conflict_mode),
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid pool rule: {exc}") from exc
        if self.launch_dedup_ms < 0 or self.dedup_window_ms < 0:
            raise ConfigurationError("launch_dedup_ms and dedup_window_ms must be >= 0")
        if self.history_changes < 0 or self.history_rejections < 0:
            raise ConfigurationError("history_changes and history_rejections must be >= 0")
        if self.max_installs < 1:
            raise ConfigurationError("max_installs must be >= 1")
        if self.tick_ms < 1:
            raise ConfigurationError("tick_ms must be >= 1")
        if self.align_ms < 10 * self.tick_ms:
            # Live partitions are up to about tick_ms apart; pausing them would only add latency.
            raise ConfigurationError("align_ms must be >= 10 * tick_ms")
        if self.replication_factor < 0 or self.min_insync_replicas < 0:
            raise ConfigurationError("replication_factor and min_insync_replicas must be >= 0")
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            # Every acks=all write would be refused (NotEnoughReplicas).
            raise ConfigurationError("min_insync_replicas must be <= replication_factor")
        if self.broker_outage_s < 1:
            raise ConfigurationError("broker_outage_s must be >= 1")
        if self.dead_letter_max_bytes < self.max_record_bytes:
            # A record the decoder accepts is always carried whole; only oversize ones are cut.
            raise ConfigurationError("dead_letter_max_bytes must be >= max_record_bytes")
        return RuleConfig(
            pools=MappingProxyType({k: PoolId(v) for k, v in self.pools.items()}),
            pool_rules=MappingProxyType(pool_rules),
            default_rules=default_rules,
            limits=PersonLimits(
                external_user_ids=self.max_external_user_ids,
                emails=self.max_emails,
                phones=self.max_phones,
                merges_absorbed=self.max_merges,
                tags=self.max_tags,
                installs=self.max_installs,
                custom_attributes=self.max_custom_attributes,
                install_custom_attributes=self.max_install_custom_attributes,
            ),
            history=HistoryLimits(self.history_changes, self.history_rejections),
            blocklist=DEFAULT_BLOCKLIST | {v.strip().lower() for v in self.extra_blocklist},
            launch_dedup_ms=self.launch_dedup_ms,
            dedup_window_ms=self.dedup_window_ms,
            personal_key=self._personal_key_or_empty(),
        )

    def _personal_key_or_empty(self) -> bytes:
        # Entry points call personal_key() first, so a deployment without a key never gets
        # here with an empty one; tools that hash nothing (simulate, tail) need none.
        try:
            return self.personal_key()
        except ConfigurationError:
            return b""

    def personal_key(self) -> bytes:
        """The secret for keyed hashes of personal data; ConfigurationError if none is set and
        this is not a dev-mode deployment."""
        if self.personal_data_key:
            return self.personal_data_key.encode("utf-8")
        if self.personal_data_key_file:
            path = Path(self.personal_data_key_file)
            try:
                secret = path.read_bytes().strip()
            except OSError as exc:
                raise ConfigurationError(f"cannot read personal_data_key_file: {exc}") from exc
            if len(secret) < 16:
                raise ConfigurationError("personal_data_key_file holds fewer than 16 bytes")
            return secret
        if self.dev_mode:
            return DEV_PERSONAL_DATA_KEY
        raise ConfigurationError(
            "no key for hashes of personal data: set IDSTREAM_PERSONAL_DATA_KEY (or "
            "IDSTREAM_PERSONAL_DATA_KEY_FILE, a file outside the data dir) to a secret shared by "
            "every worker, rebuild and replay of this deployment; or IDSTREAM_DEV_MODE=true to "
            "try idstream out with a public key (docs/operations.md, 'Personal data')"
        )

    def replication(self, brokers: int) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) of a topic created while the cluster
        lists `brokers` brokers: the settings where given, else min(3, brokers) and one less
        (at least 1), so that one broker may fail without stopping acks=all writes."""
        factor = self.replication_factor or max(1, min(3, brokers))
        insync = self.min_insync_replicas or max(1, factor - 1)
        return factor, min(insync, factor)

    def limits(self) -> Limits:
        """The decoder's limits, validated."""
        values = {
            "max_record_bytes": self.max_record_bytes,
            "max_string_chars": self.max_string_chars,
            "max_attributes": self.max_attributes,
            "max_identities_per_kind": self.max_identities_per_kind,
            "max_tags": self.max_tags_per_event,
            "max_future_skew_ms": self.max_future_skew_ms,
        }
        for name, value in values.items():
            if value < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {value}")
        return Limits(**values)

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict for logs and `--help` output, secrets replaced by '***'."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value:
                value = "***"
            elif isinstance(value, Topics):
                value = {t.name: getattr(value, t.name) for t in fields(value)}
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


def _coerce(name: str, raw: Any, current: Any) -> Any:
    """Convert a file or environment value to the type of the field's default."""
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        return str(raw).strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc
    if isinstance(current, tuple):
        if isinstance(raw, str):
            return tuple(v.strip() for v in raw.split(",") if v.strip())
        return tuple(str(v) for v in raw)
    if isinstance(current, Mapping):
        if isinstance(raw, str):
            # "appA=pool1,appB=pool1"
            pairs = (item.split("=", 1) for item in raw.split(",") if item.strip())
            try:
                return MappingProxyType({k.strip(): v.strip() for k, v in pairs})
            except ValueError as exc:
                raise ConfigurationError(f"{name} must look like key=value,key=value") from exc
        return MappingProxyType({str(k): str(v) for k, v in dict(raw).items()})
    if isinstance(current, Topics):
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"{name} must be a table of topic names")
        return _apply(current, raw, f"{name}.")
    return None if raw is None else str(raw)


def _apply(obj: Any, values: Mapping[str, Any], where: str = "") -> Any:
    known = {f.name for f in fields(obj)}
    unknown = set(values) - known
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(where + u for u in unknown)}")
    changes = {k: _coerce(where + k, v, getattr(obj, k)) for k, v in values.items()}
    return replace(obj, **changes)


_FIELD_NAMES = frozenset(f.name for f in fields(Settings)) - {"topics"}


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then the settings file, then IDSTREAM_* variables (IDSTREAM_TOPICS__EVENTS=…)."""
    env = os.environ if environ is None else environ
    settings = Settings()
    path = path or env.get(ENV_PREFIX + "SETTINGS_FILE")
    if path:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read settings file {file}: {exc}") from exc
        settings = _apply(settings, data)
    from_env: dict[str, Any] = {}
    topics: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "SETTINGS_FILE":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        # Other tools share the prefix (IDSTREAM_KAFKA_*): only names we know are settings.
        if name.startswith("topics__"):
            topics[name.removeprefix("topics__")] = value
        elif name in _FIELD_NAMES:
            from_env[name] = value
    if topics:
        from_env["topics"] = topics
    settings = _apply(settings, from_env)
    assert isinstance(settings, Settings)
    settings.rules()  # validate now, not at the first event
    settings.limits()
    return settings
