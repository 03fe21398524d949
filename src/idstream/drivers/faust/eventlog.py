"""One log line per event of note (worker start, dead letters, merges, rejected identities,
forgets).

Driver layer. Lines name reasons, profile ids and record positions; identity values appear
only masked (the change events already carry them masked), never raw.
"""

from __future__ import annotations

import logging
from typing import Any

from idstream.domain.messages import OutputTopic, StageResult
from idstream.settings import Settings

logger = logging.getLogger(__name__)


def log_start(app: Any, settings: Settings) -> None:
    """Log the settings (secrets as '***') once the worker runs and its logging is set up."""

    async def worker_started() -> None:
        logger.info(
            "worker started http=%s:%s settings=%s",
            settings.http_host,
            settings.http_port,
            settings.redacted(),
        )

    app.task(worker_started)


def log_result(result: StageResult) -> None:
    """Log the dead letters and the notable profile changes of one stage result."""
    for out in result.outputs:
        value = out.value
        if value is None:
            continue
        if out.topic is OutputTopic.DEAD_LETTER:
            _dead_letter(value)
        elif out.topic is OutputTopic.PROFILE_CHANGES:
            _change(value)


def _dead_letter(value: Any) -> None:
    # The detail may quote the rejected input, so only the reason and position are logged.
    source = value.get("source") or {}
    logger.warning(
        "dead letter reason=%s topic=%s partition=%s offset=%s",
        value.get("reason"),
        source.get("topic"),
        source.get("partition"),
        source.get("offset"),
    )


def _change(value: Any) -> None:
    kind = value.get("kind")
    if kind == "merged" and value.get("profileId") == value.get("loser"):
        logger.info(
            "merged loser=%s survivor=%s eventId=%s",
            value.get("loser"),
            value.get("survivor"),
            value.get("eventId"),
        )
    elif kind == "identity_rejected":
        logger.info(
            "identity rejected reason=%s profile=%s kind=%s value=%s eventId=%s",
            value.get("reason"),
            value.get("profileId"),
            value.get("identityKind"),
            value.get("maskedValue"),  # masked by the pool stage
            value.get("eventId"),
        )
    elif kind == "forgotten":
        logger.info("forgotten profile=%s eventId=%s", value.get("profileId"), value.get("eventId"))
