"""Backfill: read every mapped row through the same planner, processor and sink.

Entities go parents first. Each page's last key is checkpointed, so an
interrupted backfill resumes where it stopped; payloads the CRM already holds
are skipped by hash, so a repeated backfill costs reads, not CRM calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from replicator.change import Change, Op, Position
from replicator.mapping.entity import Entity
from replicator.pipeline.processor import BatchReport, Processor

Progress = Callable[[str, int, int], None]  # entity, rows done, rows total


@dataclass
class BackfillResult:
    entity: str
    rows: int
    report: BatchReport


def _stream(entity: Entity) -> str:
    return f"backfill:{entity.name}"


def backfill(
    processor: Processor,
    entities: list[Entity],
    *,
    page_size: int = 500,
    restart: bool = False,
    progress: Progress | None = None,
) -> list[BackfillResult]:
    from replicator.state.budget import Priority

    # Live changes come first in the CRM's API budget: a backfill takes what they leave.
    sink: Any = processor.sink
    previous = getattr(sink, "priority", None)
    if previous is not None:
        sink.priority = Priority.BACKFILL
    try:
        return _backfill(processor, entities, page_size=page_size, restart=restart, progress=progress)
    finally:
        if previous is not None:
            sink.priority = previous


def _backfill(
    processor: Processor, entities: list[Entity], *, page_size: int, restart: bool, progress: Progress | None
) -> list[BackfillResult]:
    store, reader = processor.store, processor.reader
    saved = {c["stream"]: c for c in store.checkpoints()}
    results = []
    for entity in sorted(entities, key=lambda e: (e.rank, e.name)):
        stream = _stream(entity)
        after = None
        done = 0
        checkpoint = saved.get(stream)
        if checkpoint and not restart:
            if checkpoint["position"] == "done":
                after = None
            else:
                after = tuple(orjson.loads(checkpoint["position"]))
                done = int(checkpoint["offset_num"])
        total = reader.count(entity.table)
        total_report = BatchReport()
        if progress:
            progress(entity.name, done, total)
        for page in reader.scan(entity.table, entity.key, page_size=page_size, after=after):
            changes = [
                Change(
                    source="backfill",
                    table=entity.table,
                    op=Op.READ,
                    key=entity.key_of(row),
                    before=None,
                    after=row,
                    position=Position(stream, done + i),
                )
                for i, row in enumerate(page)
            ]
            reports = [processor.process(changes)]
            moved = _moved_since_read(reader, entity, page, stream, done)
            if moved:
                reports.append(processor.process(moved))
            # Rows sent again were read once: `changes` counts the rows read, the rest every outcome.
            total_report.changes += reports[0].changes
            for report in reports:
                for name in ("applied", "skipped", "dead_lettered", "created"):
                    setattr(total_report, name, getattr(total_report, name) + getattr(report, name))
                total_report.errors.extend(report.errors)
            done += len(page)
            last_key = entity.key_of(page[-1])
            store.save_checkpoint(stream, orjson.dumps(list(last_key), default=str).decode(), done)
            if progress:
                progress(entity.name, done, total)
        store.save_checkpoint(stream, "done", done)
        results.append(BackfillResult(entity.name, done, total_report))
    return results


def _moved_since_read(reader: Any, entity: Entity, page: list[dict[str, Any]], stream: str, first: int) -> list[Change]:
    """Rows of `page` that changed or vanished while the page was on its way to the CRM.

    A service streaming beside this backfill may have written a newer state of one of these
    rows (or deleted it) before the backfill's older copy arrived and overwrote it. Re-read
    after the write, each such row goes through once more with its current state; a change
    committed after this re-read is the service's to send, and it reaches the CRM after the
    backfill's write. Related rows are not re-read: their race stays open."""
    keys = [entity.key_of(row) for row in page]
    current = reader.rows_by_key(entity.table, entity.key, keys, types=entity.key_types)
    moved = []
    for offset, (key, row) in enumerate(zip(keys, page, strict=True)):
        now = current.get(key)
        if now == row:
            continue
        gone = now is None
        moved.append(
            Change(
                source="backfill",
                table=entity.table,
                op=Op.DELETE if gone else Op.READ,
                key=key,
                before=row if gone else None,
                after=now,
                position=Position(stream, first + offset),
            )
        )
    return moved
