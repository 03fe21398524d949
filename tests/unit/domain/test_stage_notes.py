"""The install stage notes what it decided without output (a dropped launch, a duplicate), so
a driver can count it (SPEC §4.2: "a dropped launch changes nothing and is only counted")."""

from __future__ import annotations

from idstream.domain.config import RuleConfig
from idstream.domain.events import AppCode, AppLaunch, EventId, PushRegistrationId, RecordMeta
from idstream.domain.install import apply_event, open_install_tables
from idstream.domain.messages import NOTE_DUPLICATE, NOTE_LAUNCH_DROPPED, StageResult
from idstream.storage.memory import DictStore


def launch(eid: str, ts: int) -> AppLaunch:
    return AppLaunch(
        event_id=EventId(eid),
        timestamp=ts,
        app_code=AppCode("app"),
        push_registration_id=PushRegistrationId("prid-1"),
    )


def test_a_dropped_launch_and_a_duplicate_are_noted_but_send_nothing() -> None:
    tables = open_install_tables(DictStore(roundtrip=True))
    rules = RuleConfig()

    def send(event: AppLaunch, offset: int) -> StageResult:
        meta = RecordMeta("idstream.events", 0, offset, event.timestamp)
        return apply_event(tables, event, b"raw", meta, event.timestamp, rules)

    assert send(launch("l1", 0), 1).notes == ()
    dropped = send(launch("l2", 10_000), 2)
    assert dropped.notes == (NOTE_LAUNCH_DROPPED,)
    assert dropped.skipped == ((NOTE_LAUNCH_DROPPED, 0, 2),)
    assert dropped == StageResult()  # notes are not part of what a stage sends
    duplicate = send(launch("l1", 0), 3)
    assert duplicate.notes == (NOTE_DUPLICATE,)
    assert send(launch("l3", 40_001), 4).notes == ()
