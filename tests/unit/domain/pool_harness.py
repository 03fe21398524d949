"""Test harness for the pool stage: builds claims as the install stage would and applies them.

Claims are built per install (seq, facts, the event's fields) and placed in one input log, one
after the other (input partition 0, increasing offsets and log time): the order the pool
applies them in. `ts` arguments are event times (device clocks). State lives in
storage.memory tables that round-trip every value through the real codec, so the stored value
types are checked too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from idstream.domain.config import RuleConfig
from idstream.domain.events import IdentityKind, RecordMeta
from idstream.domain.ids import anonymous_profile_id, person_profile_id
from idstream.domain.keys import key, parts
from idstream.domain.messages import (
    Claim,
    ClaimIdentity,
    Heartbeat,
    InstallFacts,
    LinkDecision,
    Output,
    OutputTopic,
)
from idstream.domain.pool import (
    DIGEST_EXCLUDED,
    PoolTables,
    identity_owner,
    open_pool_tables,
    receive,
)
from idstream.storage.memory import DictStore

POOL = "default"


def identity(
    ext: str | None = None, emails: Iterable[str] = (), phones: Iterable[str] = ()
) -> ClaimIdentity:
    return ClaimIdentity(ext, tuple(emails), tuple(phones))


def _identity_or_none(found: ClaimIdentity | None) -> ClaimIdentity | None:
    if found is None or (found.external_user_id is None and not found.emails and not found.phones):
        return None
    return found


@dataclass
class _Install:
    prid: str
    app_code: str
    pool: str
    source: int = 0  # the input partition of its events
    seq: int = 0
    push: bool = True
    primary: bool = False
    system_data: dict[str, Any] = field(default_factory=dict)
    custom_attributes: dict[str, Any] = field(default_factory=dict)


class ClaimMaker:
    """Makes the claims an install stage would send (seq, log position, facts, event fields)."""

    def __init__(self, rules: RuleConfig | None = None) -> None:
        self.rules = rules or RuleConfig()
        self.installs: dict[str, _Install] = {}
        self._ids = 0
        # The input log: one record per claim, in the partition of its install; its log time
        # grows with every record, so the log's order is the order claims were made in.
        self.clock = 0
        self.offsets: dict[int, int] = {}

    def _event_id(self, prid: str) -> str:
        self._ids += 1
        return f"{prid}.e{self._ids:04d}"

    def _facts(self, ins: _Install) -> InstallFacts:
        return InstallFacts(
            ins.app_code, ins.push, ins.primary, dict(ins.system_data), dict(ins.custom_attributes)
        )

    def _position(self, source: int) -> tuple[int, int, int]:
        self.clock += 1
        self.offsets[source] = self.offsets.get(source, -1) + 1
        return (self.clock, source, self.offsets[source])

    def tick(self, source: int, pool: str = POOL) -> Heartbeat:
        """A tick record on `source`: the pool hears the partition has come this far."""
        time, _, offset = self._position(source)
        return Heartbeat(pool, source, time, offset)

    def _claim(self, ins: _Install, kind: str, ts: int, **body: Any) -> Claim:
        ins.seq += 1
        position = self._position(ins.source)
        eid = self._event_id(ins.prid)
        return Claim(
            pool=ins.pool,
            position=position,
            push_registration_id=ins.prid,
            seq=ins.seq,
            anonymous_profile=anonymous_profile_id(ins.prid, ins.seq),
            facts=self._facts(ins),
            kind=kind,
            event_id=eid,
            timestamp=ts,
            raw=f"raw:{eid}".encode(),
            meta=RecordMeta("idstream.events", position[1], position[2], position[0]),
            **body,
        )

    def install(
        self,
        prid: str,
        ts: int,
        *,
        app: str = "app",
        push: bool = True,
        primary: bool = False,
        source: int = 0,
    ) -> Claim:
        """The install's first event: a facts-only claim that opens its first segment."""
        ins = _Install(prid, app, self.rules.pool_of(app), source, push=push, primary=primary)
        self.installs[prid] = ins
        return self._claim(ins, "install", ts)

    def facts(
        self,
        prid: str,
        ts: int,
        *,
        push: bool | None = None,
        primary: bool | None = None,
        custom: dict[str, Any] | None = None,
        **system: Any,
    ) -> Claim:
        ins = self.installs[prid]
        if push is not None:
            ins.push = push
        if primary is not None:
            ins.primary = primary
        ins.system_data.update(system)
        ins.custom_attributes.update(custom or {})
        return self._claim(ins, "installUpdate", ts)

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
        return self._claim(
            self.installs[prid],
            "personalize",
            ts,
            identity=_identity_or_none(identity(ext, emails, phones)),
            force_depersonalize=force,
            attributes=dict(attributes or {}),
            custom_attributes=dict(custom or {}),
        )

    def depersonalize(self, prid: str, ts: int) -> Claim:
        return self._claim(self.installs[prid], "depersonalize", ts)

    def update(
        self,
        prid: str,
        ts: int,
        *,
        attributes: dict[str, Any] | None = None,
        custom: dict[str, Any] | None = None,
        tags_added: Iterable[str] = (),
        tags_removed: Iterable[str] = (),
        added: ClaimIdentity | None = None,
        removed: ClaimIdentity | None = None,
        replaced: Iterable[tuple[IdentityKind, str, str]] = (),
    ) -> Claim:
        return self._claim(
            self.installs[prid],
            "personUpdate",
            ts,
            attributes=dict(attributes or {}),
            custom_attributes=dict(custom or {}),
            tags_added=tuple(tags_added),
            tags_removed=tuple(tags_removed),
            identities_added=_identity_or_none(added),
            identities_removed=_identity_or_none(removed),
            identities_replaced=tuple((k.value, o, n) for k, o, n in replaced),
        )

    def uninstall(self, prid: str, ts: int) -> Claim:
        return self._claim(self.installs[prid], "uninstall", ts)

    def forget(self, prid: str, ts: int, who: ClaimIdentity | None = None) -> Claim:
        return self._claim(self.installs[prid], "forget", ts, identity=_identity_or_none(who))


class PoolHarness(ClaimMaker):
    """A ClaimMaker whose claims go straight into one pool stage; keeps every output."""

    def __init__(
        self, rules: RuleConfig | None = None, *, roundtrip: bool = True, sources: int = 1
    ) -> None:
        super().__init__(rules)
        self.sources = sources
        # Round-tripping every value through the codec checks the stored types; property
        # tests that apply thousands of claims turn it off for speed.
        self.store = DictStore(roundtrip=roundtrip)
        self.tables: PoolTables = open_pool_tables(self.store)
        self.outputs: list[Output] = []
        self.decisions: list[LinkDecision] = []
        self.last_outputs: tuple[Output, ...] = ()
        self.last_decisions: tuple[LinkDecision, ...] = ()
        self.last_notes: tuple[str, ...] = ()

    def apply(self, claim: Claim | Heartbeat) -> Claim | Heartbeat:
        # With one input partition, every claim is applied as soon as it arrives.
        result = receive(self.tables, claim, self.rules, self.sources)
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
        record = self.tables.installs.get(key(pool, prid))
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
        return [c["kind"] for c in self.changes(pid, last=last)]

    def dead_letters(self, *, last: bool = True) -> list[str]:
        source = self.last_outputs if last else self.outputs
        return [
            str(o.value["reason"])
            for o in source
            if o.topic is OutputTopic.DEAD_LETTER and o.value is not None
        ]

    def person_id(self, claim: Claim) -> str:
        """The person a personalize claim creates."""
        return person_profile_id(claim.pool, claim.push_registration_id, claim.seq)

    def anonymous_id(self, claim: Claim) -> str:
        """The anonymous profile a claim's event opens (first event, depersonalize, forget)."""
        return claim.anonymous_profile

    def owner(self, kind: IdentityKind, value: str, pool: str = POOL) -> str | None:
        return identity_owner(self.tables, pool, kind, value, self.rules.personal_key)

    def persons(self, pool: str = POOL) -> list[str]:
        return [
            parts(found)[1]
            for found, record in self.tables.profiles.scan(key(pool))
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


def logical_state(store: DictStore) -> dict[str, list[tuple[str, Any]]]:
    """Every table except the bookkeeping ones, as sorted (key, value) lists."""
    return {
        name: list(table.scan())
        for name, table in sorted(store.tables.items())
        if name not in DIGEST_EXCLUDED
    }
