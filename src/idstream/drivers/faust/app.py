"""The Kafka topology: the resolver stages as Faust agents over RocksDB-backed tables.

Driver layer; the only place that imports faust besides drivers/faust/tables.py.

    idstream.events (key pushRegistrationId) ─┐
    idstream.internal.decisions (key prid) ───┴─> install agent ─> idstream.internal.claims
                                                      │              (key pool)
                                                      └─> resolved-events, dead-letter
    idstream.internal.claims ─> pool agent ─> decisions, profile-changes, profiles, dead-letter

Each agent handles a batch of records at a time (fewer wake-ups), but sets Faust's current
event to each record in turn, so every table write lands in that record's partition and every
output is attached to that record's offset: Faust publishes attached records before it commits
the offset, which is what makes delivery at-least-once.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from mode import CrashingSupervisor

from idstream.codecs import Rejection, decode
from idstream.domain.events import RecordMeta
from idstream.domain.install import apply_decision, apply_event, open_install_tables
from idstream.domain.messages import (
    Claim,
    LinkDecision,
    Output,
    OutputTopic,
    StageResult,
    dead_letter,
)
from idstream.domain.pool import apply_claim, open_pool_tables
from idstream.drivers.faust.continuity import Continuity, RestartRequested
from idstream.drivers.faust.metrics import Metrics
from idstream.drivers.faust.serde import (
    decode_claim,
    decode_decision,
    encode_claim,
    encode_decision,
)
from idstream.drivers.faust.tables import FaustTableFactory, close_on_stop
from idstream.drivers.faust.topics import records_between
from idstream.drivers.faust.web import install_api, web_options
from idstream.settings import Settings, load_settings
from idstream.storage.partitions import INSTALL_TABLE, POOL_TABLE
from idstream.storage.rocksdb_options import RocksDBOptions

logger = logging.getLogger(__name__)

BATCH_MAX = 500
BATCH_WITHIN_S = 0.02
# Claims are few but each costs more; a longer wait sorts more of them into event-time order.
POOL_BATCH_MAX = 2000
POOL_BATCH_WITHIN_S = 0.2


def _last_per_partition(batch: Iterable[Any]) -> dict[int, Any]:
    """partition -> the batch's last event of it (held table writes are sent with it)."""
    return {event.message.partition: event for event in batch}


def hold_back(batch: Iterable[Any]) -> None:
    """Keep a failed batch's offsets from being committed.

    Faust's `take_events` acks a batch in a `finally`, so a batch whose processing raised
    would be committed as if processed, and skipped for good. Flagging its messages as acked
    beforehand turns that ack into a no-op; the group's committed offset then stays before the
    batch, and a restarted worker processes it again.
    """
    for event in batch:
        event.message.acked = True


def _broker_url(servers: str) -> list[str]:
    return [f"kafka://{s.strip()}" for s in servers.split(",") if s.strip()]


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if settings.security_protocol.endswith("SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=settings.ssl_cafile)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context)


def _meta(message: Any) -> RecordMeta:
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    return RecordMeta(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        record_timestamp=int(message.timestamp * 1000),
        key=message.key,
        headers=tuple((str(k), bytes(v)) for k, v in items),
    )


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for `settings`: topics, tables and the two stage agents."""
    rules = settings.rules()
    topics = settings.topics
    partitions = settings.partitions
    app = faust.App(
        settings.app_id,
        broker=_broker_url(settings.bootstrap_servers),
        broker_credentials=_credentials(settings),
        store="rocksdb://",
        datadir=settings.data_dir,
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        **web_options(settings),
    )

    def topic(name: str, **kw: Any) -> Any:
        # internal=True: the worker creates the topic with `partitions` at start-up; left to
        # broker auto-creation it would get the broker's default partition count instead.
        return app.topic(
            name, partitions=partitions, key_type=bytes, value_type=bytes, internal=True, **kw
        )

    claims_topic = topic(topics.claims)
    decisions_topic = topic(topics.decisions)
    outputs = {
        OutputTopic.RESOLVED_EVENTS: topic(topics.resolved_events),
        OutputTopic.PROFILE_CHANGES: topic(topics.profile_changes),
        OutputTopic.PROFILES: topic(topics.profiles, compacting=True),
        OutputTopic.DEAD_LETTER: topic(topics.dead_letter),
    }
    options = RocksDBOptions()

    def table(name: str) -> Any:
        # A fresh options mapping per table: faust pops keys from it.
        return app.Table(
            name,
            default=None,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            options=options.to_table_options(),
        )

    install_state = table(INSTALL_TABLE)
    pool_state = table(POOL_TABLE)
    close_on_stop(install_state)
    close_on_stop(pool_state)
    install_store = FaustTableFactory(install_state)
    pool_store = FaustTableFactory(pool_state)
    install_tables = open_install_tables(install_store)
    pool_tables = open_pool_tables(pool_store)

    metrics = Metrics.for_settings(settings)
    install_api(app, settings, metrics, install_state, pool_state)

    async def send(result: StageResult) -> None:
        metrics.observe_result(result)
        for message in result.messages:
            if isinstance(message, Claim):
                await claims_topic.send(key=message.pool.encode(), value=encode_claim(message))
            else:
                await decisions_topic.send(
                    key=message.push_registration_id.encode(), value=encode_decision(message)
                )
        await send_outputs(result.outputs)

    async def send_outputs(records: Iterable[Output]) -> None:
        for out in records:
            value = None if out.value is None else orjson.dumps(out.value)
            await outputs[out.topic].send(key=out.key.encode(), value=value)

    input_channel = app.topic(
        topics.events, topics.decisions, partitions=partitions, key_type=bytes, value_type=bytes
    )

    async def start_offset(tp: Any) -> int:
        # Where delivery resumes after an assignment: faust sought to the committed offset
        # and keeps it; without one (or below the log start), the log start.
        consumer: Any = app.consumer
        committed = consumer._committed_offset.get(tp)
        earliest = (await consumer.earliest_offsets(tp)).get(tp, 0)
        return int(max(committed or 0, earliest))

    async def between(tp: Any, start: int, end: int) -> bool:
        return await records_between(settings, tp.topic, tp.partition, start, end)

    install_continuity = Continuity(start_offset, between)
    pool_continuity = Continuity(start_offset, between)

    async def _delivery_restarts(sender: Any, *args: Any, **kwargs: Any) -> None:
        install_continuity.reset()
        pool_continuity.reset()

    assigned: Any = app.on_partitions_assigned
    assigned.connect(_delivery_restarts)

    async def delivered(continuity: Continuity, batch: list[Any]) -> None:
        """Log an error when faust lost records before this batch (they stay uncommitted)."""
        gap = await continuity.check((e.message.tp, e.message.offset) for e in batch)
        if gap is not None:
            logger.error("%s", RestartRequested(gap))

    async def install_batch(batch: list[Any]) -> None:
        await delivered(install_continuity, batch)
        for event in batch:
            # Table writes and attached sends follow Faust's current event.
            _current_event.set(weakref.ref(event))
            message = event.message
            raw: bytes = message.value or b""
            if message.topic == topics.decisions:
                decision: LinkDecision = decode_decision(raw)
                await send(apply_decision(install_tables, decision, rules))
                continue
            meta = _meta(message)
            decoded = decode(raw, meta)
            metrics.observe_input(decoded)
            if isinstance(decoded, Rejection):
                rejected = dead_letter(raw, meta, decoded.reason, decoded.detail)
                await send(StageResult(outputs=(rejected,)))
                continue
            await send(apply_event(install_tables, decoded, raw, meta, rules))
        install_store.flush(_last_per_partition(batch))

    async def pool_batch(batch: list[Any]) -> None:
        await delivered(pool_continuity, batch)

        claims = [(decode_claim(event.message.value), event) for event in batch]
        # Claims of one batch in the order the pool's log sorts them (event time): the
        # state is the same in any order, but in this one the pool rolls nothing back.
        claims.sort(key=lambda c: (c[0].order, c[0].push_registration_id, c[0].seq))
        for claim, event in claims:
            _current_event.set(weakref.ref(event))
            await send(apply_claim(pool_tables, claim, rules))
        pool_store.flush(_last_per_partition(batch))

    # A stage that raises (or is cancelled mid-batch) stops the worker (CrashingSupervisor)
    # instead of being restarted on the records after its batch: a restarted worker must start
    # from the failed batch (see `hold_back`). Bad input never raises; it is dead-lettered.
    @app.agent(
        input_channel,
        name="install-stage",
        concurrency=1,
        supervisor_strategy=CrashingSupervisor,
    )
    async def install_agent(stream: Any) -> None:
        async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            try:
                await install_batch(batch)
            except BaseException:
                hold_back(batch)
                raise

    @app.agent(
        claims_topic, name="pool-stage", concurrency=1, supervisor_strategy=CrashingSupervisor
    )
    async def pool_agent(stream: Any) -> None:
        async for batch in stream.take_events(POOL_BATCH_MAX, within=POOL_BATCH_WITHIN_S):
            try:
                await pool_batch(batch)
            except BaseException:
                hold_back(batch)
                raise

    return app


def worker_app() -> faust.App:
    """The app for `faust -A idstream.drivers.faust.app worker`, from IDSTREAM_* settings."""
    return create_app(load_settings())


def __getattr__(name: str) -> Any:
    # `faust -A idstream.drivers.faust.app` looks up `app`; build it only when asked.
    if name == "app":
        return worker_app()
    raise AttributeError(name)
