"""The steps both drivers run: an input record, a claim or heartbeat, a decision.

Drivers layer, no I/O. One place decodes an input record, dead-letters what the decoder
rejects, skips ticks, applies the install stage and advances the record's partition; one
place applies claims in the pool with each claim isolated, so that a claim whose processing
raises is dead-lettered (`processing_error`) and still answered. The drivers decide how
records are batched, delivered and isolated (drivers/local, drivers/faust).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from idstream.codecs import Limits, Rejection, decode
from idstream.domain import install as install_stage
from idstream.domain import pool as pool_stage
from idstream.domain.config import RuleConfig
from idstream.domain.erasure import NOTHING_ERASED, Erased
from idstream.domain.events import RecordMeta
from idstream.domain.install_state import InstallTables
from idstream.domain.keys import key
from idstream.domain.messages import (
    DEAD_LETTER_MAX_BYTES,
    NOTE_TICK,
    Claim,
    Heartbeat,
    LinkDecision,
    Output,
    StageResult,
    dead_letter,
)
from idstream.domain.overlay import Overlaid, overlaid
from idstream.domain.pool_state import Cursor, PoolTables
from idstream.domain.reasons import RejectReason

logger = logging.getLogger(__name__)

# A tick record (SPEC §5): an empty value with this header, appended by idstream to an input
# partition that is silent while a pool waits for it. It advances the partition's effective
# time; the stages skip it. Other consumers of the input topic should skip it too.
TICK_HEADER = "idstream-tick"


def is_tick(value: bytes, meta: RecordMeta) -> bool:
    return not value and any(name == TICK_HEADER for name, _ in meta.headers)


def fingerprint(exc: BaseException) -> str:
    """Where a record's processing failed: the exception type and the innermost idstream code
    location. The same in every replay, and never the exception's message (it may quote
    personal data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/idstream/" in f.filename.replace("\\", "/")]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    if where is None:
        return type(exc).__name__
    module = where.filename.replace("\\", "/").rpartition("/idstream/")[2]
    return f"{type(exc).__name__} at idstream/{module}:{where.lineno} ({where.name})"


def processing_error(
    value: bytes, meta: RecordMeta | None, exc: BaseException, max_bytes: int
) -> Output:
    """The dead letter of a record whose processing raised (docs/operations.md)."""
    logger.error("a record could not be processed: %s", fingerprint(exc))
    reason = RejectReason.PROCESSING_ERROR
    return dead_letter(value, meta, reason, fingerprint(exc), max_bytes=max_bytes)


def check_outputs(result: StageResult) -> None:
    """Raise if an output value cannot be written as JSON (a defect): inside the per-record
    boundary, so such a record is dead-lettered instead of stopping its batch."""
    for output in result.outputs:
        if output.value is not None:
            orjson.dumps(output.value)


@dataclass(frozen=True, slots=True)
class Applied:
    """What an input record did: the stage's result, its partition's effective time, and
    what the record was (the event type, "invalid" when the decoder rejected it, "tick")."""

    result: StageResult
    time: int
    kind: str


@dataclass(slots=True)
class Steps:
    """The stages of one driver, over its tables and settings."""

    rules: RuleConfig
    limits: Limits
    sources: int  # partitions of the input topic: the pool waits for each of them
    install: InstallTables
    pool: PoolTables
    check: Callable[[StageResult], None] = field(default=check_outputs)
    # Original bytes a dead letter carries whole (settings.dead_letter_max_bytes).
    dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES
    # The forget register as it was when this run started (domain/erasure.py): a replay
    # publishes nothing of a person forgotten later in the log.
    erased: Erased = field(default_factory=lambda: NOTHING_ERASED)
    _install_overlay: Overlaid[InstallTables] | None = field(default=None, init=False)
    _pool_overlay: tuple[PoolTables, Overlaid[PoolTables]] | None = field(default=None, init=False)

    def input(
        self, value: bytes, meta: RecordMeta, install: InstallTables | None = None
    ) -> Applied | None:
        """One input record: None for a redelivery (a record at or before its partition's last
        applied offset), else what it did. Raises when the record's processing raises; the
        driver then runs it again with `input_isolated`."""
        tables = self.install if install is None else install
        time = install_stage.effective_time(tables, meta)
        if time is None:
            return None
        if is_tick(value, meta):
            kind = "tick"
            result = install_stage.skip(NOTE_TICK, meta)
        else:
            decoded = decode(value, meta, self.limits)
            if isinstance(decoded, Rejection):
                kind = "invalid"
                rejected = dead_letter(
                    value,
                    meta,
                    decoded.reason,
                    decoded.detail,
                    max_bytes=self.dead_letter_max_bytes,
                )
                result = StageResult(outputs=(rejected,))
            else:
                kind = decoded.type.value
                result = install_stage.apply_event(
                    tables, decoded, value, meta, time, self.rules, self.erased
                )
        install_stage.record_position(tables, meta, time)
        return Applied(result, time, kind)

    def input_isolated(self, value: bytes, meta: RecordMeta) -> Applied | None:
        """One input record whose writes are kept only if it succeeds; a record that raises
        goes to the dead letter (`processing_error`) and its partition moves past it."""
        buffered = self._install_buffers()
        try:
            applied = self.input(value, meta, buffered.tables)
            if applied is not None:
                self.check(applied.result)
        except Exception as exc:  # noqa: BLE001 - the per-record boundary: any defect
            buffered.drop()
            time = install_stage.effective_time(self.install, meta)
            if time is None:
                return None
            install_stage.record_position(self.install, meta, time)
            error = processing_error(value, meta, exc, self.dead_letter_max_bytes)
            failed = StageResult(outputs=(error,))
            return Applied(failed, time, "invalid")
        buffered.commit()
        return applied

    def pool_message(self, message: Claim | Heartbeat) -> StageResult:
        """A claim or heartbeat: the claims it makes ready, applied in log order."""
        return pool_stage.receive(self.pool, message, self.rules, self.sources, self._apply)

    def decision(self, decision: LinkDecision) -> StageResult:
        return install_stage.apply_decision(self.install, decision, self.rules, self.erased)

    def heartbeats(
        self, partition: int, offset: int, time: int, result: StageResult
    ) -> list[Heartbeat]:
        """Heartbeats after an input record, for every pool it sent no claim to."""
        claimed = frozenset(m.pool for m in result.messages if isinstance(m, Claim))
        return install_stage.heartbeats(self.rules.all_pools, partition, offset, time, claimed)

    def cursor(self, pool: str) -> Cursor | None:
        """Where a pool is (read only), e.g. to see which partitions it waits for."""
        return self.pool.cursor.get(key(pool))

    def _install_buffers(self) -> Overlaid[InstallTables]:
        # Made once: a write buffer per table, emptied by every commit or drop.
        if self._install_overlay is None:
            self._install_overlay = overlaid(self.install)
        return self._install_overlay

    def _apply(
        self, tables: PoolTables, claim: Claim, rules: RuleConfig, cursor: Cursor
    ) -> tuple[StageResult, Cursor]:
        """One claim in its own write buffer: kept when it succeeds; dropped when it raises,
        and then the claim is dead-lettered and answered as rejected."""
        if self._pool_overlay is None or self._pool_overlay[0] is not tables:
            self._pool_overlay = (tables, overlaid(tables))
        buffered = self._pool_overlay[1]
        try:
            result, cursor_after = pool_stage.apply_claim(
                buffered.tables, claim, rules, cursor, self.erased
            )
            self.check(result)
        except Exception as exc:  # noqa: BLE001 - the per-claim boundary: any defect
            buffered.drop()
            return _failed_claim(tables, claim, cursor, exc, self.dead_letter_max_bytes)
        buffered.commit()
        return result, cursor_after


def _failed_claim(
    tables: PoolTables, claim: Claim, cursor: Cursor, exc: BaseException, max_bytes: int
) -> tuple[StageResult, Cursor]:
    outputs = (processing_error(claim.raw, claim.meta, exc, max_bytes),)
    if not claim.answered:
        return StageResult(outputs=outputs), cursor
    # The install holds its outputs until this answer: release them where the install is.
    known: Any = tables.installs.get(key(claim.pool, claim.push_registration_id))
    segment = known.segment if known is not None else ""
    profile = known.profile_id if known is not None else ""
    seq = cursor.decisions + 1
    answer = LinkDecision(
        claim.push_registration_id,
        segment,
        profile,
        seq,
        answers=claim.seq,
        rejected=RejectReason.PROCESSING_ERROR,
        lifecycle=known.lifecycle if known is not None else "",
    )
    return StageResult(messages=(answer,), outputs=outputs), replace(cursor, decisions=seq)
