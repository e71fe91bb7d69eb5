"""ERP -> CRM for two-way entities: send only what the ERP may overwrite, and
remember what both sides then agree on.

A field whose policy lets the CRM win (crm_wins, latest_wins, manual,
never_overwrite_with_null) is only sent after reading the CRM's current value:
when the CRM changed it too, the policy decides, and a lost or parked field is
left out of the update. Fields under erp_wins are sent without that read.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from replicator.mapping.conflict import Decision, Take, decide, instant, same
from replicator.mapping.plan import Planned, make_operation
from replicator.mapping.reverse import ReverseEntity, ReverseField
from replicator.ops import metrics
from replicator.sinks.base import Action
from replicator.state.twoway import TwoWayStore

log = structlog.get_logger()


class CrmWrites:
    """How often this process wrote each CRM record: a CRM record read before a number
    changed may predate our own write, and is read again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def wrote(self, object: str, crm_id: str) -> None:
        with self._lock:
            self._counts[(object, crm_id)] = self._counts.get((object, crm_id), 0) + 1

    def count(self, object: str, crm_id: str) -> int:
        with self._lock:
            return self._counts.get((object, crm_id), 0)


class ReadableCrm(Protocol):
    def get(self, object: str, crm_id: str) -> dict[str, Any] | None: ...
    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Sides:
    """One two-way record as both directions see it when deciding its fields."""

    entity: str
    erp_key: str
    crm_id: str | None
    base: dict[str, Any] | None  # the values both sides last agreed on (None: never)
    crm: Mapping[str, Any]
    erp_ts: datetime | None
    crm_ts: datetime | None


def judge(two_way: TwoWayStore, field: ReverseField, sides: Sides, erp: Any) -> Decision:
    """Decide one field (`erp`: the ERP's value, CRM-shaped). Both directions decide through
    here, so a conflict is counted, and parked under `manual`, the same way whichever saw it."""
    base = sides.base.get(field.name) if sides.base else None
    crm = sides.crm.get(field.name)
    d = decide(
        field.policy,
        base_known=sides.base is not None and field.name in sides.base,
        base=base,
        erp=erp,
        crm=crm,
        erp_ts=sides.erp_ts,
        crm_ts=sides.crm_ts,
    )
    if d.conflict:
        metrics.CONFLICTS.labels(sides.entity, field.policy, d.winner).inc()
    if d.take is Take.PARK:
        two_way.park(
            entity=sides.entity,
            erp_key=sides.erp_key,
            crm_id=sides.crm_id,
            field=field.name,
            base=base,
            erp=erp,
            crm=crm,
            erp_ts=sides.erp_ts,
            crm_ts=sides.crm_ts,
        )
    return d


class ForwardGuard:
    def __init__(
        self,
        reverse: Mapping[str, ReverseEntity],
        two_way: TwoWayStore,
        crm: ReadableCrm,
        writes: CrmWrites | None = None,
    ) -> None:
        self.writes = writes or CrmWrites()
        self.by_entity = {r.name: r for r in reverse.values()}
        self.two_way = two_way
        self.crm = crm
        self._agreed: dict[tuple[str, str], dict[str, Any]] = {}

    def review(self, planned: Sequence[Planned]) -> None:
        """Trim each two-way upsert to what the ERP may write; note what both sides will hold.

        Notes live for one sink call: those of records that failed are dropped with the next."""
        self._agreed.clear()
        by_entity: dict[str, list[Planned]] = {}
        for p in planned:
            if p.op is not None and p.op.entity in self.by_entity and p.op.action is not Action.DELETE:
                by_entity.setdefault(p.op.entity, []).append(p)
        for name, group in by_entity.items():
            rent = self.by_entity[name]
            bases = self.two_way.last_records(name, [p.op.external_id for p in group if p.op is not None])
            for p in group:
                self._review_one(rent, p, bases.get(p.op.external_id) if p.op else None)

    def _review_one(self, rent: ReverseEntity, p: Planned, base: dict[str, Any] | None) -> None:
        op = p.op
        assert op is not None
        drop: set[str] = set()
        if op.crm_id and base is not None:
            drop = self.two_way.open_fields(rent.name, op.external_id)
            guarded = [
                rf
                for rf in rent.fields.values()
                if rf.direction == "both"
                and rf.policy != "erp_wins"
                and rf.name not in drop
                and not same(op.record.get(rf.name), base.get(rf.name))
            ]
            if guarded:
                drop |= self._decide(rent, p, base, guarded)
        if drop:
            record = {k: v for k, v in op.record.items() if k not in drop}
            p.op = make_operation(p.target.entity, op.external_id, op.action, record, op.crm_id)
            op = p.op
        agreed = {**(base or {}), **op.record}
        self._agreed[(rent.name, op.external_id)] = agreed

    def _decide(self, rent: ReverseEntity, p: Planned, base: dict[str, Any], guarded: list[ReverseField]) -> set[str]:
        op = p.op
        assert op is not None and op.crm_id is not None
        raw = self.crm.get(rent.object, op.crm_id)
        if raw is None:
            return set()  # gone from the CRM: the upsert re-creates it with the ERP's values
        crm = self.crm.comparable(rent.object, raw)
        row = p.target.row or {}
        erp_ts = instant(rent.erp_ts({None: row})) if rent.erp_ts is not None and row else None
        if erp_ts is None and p.target.change.commit_ts is not None:
            erp_ts = p.target.change.commit_ts
        crm_ts = instant(raw.get(rent.crm_ts_field)) if rent.crm_ts_field else None
        sides = Sides(rent.name, op.external_id, op.crm_id, base, crm, erp_ts, crm_ts)
        drop = set()
        for rf in guarded:
            d = judge(self.two_way, rf, sides, op.record.get(rf.name))
            if d.take is not Take.ERP:
                drop.add(rf.name)
                log.info(
                    "field kept from the CRM", entity=rent.name, erp_key=op.external_id, field=rf.name, take=d.take
                )
        return drop

    def agreed(self, entity: str, external_id: str, object: str, crm_id: str | None) -> dict[str, Any] | None:
        """The values both sides hold once the reviewed upsert is acknowledged."""
        if crm_id is not None:
            self.writes.wrote(object, crm_id)
        return self._agreed.pop((entity, external_id), None)
