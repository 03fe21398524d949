"""Re-folding the pool's log around a claim: roll later claims back, apply, apply them again.

Domain layer, standard library only. A late claim (one that sorts before the log's tail)
re-applies only the later claims that depend on it, found through footprints (footprint.py),
in a write overlay; a check that no claim left alone touched what the re-applied ones touch
now decides whether the overlay is kept, tried again with a wider guess, or dropped for a
re-fold of every later claim. See docs/architecture.md, "The pool stage".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from idstream.domain.config import RuleConfig
from idstream.domain.events import PoolId
from idstream.domain.footprint import TOKENS, conflicts, dependents, seed_tokens
from idstream.domain.journal import Journal, JournaledTable
from idstream.domain.overlay import commit, overlay
from idstream.domain.pool_profiles import PoolState, Verdict
from idstream.domain.pool_rules import apply_rules
from idstream.domain.pool_state import (
    SEP,
    Alias,
    AliasUndo,
    ClaimRef,
    ForgetEntry,
    ForgetUndo,
    IdentityOwner,
    IdentityUndo,
    InstallRecord,
    InstallUndo,
    LogTail,
    PoolTables,
    ProfileRecord,
    ProfileUndo,
    SegmentLink,
    SegmentUndo,
    StoredClaim,
    index_key,
)

NOTE_LATE_CLAIM = "late_claim"  # a claim that sorts before the pool's newest one
NOTE_REAPPLIED = "claim_reapplied"  # one later claim rolled back and applied again
NOTE_REFOLD_RETRY = "refold_retry"  # a re-fold whose check failed, done again with more
NOTE_FULL_REFOLD = "full_refold"  # a late claim that re-applied every later claim

# Guesses of what a late claim touches before it re-applies every later claim of its pool.
_ATTEMPTS = 3


@dataclass(slots=True)
class Refold:
    """What applying a claim (and re-applying later ones) did, not yet emitted."""

    state: PoolState
    verdict: Verdict
    footprints: dict[str, tuple[str, ...]]  # log key -> its new footprint, the claim's first


@dataclass(slots=True)
class LateFold:
    """A late claim's re-fold, done on `tables` (an overlay when `overlaid`)."""

    tables: PoolTables
    done: Refold
    notes: tuple[str, ...]
    overlaid: bool = False

    def keep(self) -> None:
        """Write an overlay through to the tables below, once the outputs are in it too."""
        if self.overlaid:
            commit(self.tables)


def tracked_after(tail: LogTail) -> str:
    """Every claim with a larger log key has a footprint (older state: its tail's key)."""
    return tail.log_key if tail.tracked_after is None else tail.tracked_after


def fold_late(
    tables: PoolTables,
    pool: PoolId,
    stored: StoredClaim,
    key: str,
    tail: LogTail,
    rules: RuleConfig,
) -> LateFold:
    """Apply a claim that sorts before the log's tail, re-applying what depends on it."""
    notes = [NOTE_LATE_CLAIM]
    if key >= tracked_after(tail):
        seeds = seed_tokens(tables, pool, stored, rules)
        for _ in range(_ATTEMPTS):
            view = overlay(tables)
            found = dependents(view, pool, key, seeds)
            if found is None:
                break
            attempt = refold(view, pool, stored, key, found.later, rules)
            wrong = conflicts(view, pool, attempt.footprints, found.covered)
            if not wrong:
                return LateFold(view, attempt, tuple(notes), overlaid=True)
            # Guess again with what this attempt touched; the overlay is dropped.
            notes.append(NOTE_REFOLD_RETRY)
            seeds |= wrong.union(*attempt.footprints.values())
    notes.append(NOTE_FULL_REFOLD)
    if key < tracked_after(tail):
        # Every claim after this one gets a footprint now.
        tables.log_tail.put(pool, LogTail(tail.log_key, key))
    done = refold(tables, pool, stored, key, _claims_after(tables, pool, key), rules)
    return LateFold(tables, done, tuple(notes))


def refold(
    tables: PoolTables,
    pool: PoolId,
    stored: StoredClaim,
    key: str,
    later: list[str],
    rules: RuleConfig,
) -> Refold:
    """Roll `later` back (newest first), apply the claim, apply `later` again (oldest first)."""
    journal = Journal()
    state = journaled(tables, pool, journal)
    undoable = _journaled_tables(state)
    for claim_key in reversed(later):
        for table in undoable:
            table.rollback(claim_key)
    tables.claims.put(key, stored)
    tables.claim_index.put(index_key(pool, stored.push_registration_id, stored.seq), ClaimRef(key))
    journal.begin(key)
    verdict = apply_rules(state, stored, rules)
    footprints = {key: journal.end()}
    # Their rejections were reported when they arrived.
    for claim_key in later:
        again = tables.claims.get(claim_key)
        assert again is not None
        journal.begin(claim_key)
        apply_rules(state, again, rules)
        footprints[claim_key] = journal.end()
    return Refold(state, verdict, footprints)


def _claims_after(tables: PoolTables, pool: str, key: str) -> list[str]:
    """Log keys of the pool's claims that sort after `key`, oldest first."""
    later: list[str] = []
    for found, _ in tables.claims.scan(pool + SEP, reverse=True):
        if found <= key:
            break
        later.append(found)
    later.reverse()
    return later


def journaled(tables: PoolTables, pool: PoolId, journal: Journal) -> PoolState:
    """The pool's state tables behind the undo journal."""
    profile, install, segment, identity, alias, forget = TOKENS
    return PoolState(
        pool,
        JournaledTable[ProfileRecord, ProfileUndo](
            tables.profiles, tables.undo_profiles, ProfileUndo, lambda u: u.value, journal, profile
        ),
        JournaledTable[InstallRecord, InstallUndo](
            tables.installs, tables.undo_installs, InstallUndo, lambda u: u.value, journal, install
        ),
        JournaledTable[SegmentLink, SegmentUndo](
            tables.segments, tables.undo_segments, SegmentUndo, lambda u: u.value, journal, segment
        ),
        JournaledTable[IdentityOwner, IdentityUndo](
            tables.identities,
            tables.undo_identities,
            IdentityUndo,
            lambda u: u.value,
            journal,
            identity,
        ),
        JournaledTable[Alias, AliasUndo](
            tables.aliases, tables.undo_aliases, AliasUndo, lambda u: u.value, journal, alias
        ),
        JournaledTable[ForgetEntry, ForgetUndo](
            tables.forgotten, tables.undo_forgotten, ForgetUndo, lambda u: u.value, journal, forget
        ),
    )


def _journaled_tables(state: PoolState) -> tuple[JournaledTable[Any, Any], ...]:
    return (
        state.profiles,
        state.installs,
        state.segments,
        state.identities,
        state.aliases,
        state.forgotten,
    )
