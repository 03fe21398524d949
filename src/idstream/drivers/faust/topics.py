"""Create idstream's topics before a worker joins its consumer group.

Driver layer. Faust would create internal topics and table changelogs itself, but only while
the worker starts: a changelog whose metadata has not spread when the group assigns partitions
is left out of the assignment, and the first write to that table then crashes its agent
(PartitionsMismatch, "changelog has 0 partitions"). A topic auto-created by the broker gets
the broker's default partition count. So `idstream worker` makes every topic first, table
changelogs included, and waits until each shows its partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)

from idstream.domain.messages import dead_letter_topic_bytes
from idstream.errors import ConfigurationError
from idstream.settings import Settings
from idstream.storage.partitions import STAGE_TABLES

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Between two attempts of a call that waits out a broker outage, at most.
PATIENT_BACKOFF_MAX_S = 5.0


def broker_away(exc: BaseException) -> bool:
    """Whether `exc` means the brokers are (for now) out of reach, not that the call is wrong."""
    if isinstance(exc, KafkaError):
        return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, OSError | TimeoutError)


async def patiently(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again while the brokers are away, however long: a worker waits out an
    outage, and its watchdog (watchdog.py) halts it past `broker_outage_s`."""
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as exc:
            if not broker_away(exc):
                raise
            logger.warning("%s: %r; trying again in %.1f s", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(PATIENT_BACKOFF_MAX_S, delay * 2)


def changelog_topics(settings: Settings) -> list[str]:
    """Faust names a table's changelog `<app id>-<table>-changelog`."""
    return [f"{settings.app_id}-{table}-changelog" for table in STAGE_TABLES]


def leader_topic(settings: Settings) -> str:
    """The topic Faust's leader assignor subscribes every worker to (one partition)."""
    return f"{settings.app_id}-__assignor-__leader"


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the topology uses, with its topic-level config."""
    t = settings.topics
    # Compacted topics hold a forgotten person's values until compaction has run over them:
    # bounding the compaction lag gives erasure on the broker a deadline (docs/operations.md,
    # "Personal data").
    compacted = {
        "cleanup.policy": "compact",
        "max.compaction.lag.ms": str(settings.erasure_deadline_ms),
    }
    # Internal topics carry claims (with identities) between the stages: kept only as long as
    # the slowest stage may lag.
    internal = {"retention.ms": str(settings.internal_retention_ms)}
    return {
        # The broker stamps each input record: its order in time is the log's (SPEC §5), and
        # no producer's clock can move a partition ahead.
        t.events: {"message.timestamp.type": "LogAppendTime"},
        t.claims: internal,
        t.decisions: internal,
        t.resolved_events: {},
        t.profile_changes: {},
        t.profiles: compacted,
        t.forget_register: compacted,
        # Large enough for every dead letter `dead_letter` builds (a prefix above the limit).
        t.dead_letter: {
            "max.message.bytes": str(dead_letter_topic_bytes(settings.dead_letter_max_bytes))
        },
        # As Faust declares them: compacted, one partition per input partition.
        **{name: compacted for name in changelog_topics(settings)},
    }


def ssl_context(settings: Settings) -> Any:
    """The TLS context of SSL and SASL_SSL (trusting `ssl_cafile`, else the system's CAs)."""
    if not settings.security_protocol.endswith("SSL"):
        return None
    import ssl

    return ssl.create_default_context(cafile=settings.ssl_cafile)


def client_options(settings: Settings) -> dict[str, Any]:
    """Broker address and security settings, as aiokafka's clients take them."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "ssl_context": ssl_context(settings),
        "sasl_mechanism": settings.sasl_mechanism or "PLAIN",
        "sasl_plain_username": settings.sasl_username,
        "sasl_plain_password": settings.sasl_password,
    }


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(settings))


def consumer(settings: Settings, **options: Any) -> Any:
    """An aiokafka consumer for `settings` that commits nothing by itself."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False, **options)


async def ensure_topics(settings: Settings, *, timeout: float = 60.0) -> None:
    """Create the missing topics with `settings.partitions`; refuse a partition mismatch.

    Each new topic gets the replication factor and min.insync.replicas of
    `settings.replication` for the brokers the cluster lists now. Retriable broker errors (a
    broker still electing its controller or leaders, registering itself, a dropped
    connection) are retried until `timeout`; others are raised at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await _ensure_topics(settings)
            return
        except KafkaError as exc:
            # A KRaft broker that just started answers "0 brokers registered" for a moment.
            starting = isinstance(exc, InvalidReplicationFactorError)
            if not (exc.retriable or starting) or loop.time() > deadline:
                raise
            logger.warning("creating topics: %r; retrying", exc)
            await asyncio.sleep(0.5)


async def cluster_size(admin: AIOKafkaAdminClient) -> int:
    """How many brokers the cluster lists in its metadata now."""
    return len((await admin.describe_cluster())["brokers"])


def replicated(
    settings: Settings, config: dict[str, str], brokers: int
) -> tuple[int, dict[str, str]]:
    """The replication factor and the topic config (with min.insync.replicas) of a new topic."""
    factor, insync = settings.replication(brokers)
    return factor, {**config, "min.insync.replicas": str(insync)}


async def _ensure_topics(settings: Settings) -> None:
    wanted = topic_configs(settings)
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        # Faust's leader-election topic (one partition): made here too, so that it is
        # replicated like the others (Faust would make it with one replica).
        partitions = {name: settings.partitions for name in wanted}
        partitions[leader_topic(settings)] = 1
        configs: dict[str, dict[str, str]] = {**wanted, leader_topic(settings): {}}
        missing = []
        if any(name not in existing for name in configs):
            brokers = await cluster_size(admin)
            for name, config in configs.items():
                if name not in existing:
                    factor, full = replicated(settings, config, brokers)
                    missing.append(NewTopic(name, partitions[name], factor, topic_configs=full))
        if missing:
            response = await admin.create_topics(missing)
            for name, code, *rest in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:
                    raise for_code(code)(f"cannot create topic {name}: {rest}")
            logger.info(
                "created topics %s (replication %d, min.insync.replicas %s)",
                ", ".join(t.name for t in missing),
                missing[0].replication_factor,
                missing[0].topic_configs["min.insync.replicas"],
            )
        counts = await _partition_counts(admin, sorted(wanted))
        for name, count in counts.items():
            if count != settings.partitions:
                raise ConfigurationError(
                    f"topic {name} has {count} partitions but IDSTREAM_PARTITIONS is "
                    f"{settings.partitions}: every idstream topic must have the same count "
                    "(co-partitioning); set IDSTREAM_PARTITIONS to match"
                )
        await _check_input_timestamps(admin, settings)
    finally:
        await admin.close()


# The most a CreateTime input topic may let a producer stamp records in the future: further,
# and one producer's clock would hold every claim behind its partition for that long.
MAX_INPUT_FUTURE_MS = 60_000


async def _check_input_timestamps(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Refuse an input topic whose record times a producer can set far in the future."""
    name = settings.topics.events
    resource = ConfigResource(ConfigResourceType.TOPIC, name)
    configs: dict[str, str] = {}
    for response in await admin.describe_configs([resource]):
        for result in response.to_object()["resources"]:
            if result["error_code"]:
                # A topic created a moment ago can be unknown to the broker's config handler
                # for a while (UnknownTopicOrPartition, retriable: `ensure_topics` asks again).
                error = for_code(result["error_code"])
                raise error(f"describing {name}: {result['error_message']}")
            for entry in result["config_entries"]:
                configs[entry["config_names"]] = entry["config_value"]
    if configs.get("message.timestamp.type", "CreateTime") == "LogAppendTime":
        return
    future = int(configs.get("message.timestamp.after.max.ms") or 2**63 - 1)
    if future > MAX_INPUT_FUTURE_MS:
        raise ConfigurationError(
            f"input topic {name} keeps producer timestamps (CreateTime) up to {future} ms in "
            "the future: idstream orders the input by its record times, so one producer's clock "
            f"could hold every partition back. Set message.timestamp.type=LogAppendTime on {name} "
            f"(or message.timestamp.after.max.ms <= {MAX_INPUT_FUTURE_MS})"
        )


async def _partition_counts(
    admin: AIOKafkaAdminClient, topics: list[str], timeout: float = 30.0
) -> dict[str, int]:
    """Partition count per topic. A topic created a moment ago can show 0 partitions until
    its metadata has spread, so 0 is asked again (until `timeout`), never taken as an answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        counts = {
            t["topic"]: len(t.get("partitions", ())) for t in await admin.describe_topics(topics)
        }
        if all(counts.get(t, 0) > 0 for t in topics) or loop.time() > deadline:
            return {t: counts.get(t, 0) for t in topics}
        await asyncio.sleep(0.2)


async def group_lag(settings: Settings, topics: list[str]) -> int:
    """Records in `topics` not yet committed by the worker group (0: all processed)."""
    from aiokafka import TopicPartition

    admin = admin_client(settings)
    client = consumer(settings)
    await admin.start()
    await client.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id)
        tps = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        ends = await client.end_offsets(tps)
        lag = 0
        for tp, end in ends.items():
            meta = committed.get(tp)
            lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
        return lag
    finally:
        await client.stop()
        await admin.close()


def pipeline_topics(settings: Settings) -> list[str]:
    """The topics a worker consumes: input, claims and decisions."""
    t = settings.topics
    return [t.events, t.claims, t.decisions]


async def group_start_offset(settings: Settings, topic: str, partition: int) -> int:
    """Where the worker group resumes a partition: its committed offset, or the log start
    when nothing is committed or retention has passed the committed offset.

    Asks the broker (an offset fetch, without joining the group), not faust's memory.
    """
    from aiokafka import TopicPartition

    client = consumer(settings, group_id=settings.app_id)
    try:
        # Started inside the try: a start that fails (broker away) still closes the client.
        await client.start()
        tp = TopicPartition(topic, partition)
        committed = await client.committed(tp)
        earliest = (await client.beginning_offsets([tp]))[tp]
        return int(max(committed or 0, earliest))
    finally:
        await client.stop()


async def records_between(
    settings: Settings, topic: str, partition: int, start: int, end: int
) -> bool:
    """Whether Kafka holds a record of the partition at an offset in start..end-1.

    Offsets without a record exist: transaction markers take one each. Unsure (nothing read
    within the timeout) counts as yes.
    """
    from aiokafka import TopicPartition

    client = consumer(settings)
    try:
        await client.start()
        tp = TopicPartition(topic, partition)
        client.assign([tp])
        client.seek(tp, start)
        found = await client.getmany(tp, timeout_ms=10_000, max_records=1)
        records = found.get(tp, [])
        return not records or records[0].offset < end
    finally:
        await client.stop()


async def pending_claims(settings: Settings) -> float:
    """Claims the worker serving `settings`' HTTP port holds back for the watermark (its
    `idstream_pending_claims` metric); a worker not answering yet counts as one pending."""
    import urllib.error
    import urllib.request

    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::") else "127.0.0.1"
    request = urllib.request.Request(f"http://{host}:{settings.http_port}/metrics")
    if settings.http_token:
        request.add_header("Authorization", f"Bearer {settings.http_token}")

    def fetch() -> str:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
        return body.decode("utf-8")

    try:
        text = await asyncio.to_thread(fetch)
    except (OSError, urllib.error.URLError):
        return 1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("idstream_pending_claims{")
    )
