"""Worker metrics in the Prometheus text format, counted from what the stages return.

Driver layer. The stages do not count; they return what happened (outputs, dead-letter
reasons, merged and identity_rejected changes, `StageResult.notes`) and this module counts
it. Latency uses the worker's wall clock against the Kafka record timestamp, which is fine
here and never in the domain. Events of note are logged by drivers/faust/eventlog.py.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter as _Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from faust.streams import current_event

from idstream.domain.messages import SKIP_REASONS, OutputTopic, StageResult
from idstream.drivers.faust import eventlog
from idstream.settings import Settings

CONTENT_TYPE = "text/plain; version=0.0.4"

# Seconds from a record's timestamp to its outputs being handed to the producer.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Family:
    """One metric family: name, type, help and its samples by label set."""

    name: str
    kind: str  # counter | gauge
    help: str
    samples: dict[Labels, float] = field(default_factory=dict)

    def inc(self, labels: Labels = (), by: float = 1) -> None:
        self.samples[labels] = self.samples.get(labels, 0) + by

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels in sorted(self.samples):
            lines.append(f"{self.name}{_labels(labels)} {_number(self.samples[labels])}")
        return lines


@dataclass
class Histogram:
    """A Prometheus histogram with fixed buckets, one series per label set."""

    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=dict)

    def observe(self, value: float, labels: Labels = ()) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels in sorted(self.counts):
            cumulative = 0
            bounds = (*self.buckets, float("inf"))
            for bound, count in zip(bounds, self.counts[labels], strict=True):
                cumulative += count
                le = (*labels, ("le", _number(bound)))
                lines.append(f"{self.name}_bucket{_labels(le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(labels)} {_number(self.sums[labels])}")
            lines.append(f"{self.name}_count{_labels(labels)} {cumulative}")
        return lines


class Metrics:
    """The counters of one worker; `render()` gives the /metrics body."""

    def __init__(
        self,
        topic_names: Mapping[OutputTopic, str],
        claims_topic: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topic_names = dict(topic_names)
        self._claims_topic = claims_topic
        self._clock = clock
        self.events_in = Family(
            "idstream_events_in_total",
            "counter",
            "Input records applied, by event type (invalid: rejected by the decoder; tick)",
        )
        self.outputs = Family("idstream_outputs_total", "counter", "Output records by topic")
        self.skipped = Family(
            "idstream_skipped_total",
            "counter",
            "Input records skipped by a rule (SPEC §5), by reason: duplicate_event, "
            "launch_dropped, tick, forgotten_person",
        )
        self.dead_letters = Family(
            "idstream_dead_letters_total", "counter", "Dead-letter records by reason"
        )
        self.merges = Family("idstream_merges_total", "counter", "Profiles merged into another")
        self.rejections = Family(
            "idstream_identity_rejections_total",
            "counter",
            "Identities not attached (identity_rejected changes) by reason",
        )
        self.forgets = Family("idstream_forgotten_total", "counter", "Profiles forgotten")
        self.latency = Histogram(
            "idstream_processing_latency_seconds",
            "Kafka record timestamp to outputs sent, by stage (worker wall clock)",
        )
        self.pauses = Family(
            "idstream_source_pauses_total",
            "counter",
            "Times an input partition was paused for being more than align_ms ahead of the "
            "watermark",
        )
        self._lag: dict[Labels, float] = {}
        self._pending: dict[str, int] = {}
        self._leads: dict[int, int] = {}
        self._paused: frozenset[int] = frozenset()

    @classmethod
    def for_settings(cls, settings: Settings) -> Metrics:
        t = settings.topics
        names = {
            OutputTopic.RESOLVED_EVENTS: t.resolved_events,
            OutputTopic.PROFILE_CHANGES: t.profile_changes,
            OutputTopic.PROFILES: t.profiles,
            OutputTopic.DEAD_LETTER: t.dead_letter,
            OutputTopic.FORGET_REGISTER: t.forget_register,
        }
        return cls(names, t.claims)

    # --- observing -----------------------------------------------------------------------

    def observe_input(self, kind: str) -> None:
        """An input record applied (redeliveries are not counted), by what it was: its event
        type, `invalid` (dead-lettered before any stage) or `tick`."""
        self.events_in.inc((("type", kind),))

    def observe_result(self, result: StageResult) -> None:
        """Count what a stage decided for Faust's current event, and log what is of note."""
        for reason, count in _Counter(result.notes).items():
            if reason in SKIP_REASONS:
                self.skipped.inc((("reason", reason),), by=count)
        for out in result.outputs:
            self.outputs.inc((("topic", self._topic_names.get(out.topic, out.topic.value)),))
            value = out.value
            if value is None:
                continue
            if out.topic is OutputTopic.DEAD_LETTER:
                self.dead_letters.inc((("reason", str(value.get("reason"))),))
            elif out.topic is OutputTopic.PROFILE_CHANGES:
                change = value.get("kind")
                # A merge is reported on both profiles; count it once, on the loser's.
                if change == "merged" and value.get("profileId") == value.get("loser"):
                    self.merges.inc()
                elif change == "identity_rejected":
                    self.rejections.inc((("reason", str(value.get("reason"))),))
                elif change == "forgotten":
                    self.forgets.inc()
        eventlog.log_result(result)
        if result.outputs:
            self._observe_latency()

    def _observe_latency(self) -> None:
        event = current_event()
        if event is None:
            return
        message = event.message
        stage = "pool" if message.topic == self._claims_topic else "install"
        seconds = max(0.0, self._clock() - float(message.timestamp))
        self.latency.observe(seconds, (("stage", stage),))

    def set_pending(self, pool: str, claims: int) -> None:
        """Claims of a pool this worker holds that wait for other input partitions."""
        self._pending[pool] = claims

    def forget_pending(self) -> None:
        """This worker's pools may have moved (a rebalance): none is known until it says."""
        self._pending.clear()
        self._leads.clear()
        self._paused = frozenset()

    def set_sources(
        self, leads: Mapping[int, int], paused: Iterable[int], newly_paused: Iterable[int]
    ) -> None:
        """Each owned input partition's lead over the watermark (ms) and which are paused."""
        self._leads = dict(leads)
        self._paused = frozenset(paused)
        for partition in newly_paused:
            self.pauses.inc((("partition", str(partition)),))

    def set_lag(self, lags: Iterable[tuple[str, int, int]]) -> None:
        """Consumer lag per (topic, partition) as last measured; replaces the previous values."""
        self._lag = {(("partition", str(p)), ("topic", t)): float(n) for t, p, n in lags}

    # --- exposition ----------------------------------------------------------------------

    def render(self) -> str:
        lag = Family("idstream_consumer_lag", "gauge", "Records not yet read: highwater - position")
        lag.samples = dict(self._lag)
        pending = Family(
            "idstream_pending_claims",
            "gauge",
            "Claims waiting for the other input partitions, per pool this worker holds",
        )
        pending.samples = {(("pool", pool),): float(n) for pool, n in self._pending.items()}
        lead = Family(
            "idstream_source_lead_seconds",
            "gauge",
            "Input partition's effective time minus the lowest watermark of the pools holding "
            "claims back (0 when none holds any), per partition this worker reads",
        )
        lead.samples = {(("partition", str(p)),): ms / 1000 for p, ms in self._leads.items()}
        paused = Family(
            "idstream_source_paused",
            "gauge",
            "1 while an input partition is paused for being more than align_ms ahead",
        )
        paused.samples = {
            (("partition", str(p)),): float(p in self._paused)
            for p in sorted(self._leads.keys() | self._paused)
        }
        families = (
            self.events_in,
            self.outputs,
            self.skipped,
            self.dead_letters,
            self.merges,
            self.rejections,
            self.forgets,
            lag,
            pending,
            lead,
            paused,
            self.pauses,
        )
        lines: list[str] = []
        for family in families:
            lines.extend(family.render())
        lines.extend(self.latency.render())
        return "\n".join(lines) + "\n"


async def consumer_lag(app: Any, topics: Iterable[str]) -> list[tuple[str, int, int]]:
    """(topic, partition, highwater - position) for this worker's assigned partitions."""
    wanted = set(topics)
    consumer = app.consumer
    out: list[tuple[str, int, int]] = []
    for tp in sorted(consumer.assignment()):
        if tp.topic not in wanted:
            continue
        highwater = consumer.highwater(tp)
        position = await consumer.position(tp)
        if highwater is None or position is None:
            continue
        out.append((tp.topic, tp.partition, max(0, int(highwater) - int(position))))
    return out
