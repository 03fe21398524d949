"""The worker's watchdog rule: an outage up to broker_outage_s is waited out, a longer one
halts; so does a worker that reads nothing of its backlog that long while Kafka answers."""

from __future__ import annotations

from idstream.drivers.faust.watchdog import judge

SERVERS = "k1:9092,k2:9092"


def verdict(**changes: object) -> str | None:
    facts: dict[str, object] = {
        "now": 1000.0,
        "last_answer": 1000.0,
        "answered": True,
        "idle_for": 0.0,
        "lag": None,
        "outage_s": 300.0,
        "servers": SERVERS,
    }
    facts.update(changes)
    return judge(**facts).halt  # type: ignore[arg-type]


def test_an_outage_up_to_broker_outage_s_is_waited_out() -> None:
    assert verdict(answered=False, last_answer=1000.0 - 300) is None


def test_a_longer_outage_halts_with_the_brokers_and_the_limit_named() -> None:
    reason = verdict(answered=False, last_answer=1000.0 - 301)
    assert reason is not None
    assert "Kafka at k1:9092,k2:9092 has not answered for 301 s" in reason
    assert "broker_outage_s=300" in reason


def test_an_idle_worker_with_nothing_to_read_goes_on() -> None:
    assert verdict(idle_for=10_000.0, lag=0) is None
    assert verdict(idle_for=10_000.0, lag=None) is None  # lag unknown: ask again


def test_a_worker_that_reads_none_of_its_backlog_while_kafka_answers_halts() -> None:
    assert verdict(idle_for=299.0, lag=5) is None
    reason = verdict(idle_for=301.0, lag=5)
    assert reason is not None and "5 records to read" in reason and "stuck" in reason
