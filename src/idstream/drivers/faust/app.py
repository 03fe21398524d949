"""The Kafka topology: the resolver stages as Faust agents over RocksDB-backed tables.

Driver layer; the only place that imports faust besides drivers/faust/tables.py.

    idstream.events (key pushRegistrationId) ─┐
    idstream.internal.decisions (key prid) ───┴─> install agent ─> idstream.internal.claims
                                                      │              (key pool)
                                                      └─> resolved-events, dead-letter
    idstream.internal.claims ─> pool agent ─> decisions, profile-changes, profiles, dead-letter

Each agent takes a batch of records at a time and hands it to the worker (worker.py), which
sets Faust's current event to each record in turn, so every table write lands in that
record's partition. A batch's records are delivered before `take_events` acks it: an offset is
never committed before its outputs are delivered (at-least-once). Here: the app, its topics
and tables, the agents, the delivery check (continuity.py) and the tick timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any, NoReturn, cast

import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import CrashingSupervisor

from idstream.domain.erasure import NOTHING_ERASED, Erased
from idstream.domain.install import open_install_tables
from idstream.domain.pool import open_pool_tables
from idstream.drivers.faust.continuity import Continuity, Gap
from idstream.drivers.faust.metrics import Metrics
from idstream.drivers.faust.outbox import RECORD_BATCH_BYTES, Outbox
from idstream.drivers.faust.tables import FaustTableFactory, close_on_stop
from idstream.drivers.faust.topics import (
    broker_away,
    group_start_offset,
    patiently,
    records_between,
    ssl_context,
)
from idstream.drivers.faust.watchdog import Liveness
from idstream.drivers.faust.web import install_api, web_options
from idstream.drivers.faust.worker import StageWorker, tick_headers
from idstream.drivers.steps import Steps
from idstream.settings import Settings, load_settings
from idstream.storage.partitions import INSTALL_TABLE, POOL_TABLE
from idstream.storage.rocksdb_options import RocksDBOptions

logger = logging.getLogger(__name__)

BATCH_MAX = 500
BATCH_WITHIN_S = 0.02
# Claims wait for the watermark anyway: a short wait keeps the answer's latency low.
POOL_BATCH_MAX = 2000
POOL_BATCH_WITHIN_S = 0.02
# A partition assigned this long that delivered nothing is taken to have nothing to read.
TICK_AFTER_ASSIGNMENT_S = 2.0


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


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's producer, idempotent with acks=all in every processing guarantee.

    Faust enables idempotence only in its exactly-once mode; at-least-once, a batch retried
    after a broker failover could be written twice (and the Outbox's batches out of order).
    """

    def _settings_extra(self) -> Any:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class IdempotentTransport(faust_aiokafka.Transport):
    Producer = IdempotentProducer


class IdstreamApp(faust.App):
    """faust.App whose producers are idempotent (`IdempotentProducer`)."""

    def _new_transport(self) -> Any:
        return IdempotentTransport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return IdempotentTransport(self.conf.broker_producer, self)


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


def create_app(
    settings: Settings, erased: Erased = NOTHING_ERASED, liveness: Liveness | None = None
) -> faust.App:
    """Build the Faust app for `settings`: topics, tables and the two stage agents.

    `erased` is the forget register as `read_forget_register` found it before the worker
    started (a rebuild publishes nothing of a person forgotten later in the log). `liveness`
    is told of every batch and assignment (the watchdog reads it)."""
    liveness = liveness or Liveness()
    topics = settings.topics
    partitions = settings.partitions
    app = IdstreamApp(
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
    for name in (topics.decisions, topics.resolved_events, topics.profile_changes):
        topic(name)
    topic(topics.profiles, compacting=True)
    topic(topics.forget_register, compacting=True)
    topic(topics.dead_letter)
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
    steps = Steps(
        settings.rules(),
        settings.limits(),
        partitions,
        open_install_tables(install_store),
        open_pool_tables(pool_store),
        dead_letter_max_bytes=settings.dead_letter_max_bytes,
        erased=erased,
    )

    metrics = Metrics.for_settings(settings)
    install_api(app, settings, metrics, install_state, pool_state)
    # One outbox per agent: each waits for its own batch's records only.
    worker = StageWorker(
        settings,
        steps,
        install_store,
        pool_store,
        Outbox(app, partitions),
        Outbox(app, partitions),
        metrics,
    )

    input_channel = app.topic(
        topics.events, topics.decisions, partitions=partitions, key_type=bytes, value_type=bytes
    )

    async def start_offset(tp: Any) -> int:
        # Where delivery resumes after an assignment, asked of the broker: faust's own record
        # of the committed offset can still be empty when the first records arrive.
        # Asked again while the brokers are away: an outage is waited out, not a crash.
        return await patiently(
            f"committed offset of {tp}",
            lambda: group_start_offset(settings, tp.topic, tp.partition),
        )

    async def between(tp: Any, start: int, end: int) -> bool:
        return await patiently(
            f"records of {tp} in {start}..{end - 1}",
            lambda: records_between(settings, tp.topic, tp.partition, start, end),
        )

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
        liveness.progressed()
        consumer: Any = app.consumer
        consumer._add_gap = _no_gap
        install_continuity.reset()
        pool_continuity.reset()
        metrics.forget_pending()
        worker.assigned()

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
        paused = worker.paused()
        # A paused partition delivers nothing on purpose: it has not stalled.
        assignment = [
            tp
            for tp in consumer.assignment()
            if tp.topic != topics.events or tp.partition not in paused
        ]
        for continuity, names in readers:
            mine = [tp for tp in assignment if tp.topic in names]
            for gap in await continuity.overdue(mine, lambda tp: _highwater(consumer, tp)):
                await reread(gap)

    def stopped(exc: BaseException) -> NoReturn:
        logger.critical("a stage failed; its batch stays uncommitted", exc_info=exc)
        halt(EXIT_STAGE_FAILED, repr(exc))

    async def install_batch(batch: list[Any]) -> None:
        await worker.install_batch(await delivered(install_continuity, batch))

    async def pool_batch(batch: list[Any]) -> None:
        await worker.pool_batch(await delivered(pool_continuity, batch))

    @app.timer(max(settings.tick_ms, 10) / 2000)  # type: ignore[untyped-decorator]
    async def _ticks() -> None:
        # Input partitions a pool waits for, silent for tick_ms: append a tick to each.
        if app.rebalancing:
            return
        consumer = app.consumer
        owned = {tp.partition: tp for tp in consumer.assignment() if tp.topic == topics.events}

        def caught_up(partition: int, last: int | None) -> bool:
            # Nothing of the partition left to read (a tick behind a backlog helps nobody). A
            # partition that delivered nothing since its assignment has nothing to read once
            # a fetch would have brought it.
            end = _highwater(consumer, owned[partition])
            if end is None:
                return False
            if last is None:
                return end == 0 or worker.assigned_for() > TICK_AFTER_ASSIGNMENT_S
            return last + 1 >= end

        await align(consumer, owned)
        producer: Any = app.producer
        for partition in worker.ticks_due(owned, caught_up):
            try:
                await producer._ensure_producer().send_and_wait(
                    topics.events, value=b"", partition=partition, headers=tick_headers()
                )
            except Exception as exc:
                # An exception would crash the app; the pool asks for the tick again.
                if not broker_away(exc):
                    raise
                logger.warning("tick to partition %d not sent: %r", partition, exc)

    async def align(consumer: Any, owned: dict[int, Any]) -> None:
        # Pause the owned input partitions more than align_ms ahead of the watermark, resume
        # the others. In aiokafka, not Faust: Faust's pause_partitions drops the records of a
        # fetch it is handing out (lost records, continuity.py), and its own recovery resumes
        # what it paused; aiokafka keeps a paused partition's position and fetches it again
        # on resume. Its subscription state lives on the consumer's thread: change it there.
        pause, resume = worker.alignment(owned)
        if not pause and not resume:
            return

        async def apply() -> None:
            kafka = consumer._thread._ensure_consumer()
            kafka.pause(*(TopicPartition(topics.events, p) for p in pause))
            kafka.resume(*(TopicPartition(topics.events, p) for p in resume))

        try:
            await consumer._thread.call_thread(apply)
        except Exception:
            logger.warning("could not pause %s / resume %s", pause, resume, exc_info=True)
            return
        install_continuity.rested(owned[p] for p in resume)
        logger.info("paused input partitions %s (ahead), resumed %s", pause, resume)

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
            liveness.progressed()
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
            liveness.progressed()
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
