"""Wait for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 30.0,
    *,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """Call `predicate` (sync or async) until it returns something truthy; return that.

    Raises AssertionError naming `message` and the last value when `timeout` passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {message or predicate!r}; "
                f"last value: {result!r}"
            )
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    *,
    interval: float = 0.1,
    message: str = "",
) -> T:
    """The synchronous `wait_for`, for fixtures and code outside an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {message or predicate!r}; "
                f"last value: {result!r}"
            )
        time.sleep(interval)
