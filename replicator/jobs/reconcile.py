"""Reconcile: does the CRM hold what the ERP says it should?

For every mapped entity it computes the expected CRM records from the current
ERP rows (same planner as the service) and compares them with what the CRM
returns, field by field. `repair` re-sends missing and different records and
removes CRM records whose ERP row is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from replicator.change import Change, Op, Position
from replicator.mapping.conflict import same
from replicator.mapping.entity import Entity
from replicator.mapping.plan import Planner, Target, no_hashes
from replicator.mapping.reader import RowReader
from replicator.sinks.base import Action, ReadableSink


@dataclass
class Difference:
    entity: str
    external_id: str
    kind: str  # missing, extra, different, duplicate, archived_mismatch
    detail: str = ""


@dataclass
class EntityReport:
    entity: str
    expected: int = 0
    found: int = 0
    matching: int = 0
    differences: list[Difference] = field(default_factory=list)


def values_equal(expected: Any, actual: Any) -> bool:
    """CRMs echo values back in their own spelling: 12.30 vs "12.3", "" vs null."""
    return same(expected, actual)


def expected_records(
    planner: Planner, reader: RowReader, entity: Entity, crm_ids: Callable[[str, Iterable[str]], dict[str, str]]
) -> dict[str, tuple[Action, dict[str, Any]]]:
    """external id -> (what the record should be, the mapped fields) for every row in the synced set."""
    out: dict[str, tuple[Action, dict[str, Any]]] = {}
    position = Position(f"reconcile:{entity.name}", 0)
    for page in reader.scan(entity.table, entity.key):
        targets = [
            Target(
                entity,
                entity.key_of(row),
                Change("reconcile", entity.table, Op.READ, entity.key_of(row), None, row, position),
                row,
            )
            for row in page
        ]
        for planned in planner.plan(targets, reader, crm_ids, no_hashes):
            if planned.op is not None:
                out[planned.op.external_id] = (planned.op.action, planned.op.record)
            elif planned.error:
                ext = entity.external_id_of(planned.target.key)
                out[ext] = (Action.UPSERT, {"__error__": planned.error})
    return out


def reconcile_entity(
    planner: Planner,
    reader: RowReader,
    sink: ReadableSink,
    entity: Entity,
    crm_ids: Callable[[str, Iterable[str]], dict[str, str]],
) -> EntityReport:
    report = EntityReport(entity.name)
    expected = expected_records(planner, reader, entity, crm_ids)
    report.expected = len(expected)
    actual: dict[str, dict[str, Any]] = {}
    for raw in sink.iter_records(entity.object):
        ext = raw.get("external_id")
        if not ext:
            continue  # created in the CRM by someone else: not ours to judge
        if ext in actual:
            report.differences.append(
                Difference(entity.name, ext, "duplicate", "two CRM records carry this external id")
            )
        actual[ext] = sink.comparable(entity.object, raw)
    report.found = len(actual)
    for ext, (action, record) in expected.items():
        got = actual.get(ext)
        if "__error__" in record:
            report.differences.append(Difference(entity.name, ext, "unmappable", record["__error__"]))
            continue
        if got is None:
            report.differences.append(Difference(entity.name, ext, "missing"))
            continue
        if sink.is_archived(entity.object, got) != (action is Action.ARCHIVE):
            want = "archived" if action is Action.ARCHIVE else "active"
            report.differences.append(Difference(entity.name, ext, "archived_mismatch", f"expected {want}"))
            continue
        diffs = [
            f"{name}: expected {value!r}, CRM has {got.get(name)!r}"
            for name, value in record.items()
            if not values_equal(value, got.get(name))
        ]
        if diffs:
            report.differences.append(Difference(entity.name, ext, "different", "; ".join(diffs)))
        else:
            report.matching += 1
    # A CRM whose deletes archive (HubSpot's recycle bin) lists deleted records as archived ones.
    removed_shows_archived = entity.on_delete == "archive" or getattr(sink, "deletes_archive", False)
    for ext in actual.keys() - expected.keys():
        if removed_shows_archived and sink.is_archived(entity.object, actual[ext]):
            continue  # removed in the ERP and archived in the CRM, as configured
        report.differences.append(
            Difference(entity.name, ext, "extra", "the CRM holds a record whose ERP row is gone or filtered out")
        )
    return report


def reconcile_all(
    parts: Any, *, entity: str | None = None, repair: bool = False, console: Any = None
) -> list[EntityReport]:
    """Reconcile each entity, parents first; with `repair`, fix what differs and check again."""
    from replicator.sinks.base import Operation

    entities = sorted(parts.entities.values(), key=lambda e: (e.rank, e.name))
    reports = []
    for ent in entities:
        if entity and ent.name != entity:
            continue
        report = reconcile_entity(parts.planner, parts.reader, parts.sink, ent, parts.store.crm_ids)
        if repair and report.differences:
            if console is not None:
                console.print(f"{ent.name}: repairing {len(report.differences)} difference(s)")
            processor = parts.processor()
            resend = {
                d.external_id for d in report.differences if d.kind in ("missing", "different", "archived_mismatch")
            }
            extra = [d.external_id for d in report.differences if d.kind == "extra"]
            changes = []
            for page in parts.reader.scan(ent.table, ent.key):
                for row in page:
                    key = ent.key_of(row)
                    if ent.external_id_of(key) in resend:
                        changes.append(
                            Change(
                                "reconcile", ent.table, Op.READ, key, None, row, Position(f"reconcile:{ent.name}", 0)
                            )
                        )
            processor.process(changes, force=True)
            if extra and ent.on_delete != "ignore":
                action = Action.DELETE if ent.on_delete == "delete" else Action.ARCHIVE
                ops = [
                    Operation(ent.name, ent.object, action, ext, idempotency_key=f"{ent.name}:{ext}:reconcile")
                    for ext in extra
                ]
                parts.sink.apply(ops, parts.store)
            report = reconcile_entity(parts.planner, parts.reader, parts.sink, ent, parts.store.crm_ids)
        reports.append(report)
    return reports
