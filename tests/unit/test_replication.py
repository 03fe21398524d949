"""Production-shaped defaults: topics replicated from the brokers seen, producers idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from idstream.drivers.faust.topics import replicated
from idstream.errors import ConfigurationError
from idstream.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("brokers", "factor", "insync"),
    [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2), (0, 1, 1)],
)
def test_by_default_replication_follows_the_brokers_seen(
    brokers: int, factor: int, insync: int
) -> None:
    # min(3, brokers) copies; one may be lost without stopping acks=all writes.
    assert Settings().replication(brokers) == (factor, insync)


def test_replication_settings_override_the_brokers_seen() -> None:
    settings = load_settings(
        environ={"IDSTREAM_REPLICATION_FACTOR": "2", "IDSTREAM_MIN_INSYNC_REPLICAS": "2"}
    )
    assert settings.replication(5) == (2, 2)
    # Only the factor given: min.insync still one less.
    assert Settings(replication_factor=3).replication(1) == (3, 2)
    assert Settings(min_insync_replicas=1).replication(3) == (3, 1)


def test_a_new_topic_carries_its_min_insync_replicas() -> None:
    factor, config = replicated(Settings(), {"cleanup.policy": "compact"}, brokers=3)
    assert factor == 3
    assert config == {"cleanup.policy": "compact", "min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IDSTREAM_REPLICATION_FACTOR": "-1"}, "must be >= 0"),
        (
            {"IDSTREAM_REPLICATION_FACTOR": "2", "IDSTREAM_MIN_INSYNC_REPLICAS": "3"},
            "min_insync_replicas must be <= replication_factor",
        ),
        ({"IDSTREAM_BROKER_OUTAGE_S": "0"}, "broker_outage_s must be >= 1"),
    ],
)
def test_impossible_replication_or_outage_settings_are_refused(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(environ=env)


def test_broker_outage_defaults_to_five_minutes() -> None:
    assert Settings().broker_outage_s == 300
    assert load_settings(environ={"IDSTREAM_BROKER_OUTAGE_S": "12"}).broker_outage_s == 12


async def test_the_workers_faust_producer_is_idempotent_with_acks_all(tmp_path: Path) -> None:
    # The Outbox and the ticks send through this producer (app.producer).
    from idstream.drivers.faust.app import create_app

    settings = Settings(data_dir=str(tmp_path), dev_mode=True)
    app: Any = create_app(settings)
    producer = app.producer._new_producer()
    try:
        assert producer._txn_manager is not None, "idempotence is off"
        assert producer._txn_manager.transactional_id is None
        assert producer._sender._acks == -1
    finally:
        await producer.stop()
