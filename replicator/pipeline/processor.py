"""One batch through mapping and the sink, with retries, dead letters and state.

When `process` returns, every change of the batch is resolved: applied,
skipped, or parked as a dead letter. Only then may the caller acknowledge the
batch's source positions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from replicator.change import Change, Op
from replicator.config.model import RetryConfig
from replicator.mapping.plan import Planned, Planner, Skip, Target, no_hashes
from replicator.mapping.reader import RowReader
from replicator.ops import metrics
from replicator.pipeline.coalesce import coalesce
from replicator.pipeline.retry import backoff
from replicator.pipeline.two_way import ForwardGuard
from replicator.sinks.base import Action, Operation, Outcome, Result, Sink
from replicator.state.store import StateStore, SyncRecord

log = structlog.get_logger()

_STATUS = {Action.UPSERT: "synced", Action.ARCHIVE: "archived", Action.DELETE: "deleted"}


class Interrupted(Exception):
    """Stop was requested while a batch waited to retry; nothing of it is acknowledged."""


@dataclass
class BatchReport:
    changes: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    created: int = 0
    errors: list[str] = field(default_factory=list)


class Processor:
    def __init__(
        self,
        planner: Planner,
        reader: RowReader,
        store: StateStore,
        sink: Sink,
        retry: RetryConfig,
        stop: threading.Event | None = None,
        *,
        guard: ForwardGuard | None = None,
        gate: threading.Lock | None = None,
    ) -> None:
        self.planner = planner
        self.reader = reader
        self.store = store
        self.sink = sink
        self.retry = retry
        self.stop = stop or threading.Event()
        # Two-way sync: the guard trims updates of two-way records to what the ERP may write;
        # the gate keeps this direction and the other from working on records at the same time.
        self.guard = guard
        self.gate = gate or threading.Lock()

    def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
        """`force` re-sends records even when the CRM acknowledged the same payload before."""
        if not changes:
            return BatchReport()
        with self.gate:
            return self._process(changes, force)

    def _process(self, changes: Sequence[Change], force: bool) -> BatchReport:
        report = BatchReport(changes=len(changes))
        metrics.BATCH_SIZE.observe(len(changes))
        folded = coalesce(changes)
        metrics.COALESCED.inc(len(changes) - len(folded))
        for change in folded:
            if change.op is Op.TRUNCATE:
                self._report_truncate(change)
        targets = self.planner.targets(folded, self.reader)
        targets = self.planner.missing_parents(targets, self.store.crm_ids, self.reader) + targets
        # Writes go parents first (a child's lookup needs its parent's CRM id); deletes go
        # children first (a CRM may refuse to delete a parent that still has children).
        ranks = self.planner.ranks()
        passes = [(r, False) for r in ranks] + [(r, True) for r in reversed(ranks)]
        for rank, deleting in passes:
            group = [t for t in targets if t.entity.rank == rank and t.deleted is deleting]
            if group:
                self._process_rank(group, report, force)
        return report

    def _process_rank(self, group: list[Target], report: BatchReport, force: bool) -> None:
        hashes = no_hashes if force else self.store.last_hashes
        planned = self.planner.plan(group, self.reader, self.store.crm_ids, hashes)
        records: list[SyncRecord] = []
        work: list[Planned] = []
        # Counted per batch: a labelled counter costs a lock and a lookup per increment.
        outcomes: Counter[tuple[str, str, str]] = Counter()
        for p in planned:
            if p.skip is not None:
                report.skipped += 1
                outcomes[(p.target.entity.name, p.target.change.op, p.skip)] += 1
                if p.skip is Skip.ECHO:
                    metrics.echoes("erp_to_crm", "ledger").inc()
            elif p.error is not None:
                self._fail(p, p.error, 1, records, report)
            else:
                work.append(p)
        if work and self.guard is not None:
            self.guard.review(work)
        if work:
            self._apply(work, records, report, outcomes)
        self.store.record(records)
        for (entity, op_code, outcome), n in outcomes.items():
            metrics.EVENTS_OUT.labels(entity, op_code, outcome).inc(n)

    def _apply(
        self,
        work: list[Planned],
        records: list[SyncRecord],
        report: BatchReport,
        outcomes: Counter[tuple[str, str, str]],
    ) -> None:
        pending = work
        attempt = 1
        while pending:
            ops: list[Operation] = [p.op for p in pending if p.op is not None]
            results = self.sink.apply(ops, self.store)
            acked_at = time.time()
            retry: list[tuple[Planned, Result]] = []
            for p, result in zip(pending, results, strict=True):
                assert p.op is not None
                if result.outcome is Outcome.OK:
                    records.append(self._synced(p, result))
                    outcomes[(p.target.entity.name, p.target.change.op, "ok")] += 1
                    report.applied += 1
                    report.created += int(result.created)
                    self._observe_ack(p, acked_at)
                elif result.outcome is Outcome.PERMANENT:
                    self._fail(p, result.error or "rejected", attempt, records, report)
                else:
                    retry.append((p, result))
            if not retry:
                return
            if attempt >= self.retry.max_attempts:
                if all(_crm_unavailable(r) for _, r in retry):
                    # The CRM is down, not these records: parking the whole stream in the
                    # dead-letter table would only make work for ops. Keep retrying at the
                    # longest backoff; /healthz reports the stall and alerts fire.
                    log.error("CRM unreachable; retrying until it answers", pending=len(retry), error=retry[0][1].error)
                    attempt = self.retry.max_attempts - 1
                else:
                    for p, result in retry:
                        self._fail(p, f"gave up after {attempt} attempts: {result.error}", attempt, records, report)
                    return
            wait = backoff(attempt, self.retry, max((r.retry_after or 0.0) for _, r in retry) or None)
            for p, result in retry:
                metrics.RETRIES.labels(p.target.entity.name, _reason(result)).inc()
            log.warning("retrying", count=len(retry), attempt=attempt, wait_s=round(wait, 2), error=retry[0][1].error)
            if self.stop.wait(wait):
                # Keep what already succeeded: its state is written, its CRM effect is done.
                self.store.record(records)
                records.clear()
                raise Interrupted()
            pending = [p for p, _ in retry]
            attempt += 1

    def _synced(self, p: Planned, result: Result) -> SyncRecord:
        op = p.op
        assert op is not None
        # Op and Action are str enums: the members are their values (`.value` is a slow descriptor).
        return SyncRecord(
            entity=op.entity,
            erp_key=op.external_id,
            status=_STATUS[op.action],
            last_op=p.target.change.op,
            action=op.action,
            crm_object=op.object,
            crm_id=result.crm_id or op.crm_id,
            payload_hash=op.payload_hash,
            position=str(p.target.change.position),
            id_changed=result.crm_id is not None and result.crm_id != op.crm_id,
            record=(
                self.guard.agreed(op.entity, op.external_id, op.object, result.crm_id or op.crm_id)
                if self.guard is not None
                else None
            ),
        )

    def _fail(self, p: Planned, reason: str, attempts: int, records: list[SyncRecord], report: BatchReport) -> None:
        """Dead-letter the record and mark it failed in sync_state, where ops look first."""
        erp_key = self._dead_letter(p, reason, p.op, attempts)
        records.append(
            SyncRecord(
                entity=p.target.entity.name,
                erp_key=erp_key,
                status="failed",
                last_op=p.target.change.op.value,
                action=p.op.action.value if p.op else None,
                crm_id=p.op.crm_id if p.op else None,
                position=str(p.target.change.position),
                error=reason,
            )
        )
        report.dead_lettered += 1
        report.errors.append(reason)

    def _dead_letter(self, p: Planned, reason: str, op: Operation | None, attempts: int) -> str:
        entity = p.target.entity
        try:
            erp_key = entity.external_id_of(p.target.key)
        except Exception:
            erp_key = repr(p.target.key)
        payload = {"key": list(p.target.key), "record": op.record if op else None, "action": op.action if op else None}
        self.store.dead_letter(
            entity=entity.name,
            erp_key=erp_key,
            op=p.target.change.op.value,
            reason=reason,
            payload=payload,
            source_table=p.target.change.table,
            position=str(p.target.change.position),
            attempts=attempts,
        )
        metrics.DEAD_LETTERS.labels(entity.name).inc()
        metrics.EVENTS_OUT.labels(entity.name, p.target.change.op.value, "dead_letter").inc()
        log.error("dead letter", entity=entity.name, erp_key=erp_key, reason=reason)
        return erp_key

    def _report_truncate(self, change: Change) -> None:
        for entity in self.planner.entities.values():
            if entity.table != change.table:
                continue
            reason = (
                f"TRUNCATE of {change.table} was not propagated: the CRM still holds its records; "
                "run `replicator reconcile --repair` to remove them, then discard this letter"
            )
            self.store.dead_letter(
                entity=entity.name,
                erp_key="*",
                op="t",
                reason=reason,
                payload=None,
                source_table=change.table,
                position=str(change.position),
            )
            metrics.EVENTS_OUT.labels(entity.name, "t", "reported").inc()
            log.warning("truncate reported", table=change.table, entity=entity.name)

    @staticmethod
    def _observe_ack(p: Planned, acked_at: float) -> None:
        ts = p.target.change.commit_ts
        if ts is not None:
            metrics.commit_to_ack(p.target.entity.name).observe(max(0.0, acked_at - ts.timestamp()))


def _crm_unavailable(result: Result) -> bool:
    """No answer, a rate limit, or a gateway saying the CRM is down: the CRM's state, not the record's."""
    return result.status_code in (None, 0, 429, 502, 503, 504)


def _reason(result: Result) -> str:
    if result.status_code:
        return str(result.status_code)
    return "error"
