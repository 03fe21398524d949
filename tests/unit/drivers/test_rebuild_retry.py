"""`idstream rebuild` on a fresh broker: no group coordinator yet is waited out, not fatal."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, UnknownError

from idstream.drivers.faust.rebuild import _retrying


def test_a_retriable_error_is_tried_again_until_the_call_answers() -> None:
    calls = 0

    async def describe() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise GroupCoordinatorNotAvailableError("Unable to get coordinator id")
        return "groups"

    assert asyncio.run(_retrying(describe, timeout=10.0)) == "groups"
    assert calls == 3


def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    calls = 0

    async def describe() -> str:
        nonlocal calls
        calls += 1
        raise UnknownError("no")

    with pytest.raises(UnknownError):
        asyncio.run(_retrying(describe, timeout=10.0))
    assert calls == 1


def test_a_retriable_error_past_the_timeout_is_raised() -> None:
    async def describe() -> str:
        raise GroupCoordinatorNotAvailableError("Unable to get coordinator id")

    with pytest.raises(GroupCoordinatorNotAvailableError):
        asyncio.run(_retrying(describe, timeout=0.0))
