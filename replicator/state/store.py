"""The state store: checkpoints, id map, idempotency ledger, sync state, dead letters.

All of it lives in the `replicator` schema so that ops can query it with SQL.
One connection per store; a lock makes it safe for the sink's worker threads,
whose ledger calls are short single statements.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from replicator.sinks.base import Operation


@dataclass(slots=True)
class SyncRecord:
    """What the pipeline learned about one record after a sink call."""

    entity: str
    erp_key: str
    status: str  # synced, failed, deleted, archived, filtered
    last_op: str
    action: str | None = None
    crm_object: str | None = None
    crm_id: str | None = None
    payload_hash: str | None = None
    position: str | None = None
    error: str | None = None
    # The CRM id differs from the one the id map held: only then is the id map written.
    id_changed: bool = True
    # Two-way entities: the CRM-shaped values both sides now agree on (sync_state.last_record).
    record: dict[str, Any] | None = None


@dataclass(slots=True)
class DeadLetter:
    id: int
    entity: str
    erp_key: str
    source_table: str | None
    op: str
    reason: str
    payload: Any
    source_position: str | None
    attempts: int
    status: str
    first_seen: datetime
    last_seen: datetime


# A CRM id re-used by another key means that key's record was merged or claimed:
# the newest owner wins, so the stale mapping goes first.
_DROP_STALE_ID = "DELETE FROM replicator.id_map WHERE crm_object = %s AND crm_id = %s AND (entity, erp_key) <> (%s, %s)"
# The same two statements for a whole batch: one round trip each instead of one per record.
_DROP_STALE_IDS = (
    "DELETE FROM replicator.id_map m USING unnest(%b::text[], %b::text[], %b::text[], %b::text[]) "
    "AS n(entity, erp_key, crm_object, crm_id) "
    "WHERE m.crm_object = n.crm_object AND m.crm_id = n.crm_id AND (m.entity, m.erp_key) <> (n.entity, n.erp_key) "
    # Lets the planner probe the (crm_object, crm_id) index instead of hashing the whole map.
    "AND m.crm_object = ANY(%b::text[]) AND m.crm_id = ANY(%b::text[])"
)
_UPSERT_IDS = (
    "INSERT INTO replicator.id_map (entity, erp_key, crm_object, crm_id) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[]) "
    "ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, "
    "crm_object = excluded.crm_object, updated_at = now()"
)
_UPSERT_ID = (
    "INSERT INTO replicator.id_map (entity, erp_key, crm_object, crm_id) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, "
    "crm_object = excluded.crm_object, updated_at = now()"
)
_STATE_FAILED = (
    "INSERT INTO replicator.sync_state (entity, erp_key, crm_id, status, last_op, last_action, "
    "last_position, last_error, last_error_at, attempts) "
    "VALUES (%s, %s, %s, 'failed', %s, %s, %s, %s, now(), 1) "
    "ON CONFLICT (entity, erp_key) DO UPDATE SET status = 'failed', last_op = excluded.last_op, "
    "last_action = excluded.last_action, last_position = excluded.last_position, "
    "last_error = excluded.last_error, last_error_at = now(), "
    "attempts = replicator.sync_state.attempts + 1, updated_at = now()"
)
# One statement per batch: the rows arrive as parallel arrays.
_STATE_OK = (
    "INSERT INTO replicator.sync_state (entity, erp_key, crm_id, status, last_op, last_action, "
    "last_hash, last_position, last_synced_at) "
    "SELECT *, now() FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[]) "
    "ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, "
    "status = excluded.status, last_op = excluded.last_op, last_action = excluded.last_action, "
    "last_hash = excluded.last_hash, last_position = excluded.last_position, "
    "last_synced_at = now(), last_error = NULL, attempts = 0, updated_at = now()"
)
_LAST_RECORDS = (
    "UPDATE replicator.sync_state s SET last_record = n.record, last_direction = 'erp_to_crm' "
    "FROM unnest(%b::text[], %b::text[], %b::jsonb[]) AS n(entity, erp_key, record) "
    "WHERE s.entity = n.entity AND s.erp_key = n.erp_key"
)
_LAST_HASHES = (
    "SELECT erp_key, last_hash, CASE WHEN status = 'synced' AND last_direction = 'crm_to_erp' "
    "THEN 'written' ELSE status END FROM replicator.sync_state WHERE entity = %s AND erp_key = ANY(%b)"
)
_RESOLVE_LETTERS = (
    "UPDATE replicator.dead_letters SET status = 'replayed', resolved_at = now() "
    "WHERE status = 'open' AND (entity, erp_key) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)


def _json_default(value: Any) -> Any:
    return str(value)


class StateStore:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        # Prepared statements, but planned for each call's values: a generic plan chosen while
        # id_map was empty (a first sync) would keep scanning the whole table as it grows.
        self._conn = psycopg.connect(
            dsn, autocommit=True, options="-c plan_cache_mode=force_custom_plan", application_name="replicator-state"
        )
        self._lock = threading.Lock()
        self._written = 0
        self._analyzed_at = 0

    def close(self) -> None:
        self._conn.close()

    # -- checkpoints -------------------------------------------------------
    def save_checkpoint(self, stream: str, position: str, offset: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO replicator.checkpoints (stream, position, offset_num) VALUES (%s, %s, %s) "
                "ON CONFLICT (stream) DO UPDATE SET position = excluded.position, "
                "offset_num = excluded.offset_num, updated_at = now()",
                (stream, position, offset),
            )

    def checkpoints(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.cursor(row_factory=dict_row)
            return cur.execute("SELECT * FROM replicator.checkpoints ORDER BY stream").fetchall()

    # -- id map ------------------------------------------------------------
    def crm_ids(self, entity: str, erp_keys: Iterable[str]) -> dict[str, str]:
        keys = list(set(erp_keys))
        if not keys:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT erp_key, crm_id FROM replicator.id_map WHERE entity = %s AND erp_key = ANY(%b)",
                (entity, keys),
            ).fetchall()
        return dict(rows)

    def last_hashes(self, entity: str, erp_keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        """erp_key -> (last acknowledged payload hash, status); status `written` when the last sync wrote
        the CRM's change into the ERP (an unchanged payload then is that write's echo)."""
        keys = list(set(erp_keys))
        if not keys:
            return {}
        with self._lock:
            rows = self._conn.execute(_LAST_HASHES, (entity, keys)).fetchall()
        return {k: (h, s) for k, h, s in rows}

    # -- ledger (IntentLedger) -------------------------------------------
    def begin_create(self, op: Operation) -> bool:
        with self._lock, self._conn.transaction():
            earlier = self._conn.execute(
                "SELECT 1 FROM replicator.ledger WHERE entity = %s AND erp_key = %s AND status = 'pending' LIMIT 1",
                (op.entity, op.external_id),
            ).fetchone()
            self._conn.execute(
                "INSERT INTO replicator.ledger (idempotency_key, entity, erp_key, action, payload_hash, status) "
                "VALUES (%s, %s, %s, %s, %s, 'pending') ON CONFLICT (idempotency_key) DO NOTHING",
                (op.idempotency_key, op.entity, op.external_id, op.action.value, op.payload_hash),
            )
        return earlier is not None

    def finish_create(self, op: Operation, crm_id: str) -> None:
        with self._lock, self._conn.transaction():
            # Every pending intent of this record is resolved by the one create that won.
            self._conn.execute(
                "UPDATE replicator.ledger SET status = 'done', crm_id = %s, completed_at = now() "
                "WHERE entity = %s AND erp_key = %s AND status = 'pending'",
                (crm_id, op.entity, op.external_id),
            )
            self._upsert_id(op.entity, op.external_id, op.object, crm_id)

    def _upsert_id(self, entity: str, erp_key: str, crm_object: str, crm_id: str) -> None:
        self._conn.execute(_DROP_STALE_ID, (crm_object, crm_id, entity, erp_key))
        self._conn.execute(_UPSERT_ID, (entity, erp_key, crm_object, crm_id))

    # -- sync state --------------------------------------------------------
    def record(self, records: Sequence[SyncRecord]) -> None:
        """Persist outcomes of one sink call in one transaction. Successes go in one
        statement per table; per-row round trips would dominate a batch."""
        if not records:
            return
        # One row per record: a later outcome for the same key supersedes an earlier one.
        latest = list({(r.entity, r.erp_key): r for r in records}.values())
        ok = [r for r in latest if r.status != "failed"]
        failed = [r for r in latest if r.status == "failed"]
        mapped = [
            (r.entity, r.erp_key, r.crm_object, r.crm_id)
            for r in ok
            if r.status in ("synced", "archived") and r.crm_id and r.crm_object and r.id_changed
        ]
        gone = [(r.entity, r.erp_key) for r in ok if r.status == "deleted"]
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            if mapped:
                # A CRM id belongs to one record: when two records of a batch claim the same
                # id, the later one wins, as it would applied one by one.
                by_crm_id = {(o, c): (e, k, o, c) for e, k, o, c in mapped}
                ids = [list(col) for col in zip(*by_crm_id.values(), strict=True)]
                cur.execute(_DROP_STALE_IDS, [*ids, sorted(set(ids[2])), ids[3]])
                cur.execute(_UPSERT_IDS, ids)
            if gone:
                cur.executemany("DELETE FROM replicator.id_map WHERE entity = %s AND erp_key = %s", gone)
            if failed:
                cur.executemany(
                    _STATE_FAILED,
                    [(r.entity, r.erp_key, r.crm_id, r.last_op, r.action, r.position, r.error) for r in failed],
                )
            if ok:
                columns = zip(
                    *[
                        (r.entity, r.erp_key, r.crm_id, r.status, r.last_op, r.action, r.payload_hash, r.position)
                        for r in ok
                    ],
                    strict=True,
                )
                cur.execute(_STATE_OK, [list(c) for c in columns])
                two_way = [r for r in ok if r.record is not None]
                if two_way:
                    cur.execute(
                        _LAST_RECORDS,
                        (
                            [r.entity for r in two_way],
                            [r.erp_key for r in two_way],
                            [Jsonb(r.record) for r in two_way],
                        ),
                    )
                # A success supersedes an open dead letter for the same record.
                cur.execute(_RESOLVE_LETTERS, ([r.entity for r in ok], [r.erp_key for r in ok]))
        self._keep_statistics_fresh(len(latest))

    def _keep_statistics_fresh(self, written: int) -> None:
        """ANALYZE the state tables each time this process has doubled what it wrote.

        A backfill fills them faster than autovacuum's analyze follows; with statistics
        saying an entity has a few hundred rows, key lookups scan all of its rows instead
        of probing the primary key (measured: 10 ms instead of 1 ms per 500 keys at 50k
        rows). Doubling keeps it to a handful of ANALYZE runs, ~30 ms each.
        """
        self._written += written
        if self._written - self._analyzed_at < max(5_000, self._analyzed_at):
            return
        self._analyzed_at = self._written
        try:
            with self._lock:
                self._conn.execute("ANALYZE replicator.sync_state, replicator.id_map")
        except psycopg.errors.InsufficientPrivilege:
            # Not the tables' owner: autovacuum keeps the statistics, only later.
            self._analyzed_at = 1 << 62

    # -- dead letters ------------------------------------------------------
    def dead_letter(
        self,
        *,
        entity: str,
        erp_key: str,
        op: str,
        reason: str,
        payload: Any,
        source_table: str | None = None,
        position: str | None = None,
        attempts: int = 1,
    ) -> None:
        body = Jsonb(orjson.loads(orjson.dumps(payload, default=_json_default))) if payload is not None else None
        with self._lock:
            self._conn.execute(
                "INSERT INTO replicator.dead_letters (entity, erp_key, source_table, op, reason, payload, "
                "source_position, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (entity, erp_key) WHERE status = 'open' DO UPDATE SET reason = excluded.reason, "
                "payload = excluded.payload, op = excluded.op, source_position = excluded.source_position, "
                "attempts = replicator.dead_letters.attempts + excluded.attempts, last_seen = now()",
                (entity, erp_key, source_table, op, reason, body, position, attempts),
            )

    def dead_letters(
        self, *, status: str | None = "open", entity: str | None = None, ids: Sequence[int] | None = None
    ) -> list[DeadLetter]:
        sql = "SELECT * FROM replicator.dead_letters WHERE true"
        params: list[Any] = []
        if status:
            sql += " AND status = %s"
            params.append(status)
        if entity:
            sql += " AND entity = %s"
            params.append(entity)
        if ids:
            sql += " AND id = ANY(%s)"
            params.append(list(ids))
        sql += " ORDER BY id"
        with self._lock:
            cur = self._conn.cursor(row_factory=dict_row)
            rows = cur.execute(sql, params).fetchall()
        return [
            DeadLetter(
                id=r["id"],
                entity=r["entity"],
                erp_key=r["erp_key"],
                source_table=r["source_table"],
                op=r["op"],
                reason=r["reason"],
                payload=r["payload"],
                source_position=r["source_position"],
                attempts=r["attempts"],
                status=r["status"],
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
            )
            for r in rows
        ]

    def resolve_dead_letter(self, letter_id: int, status: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE replicator.dead_letters SET status = %s, resolved_at = now() WHERE id = %s",
                (status, letter_id),
            )

    def open_dead_letters(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM replicator.dead_letters WHERE status = 'open'").fetchone()
        return int(row[0]) if row else 0

    def sync_summary(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return [
                (e, s, int(n))
                for e, s, n in self._conn.execute(
                    "SELECT entity, status, count(*) FROM replicator.sync_state GROUP BY 1, 2 ORDER BY 1, 2"
                ).fetchall()
            ]
