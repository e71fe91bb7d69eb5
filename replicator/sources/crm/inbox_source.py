"""The CRM change source: inbox notifications in, full current CRM records out as `Change`s.

A notification (a webhook, or a change the poller found) only says "look at this record
again": each read takes pending inbox entries, collapses those about the same record into
one fetch of its current state, and hands one Change per record to the pipeline.

Offsets are per-process read sequence numbers, as for the Kafka source: read n holds a
set of inbox seqs; acknowledging n marks every seq read in reads <= n processed. Seqs
read but not yet acknowledged are excluded from the next reads, and forgotten at
(re)connect, so what was not acknowledged is read again (at least once).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from replicator.change import Change, Op, Position
from replicator.ops import metrics
from replicator.state.inbox import Inbox, InboxEntry

log = structlog.get_logger()

_POLL_S = 0.15  # how often an idle read looks at the inbox table again


class CrmRecords(Protocol):
    def fetch(self, object: str, crm_id: str) -> dict[str, Any] | None: ...
    def modified_at(self, record: dict[str, Any]) -> datetime | None: ...


class ReadBook:
    """Which inbox seqs each read took, until the pipeline acknowledges that read."""

    def __init__(self) -> None:
        self._seq = 0
        self._reads: dict[int, list[int]] = {}

    @property
    def seq(self) -> int:
        """The number of the last recorded read (0: none yet)."""
        return self._seq

    def record(self, inbox_seqs: Iterable[int]) -> int:
        """A read took these inbox seqs; its read number."""
        self._seq += 1
        self._reads[self._seq] = list(inbox_seqs)
        return self._seq

    def unacked(self) -> list[int]:
        return [s for seqs in self._reads.values() for s in seqs]

    def ack(self, read: int) -> list[int]:
        """Reads up to `read` are processed: the inbox seqs to mark, each handed out once."""
        done = sorted(n for n in self._reads if n <= read)
        return [s for n in done for s in self._reads.pop(n)]

    def reset(self) -> None:
        """A new session: unacknowledged reads come again. The read number keeps counting, so an
        acknowledgement from before the reset can never match a read after it."""
        self._reads.clear()


@dataclass(slots=True)
class RecordNotes:
    """The entries of one read about one record, oldest first."""

    object: str
    crm_id: str
    entries: list[InboxEntry] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return any(e.event.endswith(".created") for e in self.entries)

    @property
    def newest(self) -> InboxEntry:
        return self.entries[-1]

    def last_known(self) -> dict[str, Any] | None:
        """The record as the newest delete notification (else the newest notification) described it."""
        deletes = [e for e in self.entries if e.event.endswith(".deleted")]
        for entry in reversed(deletes or self.entries):
            data = entry.payload.get("data") if isinstance(entry.payload, dict) else None
            if isinstance(data, dict):
                return data
        return None


def collapse(entries: Iterable[InboxEntry], objects: set[str]) -> list[RecordNotes]:
    """Group entries by record, in the order each record was first mentioned; entries of objects
    not in `objects`, or naming no record, are dropped (they are acknowledged with the read)."""
    notes: dict[tuple[str, str], RecordNotes] = {}
    for entry in entries:
        if entry.object not in objects or not entry.crm_id:
            continue
        key = (entry.object, entry.crm_id)
        if key not in notes:
            notes[key] = RecordNotes(entry.object, entry.crm_id)
        notes[key].entries.append(entry)
    return list(notes.values())


def to_change(
    crm: str, notes: RecordNotes, record: dict[str, Any] | None, commit_ts: datetime | None, position: Position
) -> Change:
    """One Change for a record: gone (404) is a delete, whatever the notifications said."""
    if record is None:
        op, before = Op.DELETE, notes.last_known()
    else:
        op, before = (Op.CREATE if notes.created else Op.UPDATE), None
    return Change(
        source=crm,
        table=f"crm.{notes.object}",
        op=op,
        key=(notes.crm_id,),
        before=before,
        after=record,
        position=position,
        commit_ts=commit_ts or notes.newest.received_at,
    )


class InboxSource:
    """A StreamSource over one CRM's inbox.

    A fetch that fails (CrmError, transient or not) raises out of `read` before the read is
    recorded: nothing of it was handed out, so the runner reconnects with its backoff and
    health reporting, and the same entries are read again. Retrying inside would hide a CRM
    outage from the health check and hold the reader thread without bound.
    """

    def __init__(self, crm: str, inbox: Inbox, records: CrmRecords, *, objects: set[str], fetch: bool = True) -> None:
        # fetch=False hands out which records changed, not their state: a consumer that reads the
        # current record itself, at the moment it applies it, never works from a snapshot that the
        # other direction has overwritten meanwhile.
        self.fetch = fetch
        self.crm = crm
        self.name = f"crm:{crm}"
        self.inbox = inbox
        self.records = records
        self.objects = set(objects)
        self._book = ReadBook()
        self._lock = threading.Lock()  # the book: reads in the reader thread, acks in the main loop

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._book.reset()

    def close(self) -> None:
        with self._lock:
            self._book.reset()

    def send_status(self) -> None:
        """Nothing to keep alive: the inbox is a table."""

    @property
    def committed(self) -> int:
        return self._book.seq

    # -- reading -----------------------------------------------------------
    def _pending(self, timeout: float, limit: int) -> list[InboxEntry]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                exclude = self._book.unacked()
            entries = self.inbox.pending(self.crm, exclude, limit)
            remaining = deadline - time.monotonic()
            if entries or remaining <= 0:
                return entries
            if self.inbox.arrived.wait(min(_POLL_S, remaining)):
                self.inbox.arrived.clear()

    def read(self, timeout: float, max_changes: int = 1000) -> list[Change]:
        entries = self._pending(timeout, max(1, max_changes))
        if not entries:
            return []
        fetched: list[tuple[RecordNotes, dict[str, Any] | None]] = []
        for notes in collapse(entries, self.objects):
            if self.fetch:
                fetched.append((notes, self.records.fetch(notes.object, notes.crm_id)))
            else:
                gone = notes.newest.event.endswith(".deleted")
                fetched.append((notes, None if gone else {"id": notes.crm_id}))
        with self._lock:
            n = self._book.record(e.seq for e in entries)
        position = Position(self.name, n)
        changes = [
            to_change(
                self.crm, notes, record, self.records.modified_at(record) if record and self.fetch else None, position
            )
            for notes, record in fetched
        ]
        for (table, op), count in Counter((c.table, c.op.value) for c in changes).items():
            metrics.EVENTS_IN.labels(self.name, table, op).inc(count)
        skipped = len(entries) - sum(len(notes.entries) for notes, _ in fetched)
        if skipped:
            log.debug("inbox entries with no CRM -> ERP mapping acknowledged", crm=self.crm, count=skipped)
        return changes

    def ack(self, position: Position) -> None:
        with self._lock:
            seqs = self._book.ack(position.offset)
        self.inbox.mark_processed(self.crm, seqs)

    # -- observing ---------------------------------------------------------
    def sample_backlog(self) -> None:
        """Sets the inbox backlog gauge (the service samples gauges every few seconds)."""
        metrics.INBOX_BACKLOG.labels(self.crm).set(self.inbox.backlog(self.crm))
