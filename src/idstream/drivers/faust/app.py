"""The Kafka topology: the resolver stages as Faust agents over RocksDB-backed tables.

Driver layer; the only place that imports faust besides drivers/faust/tables.py.

    idstream.events (key pushRegistrationId) ─┐
    idstream.internal.decisions (key prid) ───┴─> install agent ─> idstream.internal.claims
                                                      │              (key pool)
                                                      └─> resolved-events, dead-letter
    idstream.internal.claims ─> pool agent ─> decisions, profile-changes, profiles, dead-letter

Each agent handles a batch of records at a time (fewer wake-ups) and sets Faust's current
event to each record in turn, so every table write lands in that record's partition. Outputs,
claims, decisions and changelog records are built into one Kafka record batch per topic
partition (`Outbox`, no Faust `Topic.send` per record) and handed to the aiokafka producer at
the end of the batch, whose body waits for all of them to be delivered before it returns, i.e.
before `take_events` acks the batch's records: an offset is never committed before its outputs
are delivered (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterable
from typing import Any, NoReturn, cast

import faust
import orjson
from aiokafka.errors import KafkaError
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
from idstream.drivers.faust.continuity import Continuity, Gap
from idstream.drivers.faust.metrics import Metrics
from idstream.drivers.faust.serde import (
    decode_claim,
    decode_decision,
    encode_claim,
    encode_decision,
)
from idstream.drivers.faust.tables import FaustTableFactory, close_on_stop
from idstream.drivers.faust.topics import group_start_offset, records_between, ssl_context
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
# Bytes per Kafka record batch the Outbox builds (the broker's default limit is 1 MiB).
RECORD_BATCH_BYTES = 256 * 1024
# Keys whose partition the Outbox remembers before it starts over.
PARTITION_CACHE = 100_000


class Outbox:
    """The records of one batch, built into one Kafka record batch per topic partition.

    `add` appends a record to the open batch of its partition (aiokafka's `BatchBuilder`: no
    future, no coroutine per record); `delivered` hands every batch to the app's aiokafka
    producer, waits until the broker has acknowledged all of them and returns the offset of
    the last record per (topic, partition). A batch that cannot be delivered (aiokafka gave up
    retrying) halts the process, as kill -9 would: `take_events` acks a batch's records even
    when its body raises, so raising could commit them.
    """

    def __init__(self, app: faust.App, partitions: int) -> None:
        self._app = app
        self._all_partitions = list(range(partitions))
        self._partition_of: dict[bytes, int] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[str, int, Any]] = []

    def _producer(self) -> Any:
        return self._app.producer._ensure_producer()  # type: ignore[attr-defined]

    def _partition(self, key: bytes) -> int:
        # The producer's default partitioner (murmur2, as Java's) over `partitions`, which every
        # idstream topic has (topics.ensure_topics refuses any other count); pure Python, so
        # cached (keys repeat: pools, profiles, installs).
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= PARTITION_CACHE:
                self._partition_of.clear()
            partition = self._producer()._partitioner(key, self._all_partitions, None)
            self._partition_of[key] = partition
        return partition

    def add(
        self, topic: str, key: bytes, value: bytes | None, partition: int | None = None
    ) -> None:
        if partition is None:
            partition = self._partition(key)
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self._producer().create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:
            # Full: keep it for `delivered` (in order) and start the next one, which takes
            # its first record whatever its size.
            self._full.append((topic, partition, builder))
            builder = self._open[tp] = self._producer().create_batch()
            builder.append(timestamp=None, key=key, value=value)

    async def delivered(self) -> dict[tuple[str, int], int]:
        batches = [*self._full, *((t, p, b) for (t, p), b in self._open.items())]
        self._full, self._open = [], {}
        if not batches:
            return {}
        producer = self._producer()
        try:
            sent = [
                (
                    topic,
                    partition,
                    builder.record_count(),
                    await producer.send_batch(builder, topic, partition=partition),
                )
                for topic, partition, builder in batches
            ]
            await asyncio.gather(*(future for *_, future in sent))
        except (KafkaError, OSError):
            logger.critical("records of a batch could not be delivered; halting", exc_info=True)
            logging.shutdown()
            os._exit(70)
        # Batches of one partition were sent in order, so the last one's offsets are the highest.
        return {(t, p): future.result().offset + count - 1 for t, p, count, future in sent}


def hold_back(batch: Iterable[Any]) -> None:
    """Keep a failed batch's offsets from being committed.

    Faust's `take_events` acks a batch in a `finally`, so a batch whose processing raised
    would be committed as if processed, and skipped for good. Flagging its messages as acked
    beforehand turns that ack into a no-op; the group's committed offset then stays before the
    batch, and a restarted worker processes it again.
    """
    for event in batch:
        event.message.acked = True


# Exit code of a worker that stops itself because a stage raised.
EXIT_STAGE_FAILED = 70


def halt(code: int, reason: str) -> NoReturn:
    """Stop the process now, as kill -9 would: nothing more is committed or written.

    faust's graceful stop after an agent crash can hang (waiting for the consumer and its
    commits), so a worker that cannot go on leaves at once; its uncommitted batches are
    processed again by the next worker, the at-least-once path the kill -9 tests cover.
    """
    logger.critical("halting (exit %d): %s", code, reason)
    logging.shutdown()
    os._exit(code)


async def _no_gap(tp: Any, offset_from: int, offset_to: int) -> None:
    return None


async def _faust_add_gap(consumer: Any, tp: Any, first: int, last: int) -> None:
    await type(consumer)._add_gap(consumer, tp, first, last)


def _highwater(consumer: Any, tp: Any) -> int | None:
    try:
        return cast(int | None, consumer.highwater(tp))
    except (AssertionError, KeyError):  # revoked meanwhile
        return None


def _broker_url(servers: str) -> list[str]:
    return [f"kafka://{s.strip()}" for s in servers.split(",") if s.strip()]


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    return faust.SSLCredentials(context)


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
        producer_max_batch_size=RECORD_BATCH_BYTES,
        # On stop, commit what is acked and go: waiting for every record in flight would wait
        # forever for the records buffered behind an agent that crashed (see `hold_back`);
        # records not acked are processed again after the restart (at-least-once).
        stream_wait_empty=False,
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

    claims_name = claims_topic.get_topic_name()
    decisions_name = decisions_topic.get_topic_name()
    output_names = {kind: t.get_topic_name() for kind, t in outputs.items()}
    # One per agent: each waits for its own batch's records only.
    install_outbox = Outbox(app, partitions)
    pool_outbox = Outbox(app, partitions)

    def send(outbox: Outbox, result: StageResult) -> None:
        metrics.observe_result(result)
        for message in result.messages:
            if isinstance(message, Claim):
                outbox.add(claims_name, message.pool.encode(), encode_claim(message))
            else:
                outbox.add(
                    decisions_name,
                    message.push_registration_id.encode(),
                    encode_decision(message),
                )
        send_outputs(outbox, result.outputs)

    def send_outputs(outbox: Outbox, records: Iterable[Output]) -> None:
        dumps = orjson.dumps
        for out in records:
            value = None if out.value is None else dumps(out.value)
            outbox.add(output_names[out.topic], out.key.encode(), value)

    input_channel = app.topic(
        topics.events, topics.decisions, partitions=partitions, key_type=bytes, value_type=bytes
    )

    async def start_offset(tp: Any) -> int:
        # Where delivery resumes after an assignment, asked of the broker: faust's own record
        # of the committed offset can still be empty when the first records arrive.
        return await group_start_offset(settings, tp.topic, tp.partition)

    async def between(tp: Any, start: int, end: int) -> bool:
        return await records_between(settings, tp.topic, tp.partition, start, end)

    async def hole(tp: Any, first: int, last: int) -> None:
        # Offsets without records (transaction markers): faust may commit over them.
        await _faust_add_gap(app.consumer, tp, first, last)

    install_continuity = Continuity(start_offset, between, hole)
    pool_continuity = Continuity(start_offset, between, hole)
    readers = (
        (install_continuity, frozenset({topics.events, topics.decisions})),
        (pool_continuity, frozenset({topics.claims})),
    )

    async def _delivery_restarts(sender: Any, *args: Any, **kwargs: Any) -> None:
        # faust takes a jump in offsets for a "gap" it may commit over; it is the delivery
        # check that tells records faust lost from offsets without records (`hole`).
        consumer: Any = app.consumer
        consumer._add_gap = _no_gap
        install_continuity.reset()
        pool_continuity.reset()

    assigned: Any = app.on_partitions_assigned
    assigned.connect(_delivery_restarts)

    async def reread(gap: Gap) -> None:
        logger.warning("%s; reading them again", gap)
        try:
            await app.consumer.seek_wait({gap.partition: gap.expected})
        except Exception:  # revoked meanwhile: the next assignment seeks again
            logger.warning("could not seek %s to %d", gap.partition, gap.expected, exc_info=True)

    async def delivered(continuity: Continuity, batch: list[Any]) -> list[Any]:
        """The events of this batch that may be processed: none past records faust lost."""
        verdict = await continuity.check((e.message.tp, e.message.offset) for e in batch)
        if all(verdict.keep):
            return batch
        hold_back(e for e, keep in zip(batch, verdict.keep, strict=True) if not keep)
        for gap in verdict.gaps:
            await reread(gap)
        return [e for e, keep in zip(batch, verdict.keep, strict=True) if keep]

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def _undelivered() -> None:
        # A seek can be undone by records in flight, and lost records at the end of a
        # partition are followed by nothing that would show the gap: look every second.
        tables: Any = app.tables
        if app.rebalancing or not tables.recovery.completed.is_set():
            for continuity, _ in readers:
                continuity.paused()
            return
        consumer = app.consumer
        assignment = consumer.assignment()
        for continuity, names in readers:
            mine = [tp for tp in assignment if tp.topic in names]
            for gap in await continuity.overdue(mine, lambda tp: _highwater(consumer, tp)):
                await reread(gap)

    def stopped(exc: BaseException) -> NoReturn:
        logger.critical("a stage failed; its batch stays uncommitted", exc_info=exc)
        halt(EXIT_STAGE_FAILED, repr(exc))

    async def install_batch(batch: list[Any]) -> None:
        for event in await delivered(install_continuity, batch):
            # Table writes follow Faust's current event.
            _current_event.set(weakref.ref(event))
            message = event.message
            raw: bytes = message.value or b""
            if message.topic == topics.decisions:
                decision: LinkDecision = decode_decision(raw)
                send(install_outbox, apply_decision(install_tables, decision, rules))
                continue
            meta = _meta(message)
            decoded = decode(raw, meta)
            metrics.observe_input(decoded)
            if isinstance(decoded, Rejection):
                rejected = dead_letter(
                    raw,
                    meta,
                    decoded.reason,
                    decoded.detail,
                    max_bytes=settings.dead_letter_max_bytes,
                )
                send(install_outbox, StageResult(outputs=(rejected,)))
                continue
            send(install_outbox, apply_event(install_tables, decoded, raw, meta, rules))
        # Before take_events acks the batch: its records and table writes are delivered.
        await install_store.write(install_outbox)

    async def pool_batch(batch: list[Any]) -> None:
        events = await delivered(pool_continuity, batch)
        claims = [(decode_claim(event.message.value), event) for event in events]
        # Claims of one batch in the order the pool's log sorts them (event time): the
        # state is the same in any order, but in this one the pool rolls nothing back.
        claims.sort(key=lambda c: (c[0].order, c[0].push_registration_id, c[0].seq))
        for claim, event in claims:
            _current_event.set(weakref.ref(event))
            send(pool_outbox, apply_claim(pool_tables, claim, rules))
        await pool_store.write(pool_outbox)

    # A stage that raises stops the worker at once (`halt`) instead of being restarted on the
    # records after its batch: a restarted worker must start from the failed batch (see
    # `hold_back`). Bad input never raises; it is dead-lettered. A batch cancelled by a
    # graceful stop is held back too, and processed again after the restart.
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
            except asyncio.CancelledError:
                hold_back(batch)
                raise
            except Exception as exc:  # noqa: BLE001 (any failure halts the worker)
                hold_back(batch)
                stopped(exc)

    @app.agent(
        claims_topic, name="pool-stage", concurrency=1, supervisor_strategy=CrashingSupervisor
    )
    async def pool_agent(stream: Any) -> None:
        async for batch in stream.take_events(POOL_BATCH_MAX, within=POOL_BATCH_WITHIN_S):
            try:
                await pool_batch(batch)
            except asyncio.CancelledError:
                hold_back(batch)
                raise
            except Exception as exc:  # noqa: BLE001 (any failure halts the worker)
                hold_back(batch)
                stopped(exc)

    return app


def worker_app() -> faust.App:
    """The app for `faust -A idstream.drivers.faust.app worker`, from IDSTREAM_* settings."""
    return create_app(load_settings())


def __getattr__(name: str) -> Any:
    # `faust -A idstream.drivers.faust.app` looks up `app`; build it only when asked.
    if name == "app":
        return worker_app()
    raise AttributeError(name)
