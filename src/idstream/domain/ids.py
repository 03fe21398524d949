"""Profile ids derived from input, never from the clock or randomness.

Domain layer. An id names the install's claim that made the profile: the install and its
claim counter (the n-th identity or lifecycle step of that install). That is unique (no
producer can make two profiles share an id: eventIds are producer input, not unique), and the
same in every replay, whatever the partitioning or the other installs.
"""

from __future__ import annotations

from hashlib import blake2b

from idstream.domain.keys import key


def _digest(*parts: str) -> str:
    # Parts are input (any character may occur): encoded injectively, never joined.
    return blake2b(key(*parts).encode("utf-8"), digest_size=10).hexdigest()


def anonymous_profile_id(push_registration_id: str, claim_seq: int) -> str:
    """The anonymous profile an install's claim opens: its first event (claim 1), a
    depersonalize, a forget of its own person."""
    return "a_" + _digest("anonymous", push_registration_id, str(claim_seq))


def forgotten_profile_id(push_registration_id: str, forget_install: str, forget_seq: int) -> str:
    """The fresh anonymous profile an install gets when another install's forget erases its
    person."""
    return "a_" + _digest("after-forget", push_registration_id, forget_install, str(forget_seq))


def person_profile_id(pool: str, push_registration_id: str, claim_seq: int) -> str:
    """The person an install's claim creates in `pool`."""
    return "p_" + _digest("person", pool, push_registration_id, str(claim_seq))
