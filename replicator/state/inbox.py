"""The inbox: CRM change notifications, stored durably before the CRM is answered.

Webhook receivers and pollers add to it; the CRM change source reads it in `seq`
order and marks entries processed once the ERP side acknowledged them. A
notification delivered twice (same CRM, same delivery id) is stored once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True, slots=True)
class InboxEntry:
    seq: int
    crm: str
    delivery_id: str
    event: str
    object: str
    crm_id: str | None
    payload: Any
    received_at: datetime


class Inbox:
    """One connection, guarded by a lock: the HTTP server's threads share it."""

    def __init__(self, dsn: str, arrived: threading.Event | None = None) -> None:
        # Set on every stored notification: a reader in the same process wakes at once instead
        # of at its next poll of the table (other processes' readers still poll).
        self.arrived = arrived or threading.Event()
        self._dsn = dsn
        self._conn = psycopg.connect(dsn, autocommit=True, application_name="replicator-inbox")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def _execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except psycopg.OperationalError:
                if not self._conn.closed:
                    raise
            # The server restarted since the last call: one fresh connection, one retry.
            self._conn = psycopg.connect(self._dsn, autocommit=True, application_name="replicator-inbox")
            return self._conn.execute(sql, params)

    def add(self, *, crm: str, delivery_id: str, event: str, object: str, crm_id: str | None, payload: Any) -> bool:
        """Store one notification (committed when this returns); False when it was already stored."""
        row = self._execute(
            "INSERT INTO replicator.inbox (crm, delivery_id, event, object, crm_id, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (crm, delivery_id) DO NOTHING RETURNING seq",
            (crm, delivery_id, event, object, crm_id, Jsonb(payload)),
        ).fetchone()
        if row is not None:
            self.arrived.set()
        return row is not None

    def pending(self, crm: str, exclude: list[int], limit: int) -> list[InboxEntry]:
        """Unprocessed entries of one CRM, oldest first, except those in `exclude` (read, not yet done).

        Not "seq > last read": sequence numbers are taken before commit, so a webhook
        stored a moment later can commit a lower seq than one already read."""
        rows = self._execute(
            "SELECT seq, crm, delivery_id, event, object, crm_id, payload, received_at FROM replicator.inbox "
            "WHERE processed_at IS NULL AND crm = %s AND NOT (seq = ANY(%s)) ORDER BY seq LIMIT %s",
            (crm, exclude, limit),
        ).fetchall()
        return [InboxEntry(*row) for row in rows]

    def mark_processed(self, crm: str, seqs: list[int]) -> int:
        """These entries are done (applied, skipped or dead-lettered); the count marked."""
        if not seqs:
            return 0
        cur = self._execute(
            "UPDATE replicator.inbox SET processed_at = now() "
            "WHERE crm = %s AND seq = ANY(%s) AND processed_at IS NULL",
            (crm, seqs),
        )
        return cur.rowcount

    def backlog(self, crm: str) -> int:
        row = self._execute(
            "SELECT count(*) FROM replicator.inbox WHERE crm = %s AND processed_at IS NULL", (crm,)
        ).fetchone()
        return int(row[0]) if row else 0
