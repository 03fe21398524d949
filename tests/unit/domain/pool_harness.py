"""Test harness for the pool stage: builds claims as the install stage would and applies them.

Claims are built per install (seq, order key, segments) and can be applied at once or later in
any interleaving. State lives in storage.memory tables that round-trip every value through the
real codec, so the stored value types are checked too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from idstream.domain.config import RuleConfig
from idstream.domain.events import (
    AnyEvent,
    AppCode,
    Depersonalize,
    EventId,
    Forget,
    IdentityKind,
    IdentityReplacement,
    Personalize,
    PersonAttributes,
    PersonUpdate,
    PoolId,
    ProfileId,
    PushRegistrationId,
    RecordMeta,
    Uninstall,
    UserIdentity,
)
from idstream.domain.ids import anonymous_profile_id, person_profile_id
from idstream.domain.messages import Claim, InstallFacts, LinkDecision, Output, OutputTopic
from idstream.domain.pool import (
    DIGEST_EXCLUDED,
    PoolTables,
    apply_claim,
    open_pool_tables,
)
from idstream.domain.pool_state import SEP
from idstream.storage.memory import DictStore

POOL = PoolId("default")


def identity(
    ext: str | None = None, emails: Iterable[str] = (), phones: Iterable[str] = ()
) -> UserIdentity:
    return UserIdentity(ext, tuple(emails), tuple(phones))


@dataclass
class _Install:
    prid: str
    app_code: str
    pool: PoolId
    seq: int = 0
    max_ts: int = -(10**15)
    segment: str = ""
    anonymous: str = ""
    push: bool = True
    primary: bool = False
    system_data: dict[str, Any] = field(default_factory=dict)


class ClaimMaker:
    """Makes the claims an install stage would send (order key, seq, segments, facts)."""

    def __init__(self, rules: RuleConfig | None = None) -> None:
        self.rules = rules or RuleConfig()
        self.installs: dict[str, _Install] = {}
        self._ids = 0

    def _event_id(self, prid: str) -> EventId:
        self._ids += 1
        return EventId(f"{prid}.e{self._ids:04d}")

    def _facts(self, ins: _Install, lifecycle: str = "anonymous") -> InstallFacts:
        return InstallFacts(ins.app_code, lifecycle, ins.push, ins.primary, dict(ins.system_data))

    def _claim(self, ins: _Install, event: AnyEvent | None, eid: str, ts: int) -> Claim:
        ins.seq += 1
        ins.max_ts = max(ins.max_ts, ts)
        return Claim(
            pool=ins.pool,
            push_registration_id=PushRegistrationId(ins.prid),
            seq=ins.seq,
            order=(ins.max_ts, eid),
            event=event,
            segment=ins.segment,
            anonymous_profile=ProfileId(ins.anonymous),
            facts=self._facts(ins),
            raw=f"raw:{eid}".encode(),
            meta=RecordMeta("idstream.events", 0, ins.seq * 1000 + len(self.installs), ts),
        )

    def _open(self, ins: _Install, eid: str) -> None:
        ins.segment = eid
        ins.anonymous = anonymous_profile_id(PushRegistrationId(ins.prid), eid)

    def install(
        self, prid: str, ts: int, *, app: str = "app", push: bool = True, primary: bool = False
    ) -> Claim:
        """The install's first event: a facts-only claim that opens its first segment."""
        ins = _Install(prid, app, self.rules.pool_of(app), push=push, primary=primary)
        self.installs[prid] = ins
        eid = self._event_id(prid)
        self._open(ins, eid)
        return self._claim(ins, None, eid, ts)

    def facts(
        self,
        prid: str,
        ts: int,
        *,
        push: bool | None = None,
        primary: bool | None = None,
        **system: Any,
    ) -> Claim:
        ins = self.installs[prid]
        if push is not None:
            ins.push = push
        if primary is not None:
            ins.primary = primary
        ins.system_data.update(system)
        return self._claim(ins, None, self._event_id(prid), ts)

    def _base(self, prid: str, ts: int) -> dict[str, Any]:
        ins = self.installs[prid]
        return {
            "event_id": self._event_id(prid),
            "timestamp": ts,
            "app_code": AppCode(ins.app_code),
            "push_registration_id": PushRegistrationId(prid),
        }

    def personalize(
        self,
        prid: str,
        ts: int,
        ext: str | None = None,
        emails: Iterable[str] = (),
        phones: Iterable[str] = (),
        *,
        force: bool = False,
        attributes: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
    ) -> Claim:
        ins = self.installs[prid]
        event = Personalize(
            **self._base(prid, ts),
            user_identity=identity(ext, emails, phones),
            user_attributes=PersonAttributes(attributes or {}, custom or {}),
            force_depersonalize=force,
        )
        ins.segment = event.event_id  # a personalize opens a person segment
        return self._claim(ins, event, event.event_id, ts)

    def depersonalize(self, prid: str, ts: int) -> Claim:
        ins = self.installs[prid]
        event = Depersonalize(**self._base(prid, ts))
        self._open(ins, event.event_id)
        return self._claim(ins, event, event.event_id, ts)

    def update(
        self,
        prid: str,
        ts: int,
        *,
        attributes: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
        tags_added: Iterable[str] = (),
        tags_removed: Iterable[str] = (),
        added: UserIdentity | None = None,
        removed: UserIdentity | None = None,
        replaced: Iterable[tuple[IdentityKind, str, str]] = (),
    ) -> Claim:
        ins = self.installs[prid]
        event = PersonUpdate(
            **self._base(prid, ts),
            attributes=PersonAttributes(attributes or {}, custom or {}),
            tags_added=tuple(tags_added),
            tags_removed=tuple(tags_removed),
            identities_added=added or UserIdentity(),
            identities_removed=removed or UserIdentity(),
            identities_replaced=tuple(IdentityReplacement(k, o, n) for k, o, n in replaced),
        )
        return self._claim(ins, event, event.event_id, ts)

    def uninstall(self, prid: str, ts: int) -> Claim:
        ins = self.installs[prid]
        event = Uninstall(**self._base(prid, ts))
        return self._claim(ins, event, event.event_id, ts)

    def forget(self, prid: str, ts: int, who: UserIdentity | None = None) -> Claim:
        ins = self.installs[prid]
        event = Forget(**self._base(prid, ts), user_identity=who)
        if who is None:
            self._open(ins, event.event_id)  # forgetting its own person opens a fresh segment
        return self._claim(ins, event, event.event_id, ts)


class PoolHarness(ClaimMaker):
    """A ClaimMaker whose claims go straight into one pool stage; keeps every output."""

    def __init__(self, rules: RuleConfig | None = None, *, roundtrip: bool = True) -> None:
        super().__init__(rules)
        # Round-tripping every value through the codec checks the stored types; property
        # tests that apply thousands of claims turn it off for speed.
        self.store = DictStore(roundtrip=roundtrip)
        self.tables: PoolTables = open_pool_tables(self.store)
        self.outputs: list[Output] = []
        self.decisions: list[LinkDecision] = []
        self.last_outputs: tuple[Output, ...] = ()
        self.last_decisions: tuple[LinkDecision, ...] = ()
        self.last_notes: tuple[str, ...] = ()

    def apply(self, claim: Claim) -> Claim:
        result = apply_claim(self.tables, claim, self.rules)
        self.last_notes = result.notes
        self.last_outputs = result.outputs
        self.last_decisions = tuple(m for m in result.messages if isinstance(m, LinkDecision))
        self.outputs.extend(result.outputs)
        self.decisions.extend(self.last_decisions)
        return claim

    def __getattribute__(self, name: str) -> Any:
        # Claim builders of a harness apply the claim they build.
        attr = super().__getattribute__(name)
        if name in _BUILDERS:

            def build_and_apply(*args: Any, **kwargs: Any) -> Claim:
                return self.apply(attr(*args, **kwargs))

            return build_and_apply
        return attr

    # --- what the stage decided --------------------------------------------------------

    def profile_of(self, prid: str) -> str:
        """The profile an install is linked to now (pool state)."""
        pool = self.installs[prid].pool if prid in self.installs else POOL
        record = self.tables.installs.get(POOL_KEY(pool, prid))
        assert record is not None
        return record.profile_id

    def snapshot(self, pid: str) -> dict[str, Any] | None:
        """The latest `profiles` record of a profile (None: tombstone or never sent)."""
        latest: dict[str, Any] | None = None
        for out in self.outputs:
            if out.topic is OutputTopic.PROFILES and out.key == pid:
                latest = dict(out.value) if out.value is not None else None
        return latest

    def changes(self, pid: str, *, last: bool = False) -> list[dict[str, Any]]:
        source = self.last_outputs if last else self.outputs
        return [
            dict(o.value)
            for o in source
            if o.topic is OutputTopic.PROFILE_CHANGES and o.key == pid and o.value is not None
        ]

    def change_types(self, pid: str, *, last: bool = False) -> list[str]:
        return [c["type"] for c in self.changes(pid, last=last)]

    def dead_letters(self, *, last: bool = True) -> list[str]:
        source = self.last_outputs if last else self.outputs
        return [
            str(o.value["reason"])
            for o in source
            if o.topic is OutputTopic.DEAD_LETTER and o.value is not None
        ]

    def person_id(self, claim: Claim) -> str:
        assert claim.event is not None
        return person_profile_id(claim.pool, claim.event.event_id)

    def owner(self, kind: IdentityKind, value: str, pool: str = POOL) -> str | None:
        found = self.tables.identities.get(SEP.join((pool, kind.value, value)))
        return found.profile_id if found is not None else None

    def persons(self, pool: str = POOL) -> list[str]:
        return [
            key.split(SEP, 1)[1]
            for key, record in self.tables.profiles.scan(pool + SEP)
            if record.kind == "person"
        ]

    def logical_state(self) -> dict[str, list[tuple[str, Any]]]:
        return logical_state(self.store)


_BUILDERS = frozenset(
    {
        "install",
        "facts",
        "personalize",
        "depersonalize",
        "update",
        "uninstall",
        "forget",
    }
)


def POOL_KEY(pool: str, *parts: str) -> str:
    return SEP.join((pool, *parts))


def logical_state(store: DictStore) -> dict[str, list[tuple[str, Any]]]:
    """Every table except the bookkeeping ones, as sorted (key, value) lists."""
    return {
        name: list(table.scan())
        for name, table in sorted(store.tables.items())
        if name not in DIGEST_EXCLUDED
    }
