"""Token buckets for the lookup API: a rate and a burst per key (a token, or a client address).

Driver layer, pure: the clock is passed in, so tests drive it. Identity lookups are a
membership oracle (does this email have a profile?); the buckets bound how fast one client can
ask. Each worker keeps its own buckets.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Keys kept at most; the least recently used bucket goes first. Keys are verified tokens or
# client addresses, so a worker sees few.
MAX_KEYS = 10_000


@dataclass(slots=True)
class TokenBucket:
    """`burst` tokens at most, refilled at `rate` per second; a request takes one."""

    rate: float
    burst: int
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: int, now: float) -> TokenBucket:
        return cls(rate, burst, float(burst), now)

    def take(self, now: float) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there will be one."""
        # A clock that went back refills nothing.
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per key; `per_minute` 0 turns the limit off."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError("per_minute must be >= 0 and burst >= 1")
        self.rate = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Count one request of `key`: 0.0 if allowed, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket.full(self.rate, self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)
