"""Defects injected into the stages, the same in a worker (faulty_worker.py) and in process.

The install stage raises on every event whose eventId starts with `poison-install`, the pool
stage on every claim whose eventId starts with `poison-pool`, as a defect that one record
triggers would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from idstream.domain import install as install_stage
from idstream.domain import pool as pool_stage


def poisoned_event(apply_event: Callable[..., Any]) -> Callable[..., Any]:
    def apply(tables: Any, event: Any, *args: Any) -> Any:
        if event.event_id.startswith("poison-install"):
            raise RuntimeError("injected defect in the install stage")
        return apply_event(tables, event, *args)

    return apply


def poisoned_claim(apply_claim: Callable[..., Any]) -> Callable[..., Any]:
    def apply(tables: Any, claim: Any, *args: Any) -> Any:
        if claim.event_id.startswith("poison-pool"):
            raise RuntimeError("injected defect in the pool stage")
        return apply_claim(tables, claim, *args)

    return apply


def inject(setattr: Callable[[Any, str, Any], None]) -> None:
    """Poison both stages (`setattr` is builtins.setattr or a pytest monkeypatch's)."""
    setattr(install_stage, "apply_event", poisoned_event(install_stage.apply_event))
    setattr(pool_stage, "apply_claim", poisoned_claim(pool_stage.apply_claim))
