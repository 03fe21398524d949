"""Claim footprints: which claims of a pool's log a late claim can change, exactly.

Domain layer, standard library only. A claim's footprint is the set of tokens of every key it
read (misses included) or wrote through the journaled tables in its latest application. A
token names keys coarsely: one per profile with its alias, one per install with its segments
and its forget register entry, one per identity with its forget register entry. Two claims
with disjoint footprints touch no common key, so they commute. `pool_touches` indexes
token -> claims, so "which claims after X touched t" is a reverse prefix scan that stops at X.
See docs/architecture.md, "The pool stage".
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from idstream.domain.config import RuleConfig
from idstream.domain.events import EventType, IdentityKind, PoolId
from idstream.domain.identities import identity_hash, install_hash, normalize_identity
from idstream.domain.ids import person_profile_id
from idstream.domain.pool_profiles import normalize_all
from idstream.domain.pool_state import SEP, Footprint, PoolTables, StoredClaim, Touch

_TOUCH = Touch()


def profile_token(key: str) -> str:
    """A profile (pool SEP profileId) and its alias share a token."""
    return "p" + key.partition(SEP)[2].replace(SEP, "\x1d")


def install_token(key: str) -> str:
    """An install (pool SEP prid) shares its token with the install's forget register key."""
    pool, _, prid = key.partition(SEP)
    return install_hash(pool, prid)


def segment_token(key: str) -> str:
    """A segment (pool SEP prid SEP segment) shares its install's token."""
    pool, _, rest = key.partition(SEP)
    return install_hash(pool, rest.partition(SEP)[0])


def identity_token(key: str) -> str:
    """An identity's owner (pool SEP kind SEP value) shares its forget register key."""
    pool, _, rest = key.partition(SEP)
    kind, _, value = rest.partition(SEP)
    return identity_hash(pool, kind, value)


def forget_token(key: str) -> str:
    """A forget register key (pool SEP identity_hash | install_hash): the hash itself."""
    return key.partition(SEP)[2].replace(SEP, "\x1d")


# The token of each journaled table, in PoolState order. Tokens hold no SEP, so an index
# prefix names one token; a key that maps wrongly (a SEP inside an id) only gets a token
# shared with other keys, which is coarser, so still exact.
TOKENS: tuple[Callable[[str], str], ...] = (
    profile_token,
    install_token,
    segment_token,
    identity_token,
    profile_token,
    forget_token,
)


def seed_tokens(
    tables: PoolTables, pool: PoolId, claim: StoredClaim, rules: RuleConfig
) -> set[str]:
    """Tokens a claim will probably touch, from the claim and the state now.

    Only a first guess: what it misses, `conflicts` finds (pool_refold.py). Any guess is exact.
    """

    def key(*parts: str) -> str:
        return SEP.join((pool, *parts))

    prid = claim.push_registration_id
    seeds = {install_hash(pool, prid)}
    profiles = {claim.anonymous_profile}
    if claim.kind == EventType.PERSONALIZE:
        profiles.add(person_profile_id(pool, claim.event_id))
    install = tables.installs.get(key(prid))
    if install is not None:
        profiles.add(install.profile_id)
    identities = [
        *normalize_all(claim.identity, rules, None),
        *normalize_all(claim.identities_added, rules, None),
        *normalize_all(claim.identities_removed, rules, None),
    ]
    for kind_value, *values in claim.identities_replaced:
        kind = IdentityKind(kind_value)
        for raw in values:
            value, _ = normalize_identity(kind, raw, frozenset())
            if value is not None:
                identities.append((kind, value))
    for kind, value in identities:
        seeds.add(identity_hash(pool, kind, value))
        owner = tables.identities.get(key(kind.value, value))
        if owner is not None:
            profiles.add(owner.profile_id)
    seeds.update(profile_token(key(pid)) for pid in profiles if pid)
    return seeds


# --- the index ---------------------------------------------------------------------------


def _touch_prefix(pool: str, token: str) -> str:
    return pool + SEP + token + SEP


def touched_after(tables: PoolTables, pool: str, token: str, after: str) -> Iterator[str]:
    """Log keys of the claims that touched `token` and sort after `after`, newest first."""
    prefix = _touch_prefix(pool, token)
    cut = len(prefix)
    head = pool + SEP
    for found, _ in tables.touches.scan(prefix, reverse=True):
        claim_key = head + found[cut:]
        if claim_key <= after:
            return
        yield claim_key


def store_footprint(
    tables: PoolTables, pool: str, claim_key: str, tokens: tuple[str, ...], old: Footprint | None
) -> None:
    """Record the claim's footprint and index it, replacing the one it had (`old`)."""
    suffix = claim_key[len(pool) + 1 :]
    if old is None:
        tables.footprints.put(claim_key, Footprint(tokens))
        for token in tokens:
            tables.touches.put(pool + SEP + token + SEP + suffix, _TOUCH)
        return
    if old.tokens == tokens:
        return
    tables.footprints.put(claim_key, Footprint(tokens))
    for token in set(old.tokens).difference(tokens):
        tables.touches.delete(pool + SEP + token + SEP + suffix)
    for token in set(tokens).difference(old.tokens):
        tables.touches.put(pool + SEP + token + SEP + suffix, _TOUCH)


@dataclass(slots=True)
class Dependents:
    """The claims after a late one to roll back and re-apply, and how they were found."""

    later: list[str]  # log keys, oldest first
    # token -> log key from which every later claim touching the token is in `later`
    covered: dict[str, str]


def dependents(tables: PoolTables, pool: str, after: str, seeds: set[str]) -> Dependents | None:
    """The claims after `after` that depend on what `seeds` name (None: not known).

    Walks the later claims in log order: one joins when its footprint meets the seeds or the
    footprint of a claim that joined before it. So no later claim left out touched what a
    joined one touched, and the joined ones can be rolled back newest first. None when a
    claim has no footprint (state from before footprints).
    """
    heap: list[str] = []
    covered: dict[str, str] = {}

    def reach(token: str, since: str) -> None:
        # Reached from an earlier claim already covers every claim after a later one.
        if token not in covered:
            covered[token] = since
            for found in touched_after(tables, pool, token, since):
                heapq.heappush(heap, found)

    for token in seeds:
        reach(token, after)
    joined: list[str] = []
    while heap:
        claim_key = heapq.heappop(heap)
        if joined and joined[-1] == claim_key:
            continue
        joined.append(claim_key)
        footprint = tables.footprints.get(claim_key)
        if footprint is None:
            return None
        for token in footprint.tokens:
            reach(token, claim_key)
    return Dependents(joined, covered)


def conflicts(
    tables: PoolTables, pool: str, new: dict[str, tuple[str, ...]], covered: dict[str, str]
) -> set[str]:
    """Tokens of the new footprints that a claim not re-applied, sorting after, touched.

    `new`: the new footprint of every claim just applied; `covered` as `dependents` found it.
    Empty: every claim left alone saw what it saw before, and nothing of the re-applied ones.
    """
    first: dict[str, str] = {}
    for claim_key in sorted(new):
        for token in new[claim_key]:
            first.setdefault(token, claim_key)
    found: set[str] = set()
    for token, since in first.items():
        if token in covered and covered[token] <= since:
            continue  # every claim after `since` that touched it was re-applied
        if any(other not in new for other in touched_after(tables, pool, token, since)):
            found.add(token)
    return found
