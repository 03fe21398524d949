"""Profile ids derived from input, never from the clock or randomness.

Domain layer. Same input, same ids: a replay into empty state rebuilds the same profiles.
"""

from __future__ import annotations

from hashlib import blake2b

from idstream.domain.events import PoolId, ProfileId, PushRegistrationId


def _digest(*parts: str) -> str:
    # \x1f (unit separator) cannot be confused with content: ids and eventIds are printable.
    return blake2b("\x1f".join(parts).encode("utf-8"), digest_size=10).hexdigest()


def anonymous_profile_id(push_registration_id: PushRegistrationId, segment: str) -> ProfileId:
    """The anonymous profile of an install segment (segment = eventId that opened it)."""
    return ProfileId("a_" + _digest("anonymous", push_registration_id, segment))


def person_profile_id(pool: PoolId, creating_event_id: str) -> ProfileId:
    """A person created in `pool` by the claim with eventId `creating_event_id`."""
    return ProfileId("p_" + _digest("person", pool, creating_event_id))
