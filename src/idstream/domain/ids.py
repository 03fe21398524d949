"""Profile ids derived from input, never from the clock or randomness.

Domain layer. Same input, same ids: a replay into empty state rebuilds the same profiles.
"""

from __future__ import annotations

from hashlib import blake2b

from idstream.domain.keys import key


def _digest(*parts: str) -> str:
    # Parts are input (any character may occur): encoded injectively, never joined.
    return blake2b(key(*parts).encode("utf-8"), digest_size=10).hexdigest()


def anonymous_profile_id(push_registration_id: str, position: tuple[int, int, int]) -> str:
    """The anonymous profile an install's event at `position` in the input log opens (its
    first event, a depersonalize, a forget). An input log position names one record, so no
    producer can make two profiles share an id (eventIds are producer input, not unique)."""
    _, partition, offset = position
    return "a_" + _digest("anonymous", push_registration_id, str(partition), str(offset))


def person_profile_id(pool: str, position: tuple[int, int, int]) -> str:
    """The person a claim at `position` in the input log creates in `pool`."""
    _, partition, offset = position
    return "p_" + _digest("person", pool, str(partition), str(offset))
