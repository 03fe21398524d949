"""Error classes of idstream. Each says whether retrying can help."""

from __future__ import annotations


class IdstreamError(Exception):
    """Root of idstream's errors."""

    retriable: bool = False


class ConfigurationError(IdstreamError):
    """A setting is missing or invalid. Fix the setting named in the message and restart."""


class StateFormatError(IdstreamError):
    """On-disk state was written by an incompatible version. Rebuild state (`idstream rebuild`)."""


class OffsetTakenError(IdstreamError, ValueError):
    """An input record's offset was given to a tick record of an earlier replay's own (it would
    be taken for a record applied already). Replay the history from the start, or end every
    part but the last with `--no-drain`."""


class BrokerUnavailableError(IdstreamError):
    """No Kafka broker answered. Start one or set IDSTREAM_BOOTSTRAP_SERVERS; retrying may help."""

    retriable = True
