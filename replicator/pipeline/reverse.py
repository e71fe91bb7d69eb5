"""CRM -> ERP: one CRM change at a time into one ERP transaction.

For each CRM record the processor compares three versions of every two-way field:
the CRM's, the ERP's (the ERP row mapped forward, as it would be sent), and the one
both sides last agreed on. A field only the CRM changed is written to the ERP; one
only the ERP changed stays (and is sent to the CRM); one both changed follows its
conflict policy. A CRM change that matches the agreed values is our own write coming
back, and is dropped. After a write, the agreed values and the payload hash of the
new ERP row are stored, so the ERP's change stream recognises the write's echo too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from replicator.change import Change, Op, Position, Row
from replicator.config.model import RetryConfig
from replicator.mapping.conflict import Take, instant, same
from replicator.mapping.expr import ExprEvalError
from replicator.mapping.plan import Planner, Target, make_operation, no_hashes
from replicator.mapping.reader import RowReader
from replicator.mapping.reverse import ReverseEntity
from replicator.ops import metrics
from replicator.pipeline.processor import BatchReport, Interrupted
from replicator.pipeline.retry import backoff
from replicator.pipeline.two_way import CrmWrites, Sides, judge
from replicator.sinks.base import Action, CrmError, IntentLedger, Operation, Outcome, Result
from replicator.sinks.erp.model import ChildWrite, ErpWriter, RowWrite, WriteRejected
from replicator.state.store import StateStore
from replicator.state.twoway import Conflict, TwoWayStore

log = structlog.get_logger()


class CrmSide(Protocol):
    """What the processor needs of the CRM connector."""

    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]: ...
    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]: ...


class CrmRecords(Protocol):
    """Current CRM records, read when a change is applied (not when it was noticed)."""

    def fetch(self, object: str, crm_id: str) -> dict[str, Any] | None: ...
    def modified_at(self, record: dict[str, Any]) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class _ReadAhead:
    writes: int  # how often we had written the record when it was read (-1: the read failed)
    record: dict[str, Any] | None


class Rejected(Exception):
    """This change cannot be applied as it is: dead-letter it with the reason."""


class ReverseProcessor:
    def __init__(
        self,
        reverse: Mapping[str, ReverseEntity],
        planner: Planner,
        reader: RowReader,
        store: StateStore,
        two_way: TwoWayStore,
        writer: ErpWriter,
        crm: CrmSide,
        retry: RetryConfig,
        stop: threading.Event | None = None,
        *,
        records: CrmRecords,
        gate: threading.Lock | None = None,
        writes: CrmWrites | None = None,
        readers: int = 4,
    ) -> None:
        # Every change is applied to the record as the CRM holds it then, not as it was when the
        # change was noticed. A batch's records are read ahead in parallel; one this process wrote
        # to since is read again under the gate, so no decision rests on a snapshot our own write
        # has overtaken.
        self.records = records
        self.writes = writes or CrmWrites()
        self.readers = max(1, readers)
        self.gate = gate or threading.Lock()  # shared with the ERP -> CRM processor
        self.reverse = dict(reverse)
        self.planner = planner
        self.reader = reader
        self.store = store
        self.two_way = two_way
        self.writer = writer
        self.crm = crm
        self.retry = retry
        self.stop = stop or threading.Event()

    def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
        report = BatchReport(changes=len(changes))
        ahead = self._read_ahead(changes)
        for change in changes:
            obj = change.table.partition(".")[2]
            rent = self.reverse.get(obj)
            if rent is None:
                report.skipped += 1  # a CRM object no mapping writes back
                continue
            crm_id = str(change.key[0])
            try:
                # One change at a time against the other direction: it holds the gate per change,
                # not per batch, so a burst of CRM notifications does not hold up ERP changes.
                with self.gate:
                    outcome = self._apply(rent, obj, crm_id, change, ahead.get((obj, crm_id)))
            except (Rejected, WriteRejected, ExprEvalError) as exc:
                self._dead_letter(rent, crm_id, change, str(exc))
                report.dead_lettered += 1
                report.errors.append(str(exc))
                outcome = "dead_letter"
            if outcome in ("written", "inserted", "deleted", "sent"):
                report.applied += 1
                report.created += int(outcome == "inserted")
            elif outcome != "dead_letter":
                report.skipped += 1
            metrics.EVENTS_OUT.labels(rent.name, change.op, outcome).inc()
        return report

    def resolve(self, conflict: Conflict, take: str) -> str:
        """Settle a parked conflict with one side's value, written to the other side."""
        rent = next((r for r in self.reverse.values() if r.name == conflict.entity), None)
        if rent is None or conflict.field not in rent.fields:
            raise Rejected(f"{conflict.entity}.{conflict.field} is no longer written CRM -> ERP by the mapping")
        key = rent.key_of_external_id(conflict.erp_key)
        row = self._row(rent, key) if key else None
        if key is None or row is None:
            raise Rejected(f"the ERP row of {conflict.entity} {conflict.erp_key} is gone")
        raw = self.records.fetch(rent.object, conflict.crm_id) if conflict.crm_id else None
        if raw is None:
            raise Rejected(f"the CRM {rent.object} {conflict.crm_id} is gone")
        crm = self.crm.comparable(rent.object, raw)
        with self.gate:
            outcome = "unchanged"
            if take == "crm":
                rf = rent.fields[conflict.field]
                row = (
                    self.writer.write(
                        RowWrite(
                            rent.entity.table,
                            "update",
                            key=dict(zip(rent.entity.key, rent.entity.key_of(row), strict=True)),
                            values={rf.column: rf.expr({None: crm})},
                            audit=rent.audit,
                            returning=rent.entity.columns,
                        )
                    ).row
                    or row
                )
                outcome = "written"
            parked = self.two_way.open_fields(rent.name, conflict.erp_key) - {conflict.field}
            base = self.two_way.last_record(rent.name, conflict.erp_key)
            erp_rec = self._forward(rent, row)
            result = self._settle(
                rent, rent.object, str(conflict.crm_id), conflict.erp_key, erp_rec, crm, base, parked, outcome,
                f"conflict:{conflict.id}",
            )  # fmt: skip
            self.two_way.resolved(conflict.id, take)
        return result

    # -- one change ----------------------------------------------------------
    def _read_ahead(self, changes: Sequence[Change]) -> dict[tuple[str, str], _ReadAhead]:
        """The batch's CRM records, read in parallel before the changes are applied one by one."""
        records = self.records
        if len(changes) < 2:
            return {}
        wanted = {(obj, str(c.key[0])) for c in changes if (obj := c.table.partition(".")[2]) in self.reverse}

        def read(target: tuple[str, str]) -> _ReadAhead:
            count = self.writes.count(*target)
            try:
                return _ReadAhead(count, records.fetch(*target))
            except CrmError:
                return _ReadAhead(-1, None)  # read again, with retries, when applied

        with ThreadPoolExecutor(min(self.readers, len(wanted)) or 1, thread_name_prefix="crm-read") as pool:
            return dict(zip(wanted, pool.map(read, wanted), strict=True))

    def _current(self, obj: str, crm_id: str, ahead: _ReadAhead | None) -> dict[str, Any] | None:
        if ahead is not None and ahead.writes == self.writes.count(obj, crm_id):
            return ahead.record
        attempt = 1
        while True:
            try:
                return self.records.fetch(obj, crm_id)
            except CrmError as exc:
                result = exc.result
                if result.outcome is Outcome.PERMANENT:
                    raise Rejected(f"cannot read {obj} {crm_id} from the CRM: {result.error}") from None
                # The CRM is down, not this record: wait it out (health reports the stall).
                wait = backoff(min(attempt, self.retry.max_attempts), self.retry, result.retry_after)
                log.warning("CRM read failed; retrying", object=obj, crm_id=crm_id, error=result.error, wait_s=wait)
                if self.stop.wait(wait):
                    raise Interrupted() from None
                attempt += 1

    def _apply(self, rent: ReverseEntity, obj: str, crm_id: str, change: Change, ahead: _ReadAhead | None) -> str:
        position = str(change.position)
        raw = self._current(obj, crm_id, ahead)
        if raw is None:
            return self._deleted(rent, obj, crm_id, position)
        # The CRM's own modification time, where the record has one, is when the edit happened.
        change.commit_ts = self.records.modified_at(raw) or change.commit_ts
        crm = self.crm.comparable(obj, raw)
        ext = raw.get("external_id") or self.two_way.erp_keys(obj, [crm_id]).get(crm_id, (None, None))[1]
        if ext is None:
            if rent.insert and (rent.insert_when is None or rent.insert_when({None: crm})):
                return self._insert(rent, obj, crm_id, raw, crm, change)
            return "not_ours"  # made in the CRM, and this mapping does not create ERP rows from it
        key = rent.key_of_external_id(str(ext))
        if key is None:
            raise Rejected(f"external id {ext!r} of {obj} {crm_id} does not name a {rent.name} row")
        row = self._row(rent, key)
        if row is None:
            return "gone"  # the ERP row was deleted; its own change removes the CRM record
        erp_rec = self._forward(rent, row)
        base = self.two_way.last_record(rent.name, str(ext))
        parked = self.two_way.open_fields(rent.name, str(ext))
        erp_ts = instant(rent.erp_ts({None: row})) if rent.erp_ts is not None else None
        crm_ts = instant(raw.get(rent.crm_ts_field)) if rent.crm_ts_field else None
        values: dict[str, Any] = {}
        crm_changed = False
        sides = Sides(rent.name, str(ext), crm_id, base, crm, erp_ts, crm_ts)
        for rf in rent.fields.values():
            if rf.name in parked:
                continue
            b = base.get(rf.name) if base else None
            crm_changed = crm_changed or base is None or not same(crm.get(rf.name), b)
            # A field that only flows CRM -> ERP has no ERP side to change: its base stands in.
            d = judge(self.two_way, rf, sides, erp_rec.get(rf.name) if rf.direction == "both" else b)
            if d.take is Take.CRM:
                values[rf.column] = rf.expr({None: crm})
            elif d.take is Take.PARK:
                parked.add(rf.name)
        for lk in rent.lookups:
            b = base.get(lk.field) if base else None
            if base is not None and same(crm.get(lk.field), b):
                continue
            crm_changed = True
            if not same(crm.get(lk.field), erp_rec.get(lk.field)):
                values.update(self._parent_columns(rent, lk.entity, lk.columns, crm.get(lk.field), lk.required, obj))
        if base is not None and not crm_changed:
            if all(same(crm[f], v) for f, v in base.items() if f in crm):
                metrics.ECHOES_SUPPRESSED.labels("crm_to_erp", "ledger").inc()
                return "echo"  # the CRM holds what both sides agreed on: our own write coming back
            return "ignored"  # only fields the ERP owns (erp_to_crm) changed in the CRM
        outcome = "unchanged"
        if values:
            written = self.writer.write(
                RowWrite(
                    rent.entity.table,
                    "update",
                    key=dict(zip(rent.entity.key, rent.entity.key_of(row), strict=True)),
                    values=values,
                    audit=rent.audit,
                    returning=rent.entity.columns,
                )
            )
            if written.row is None:
                return "gone"
            log.info(
                "CRM change written to the ERP", entity=rent.name, erp_key=ext, crm_id=crm_id, columns=sorted(values)
            )
            self._observe(rent, change)
            outcome = "written"
            # The row as our transaction left it: the agreed state is what we wrote, not a later edit.
            erp_rec = self._forward(rent, written.row)
        return self._settle(rent, obj, crm_id, str(ext), erp_rec, crm, base, parked, outcome, position)

    def _settle(
        self,
        rent: ReverseEntity,
        obj: str,
        crm_id: str,
        ext: str,
        erp_rec: dict[str, Any],
        crm: dict[str, Any],
        base: dict[str, Any] | None,
        parked: set[str],
        outcome: str,
        position: str,
    ) -> str:
        """Send the CRM what it lacks of the ERP's view, then remember what both sides agree on."""
        send = {f: v for f, v in erp_rec.items() if f not in parked}
        differs = [f for f, v in send.items() if not same(v, crm.get(f))]
        agreed = dict(erp_rec)
        for f in parked:
            agreed[f] = base.get(f) if base else crm.get(f)
        op = self._operation(rent, ext, crm_id, send)
        direction = "crm_to_erp" if outcome in ("written", "inserted") else "erp_to_crm"
        if differs or outcome == "inserted":
            self._send(op)
            if outcome == "unchanged":
                outcome = "sent"
        self.two_way.agreed(
            entity=rent.name,
            erp_key=ext,
            crm_object=obj,
            crm_id=crm_id,
            record=agreed,
            payload_hash=self._operation(rent, ext, crm_id, erp_rec).payload_hash,
            direction=direction,
            position=position,
        )
        return outcome

    def _insert(
        self, rent: ReverseEntity, obj: str, crm_id: str, raw: dict[str, Any], crm: dict[str, Any], change: Change
    ) -> str:
        ctx: dict[str | None, Any] = {None: crm}
        values: dict[str, Any] = {rf.column: rf.expr(ctx) for rf in rent.fields.values()}
        values.update({column: expr(ctx) for column, expr in rent.insert_values.items()})
        for lk in rent.insert_lookups:
            values.update(self._parent_columns(rent, lk.entity, lk.columns, crm.get(lk.field), lk.required, obj))
        adopt = None
        if rent.crm_id_column:
            values[rent.crm_id_column] = crm_id
            adopt = {rent.crm_id_column: crm_id}
        children = []
        if rent.lines is not None:
            lines = raw.get(rent.lines.source) or []
            if not isinstance(lines, list):
                raise Rejected(f"{obj} {crm_id}: {rent.lines.source!r} is not a list")
            for n, line in enumerate(lines, 1):
                line_write = RowWrite(rent.lines.table, "insert", values=self._line(rent, n, line))
                children.append(ChildWrite(line_write, dict(rent.lines.parent)))
        written = self.writer.write(
            RowWrite(
                rent.entity.table,
                "insert",
                values=values,
                audit=rent.audit,
                returning=rent.entity.columns,
                adopt_by=adopt,
                children=children,
            )
        )
        if written.row is None:
            raise Rejected(f"{obj} {crm_id}: the insert into {rent.entity.table} returned no row")
        key = rent.entity.key_of(written.row)
        ext = rent.entity.external_id_of(key)
        if written.inserted:
            self._observe(rent, change)
        erp_rec = self._forward(rent, written.row)
        outcome = "inserted" if written.inserted else "written"
        return self._settle(rent, obj, crm_id, ext, erp_rec, crm, None, set(), outcome, str(change.position))

    def _line(self, rent: ReverseEntity, n: int, line: Any) -> dict[str, Any]:
        assert rent.lines is not None
        if not isinstance(line, dict):
            raise Rejected(f"line {n} is not an object")
        item = self.crm.comparable("line_item", line)
        values = {column: expr({None: item}) for column, expr in rent.lines.values.items()}
        for column, lk in rent.lines.lookups.items():
            target = self.planner.entities[lk.entity]
            ref = item.get(lk.crm_field)
            if ref in (None, ""):
                raise Rejected(f"line {n} has no {lk.crm_field}; every line needs one to fill {column}")
            hit = self.two_way.erp_keys(target.object, [str(ref)]).get(str(ref))
            key = rent.parent_keys[lk.entity](hit[1]) if hit else None
            row = self._row_of(lk.entity, key) if key else None
            if row is None:
                raise Rejected(
                    f"line {n}: {target.object} {ref} is not synced with an ERP {lk.entity} row; "
                    f"sync it first, then `replicator dlq replay`"
                )
            values[column] = row[lk.column]
        return values

    def _parent_columns(
        self, rent: ReverseEntity, entity: str, columns: tuple[str, ...], ref: Any, required: bool, obj: str
    ) -> dict[str, Any]:
        if ref in (None, ""):
            if required:
                raise Rejected(f"{obj} has no {entity} reference, and {rent.name} requires one")
            return dict.fromkeys(columns)
        parent = self.planner.entities[entity]
        hit = self.two_way.erp_keys(parent.object, [str(ref)]).get(str(ref))
        inverter = rent.parent_keys.get(entity)
        key = inverter(hit[1]) if hit and inverter else None
        row = self._row_of(entity, key) if key else None
        if row is None:
            raise Rejected(
                f"{parent.object} {ref} is not synced with an ERP {entity} row; "
                "sync it first, then `replicator dlq replay`"
            )
        return dict(zip(columns, parent.key_of(row), strict=True))

    def _deleted(self, rent: ReverseEntity, obj: str, crm_id: str, position: str) -> str:
        hit = self.two_way.erp_keys(obj, [crm_id]).get(crm_id)
        if hit is None or rent.delete == "ignore":
            return "ignored"
        key = rent.key_of_external_id(hit[1])
        row = self._row(rent, key) if key else None
        if row is not None:
            key_values = dict(zip(rent.entity.key, rent.entity.key_of(row), strict=True))
            self.writer.write(RowWrite(rent.entity.table, "delete", key=key_values))
        self.two_way.forget(rent.name, hit[1], position)
        return "deleted"

    # -- helpers -------------------------------------------------------------
    def _row(self, rent: ReverseEntity, key: tuple[Any, ...]) -> Row | None:
        return self._row_of(rent.name, key)

    def _row_of(self, entity_name: str, key: tuple[Any, ...]) -> Row | None:
        entity = self.planner.entities[entity_name]
        rows = self.reader.rows_by_key(entity.table, entity.key, [key], types=entity.key_types)
        return next(iter(rows.values()), None)

    def _forward(self, rent: ReverseEntity, row: Row) -> dict[str, Any]:
        """The ERP row as the ERP -> CRM direction would send it."""
        key = rent.entity.key_of(row)
        change = Change("erp", rent.entity.table, Op.READ, key, None, row, Position("two-way", 0))
        planned = self.planner.plan([Target(rent.entity, key, change, row)], self.reader, self.store.crm_ids, no_hashes)
        p = planned[0]
        if p.error:
            raise Rejected(p.error)
        return dict(p.op.record) if p.op is not None else {}

    @staticmethod
    def _operation(rent: ReverseEntity, ext: str, crm_id: str, record: dict[str, Any]) -> Operation:
        return make_operation(rent.entity, ext, Action.UPSERT, record, crm_id)

    def _send(self, op: Operation) -> None:
        attempt = 1
        while True:
            result = self.crm.apply([op], self.store)[0]
            if result.outcome is Outcome.OK:
                if op.crm_id:
                    self.writes.wrote(op.object, op.crm_id)
                return
            if result.outcome is Outcome.PERMANENT or attempt >= self.retry.max_attempts:
                raise Rejected(f"the CRM refused the record: {result.error}")
            if self.stop.wait(backoff(attempt, self.retry, result.retry_after)):
                raise Interrupted()
            attempt += 1

    @staticmethod
    def _observe(rent: ReverseEntity, change: Change) -> None:
        if change.commit_ts is not None:
            lag = time.time() - change.commit_ts.timestamp()
            metrics.CRM_TO_ERP_SECONDS.labels(rent.name).observe(max(0.0, lag))

    def _dead_letter(self, rent: ReverseEntity, crm_id: str, change: Change, reason: str) -> None:
        self.store.dead_letter(
            entity=rent.name,
            erp_key=f"crm:{crm_id}",
            op=change.op.value,
            reason=reason,
            payload={"crm_id": crm_id, "record": change.after, "before": change.before},
            source_table=change.table,
            position=str(change.position),
        )
        metrics.DEAD_LETTERS.labels(rent.name).inc()
        log.error("dead letter", entity=rent.name, crm_id=crm_id, reason=reason)
