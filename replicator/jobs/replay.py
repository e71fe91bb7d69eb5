"""Dead-letter replay: re-sync each record from the ERP's current row.

Replaying the stored payload could resurrect a state the ERP has moved past;
re-reading the row applies the record's latest state instead (or its removal,
when the row is gone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from replicator.app import Parts
from replicator.change import Change, Op, Position
from replicator.state.store import DeadLetter


@dataclass
class ReplayResult:
    letter_id: int
    entity: str
    erp_key: str
    ok: bool
    detail: str = ""


def replay(parts: Parts, *, ids: Sequence[int] | None = None, entity: str | None = None) -> list[ReplayResult]:
    processor = parts.processor()
    results = []
    letters = parts.store.dead_letters(status="open", entity=entity, ids=ids)
    crm_side = [
        d for d in letters if d.erp_key.startswith(CRM_KEY_PREFIX) and (d.source_table or "").startswith("crm.")
    ]
    if crm_side:
        results += _replay_crm_side(parts, crm_side)
    for letter in letters:
        if letter in crm_side:
            continue
        ent = parts.entities.get(letter.entity)
        key = (letter.payload or {}).get("key") if isinstance(letter.payload, dict) else None
        if ent is None or letter.erp_key == "*" or key is None:
            results.append(
                ReplayResult(
                    letter.id,
                    letter.entity,
                    letter.erp_key,
                    False,
                    "nothing to replay (a report, or an unknown entity): discard it",
                )
            )
            continue
        key_t = tuple(key)
        rows = parts.reader.rows_by_key(ent.table, ent.key, [key_t], types=ent.key_types)
        row = next(iter(rows.values()), None)
        position = Position("replay", letter.id)
        if row is None:
            change = Change(
                "replay", ent.table, Op.DELETE, key_t, dict(zip(ent.key, key_t, strict=True)), None, position
            )
        else:
            change = Change("replay", ent.table, Op.READ, ent.key_of(row), None, row, position)
        report = processor.process([change])
        still_open = parts.store.dead_letters(status="open", ids=[letter.id])
        if report.dead_lettered == 0 and still_open:
            parts.store.resolve_dead_letter(letter.id, "replayed")  # nothing to send: the CRM already agrees
            still_open = []
        results.append(ReplayResult(letter.id, letter.entity, letter.erp_key, not still_open, "; ".join(report.errors)))
    return results


CRM_KEY_PREFIX = "crm:"


def _replay_crm_side(parts: Parts, letters: Sequence[DeadLetter]) -> list[ReplayResult]:
    """CRM changes that could not be written to the ERP: applied again from the CRM record's current state."""
    from replicator.crm_to_erp import build_two_way
    from replicator.pipeline.reverse import ReverseProcessor

    tw = build_two_way(parts)
    if tw is None or tw.writer is None:
        return [
            ReplayResult(d.id, d.entity, d.erp_key, False, "no mapping writes CRM changes back any more: discard it")
            for d in letters
        ]
    try:
        processor = ReverseProcessor(
            tw.reverse, parts.planner, parts.reader, parts.store, tw.two_way, tw.writer, parts.sink,
            parts.config.pipeline.retry, records=tw.records,
        )  # fmt: skip
        results = []
        for letter in letters:
            crm_id = letter.erp_key.removeprefix(CRM_KEY_PREFIX)
            change = Change(
                "replay",
                str(letter.source_table),
                Op.UPDATE,
                (crm_id,),
                None,
                {"id": crm_id},
                Position("replay", letter.id),
            )
            report = processor.process([change])
            ok = report.dead_lettered == 0
            if ok:
                parts.store.resolve_dead_letter(letter.id, "replayed")
            results.append(ReplayResult(letter.id, letter.entity, letter.erp_key, ok, "; ".join(report.errors)))
        return results
    finally:
        tw.close()
