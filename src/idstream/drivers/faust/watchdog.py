"""Halt a worker whose brokers are gone for longer than `broker_outage_s`, or that has records
to read and reads none for that long (a consumer stuck after a broker restart).

Driver layer. The watchdog runs in a thread with an event loop of its own, apart from Faust's
loop, which is what it watches. A halt is `app.halt`: the process leaves at once, its
uncommitted batches are processed again by the next worker (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from idstream.drivers.faust.topics import admin_client, consumer, pipeline_topics
from idstream.settings import Settings

logger = logging.getLogger(__name__)

# Exit code of a worker that halts because Kafka was away too long (sysexits EX_UNAVAILABLE).
EXIT_BROKER_OUTAGE = 69
# How often the brokers are asked, at most (a short broker_outage_s asks more often).
PROBE_INTERVAL_S = 5.0


@dataclass
class Liveness:
    """When the worker last took a batch or was assigned partitions (monotonic seconds).

    Written on Faust's loop, read by the watchdog's thread: a float, replaced whole."""

    last_progress: float = field(default_factory=time.monotonic)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last_progress


@dataclass(frozen=True)
class Verdict:
    """What the watchdog concluded from one look: None, or why the worker must halt."""

    halt: str | None = None


def judge(
    *,
    now: float,
    last_answer: float,
    answered: bool,
    idle_for: float,
    lag: int | None,
    outage_s: float,
    servers: str,
) -> Verdict:
    """The rule, apart from the clock and the network (unit-tested)."""
    if not answered:
        away = now - last_answer
        if away > outage_s:
            return Verdict(
                f"Kafka at {servers} has not answered for {away:.0f} s "
                f"(broker_outage_s={outage_s:g}): check the brokers and the network, then "
                "start the worker again; it resumes from the committed offsets"
            )
        return Verdict()
    if lag and idle_for > outage_s:
        return Verdict(
            f"the worker has {lag} records to read in its partitions but has taken none for "
            f"{idle_for:.0f} s while Kafka answers (broker_outage_s={outage_s:g}): its consumer "
            "is stuck; start the worker again, it resumes from the committed offsets"
        )
    return Verdict()


class Watchdog:
    """Ask the brokers every few seconds; halt the worker when `judge` says so."""

    def __init__(
        self,
        settings: Settings,
        liveness: Liveness,
        assignment: Callable[[], Iterable[Any]],
        halt: Callable[[int, str], NoReturn],
    ) -> None:
        self.settings = settings
        self.liveness = liveness
        self.assignment = assignment
        self.halt = halt
        self.outage_s = float(settings.broker_outage_s)
        self.interval = max(0.5, min(PROBE_INTERVAL_S, self.outage_s / 4))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="idstream-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        last_answer = back_at = time.monotonic()
        was_away = False
        while not self._stop.is_set():
            answered = await self._answers()
            now = time.monotonic()
            if answered:
                if was_away:
                    logger.warning("Kafka answers again after %.0f s", now - last_answer)
                    # The consumer gets the whole broker_outage_s to resume from here.
                    back_at = now
                last_answer, was_away = now, False
            elif not was_away:
                was_away = True
                logger.warning(
                    "Kafka at %s does not answer; waiting up to broker_outage_s=%g s",
                    self.settings.bootstrap_servers,
                    self.outage_s,
                )
            idle_for = min(self.liveness.idle_for(), now - back_at)
            # The lag is asked only when the worker has been idle that long: rare.
            lag = await self._lag() if answered and idle_for > self.outage_s else None
            verdict = judge(
                now=now,
                last_answer=last_answer,
                answered=answered,
                idle_for=idle_for,
                lag=lag,
                outage_s=self.outage_s,
                servers=self.settings.bootstrap_servers,
            )
            if verdict.halt is not None:
                self.halt(EXIT_BROKER_OUTAGE, verdict.halt)
            await asyncio.sleep(self.interval)

    async def _answers(self) -> bool:
        # A request can go to a broker that is down while others answer: one broker away
        # is not an outage, so ask as many times as there are bootstrap servers.
        servers = [s for s in self.settings.bootstrap_servers.split(",") if s.strip()]
        for _ in range(max(1, len(servers))):
            if await self._asked():
                return True
        return False

    async def _asked(self) -> bool:
        admin = admin_client(self.settings)
        try:
            async with asyncio.timeout(max(2.0, self.interval)):
                await admin.start()
                await admin.describe_cluster()
            return True
        except Exception:  # noqa: BLE001 - any failure means "no answer" here
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    async def _lag(self) -> int | None:
        """Records of the worker's own partitions not yet committed (None: unknown)."""
        try:
            topics = set(pipeline_topics(self.settings))
            mine = [tp for tp in list(self.assignment()) if tp.topic in topics]
        except Exception:  # noqa: BLE001 - not started, or rebalancing: ask next time
            return None
        if not mine:
            return 0
        from aiokafka import TopicPartition

        tps = [TopicPartition(tp.topic, tp.partition) for tp in mine]
        admin = admin_client(self.settings)
        client = consumer(self.settings)
        try:
            async with asyncio.timeout(30):
                await admin.start()
                await client.start()
                committed = await admin.list_consumer_group_offsets(self.settings.app_id)
                ends = await client.end_offsets(tps)
        except Exception:  # noqa: BLE001 - unknown; the next look asks again
            return None
        finally:
            with contextlib.suppress(Exception):
                await client.stop()
            with contextlib.suppress(Exception):
                await admin.close()
        lag = 0
        for tp, end in ends.items():
            meta = committed.get(tp)
            lag += max(0, end - (meta.offset if meta is not None and meta.offset >= 0 else 0))
        return lag
