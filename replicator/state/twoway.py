"""State of two-way records: the values both sides last agreed on, the reverse id
map (CRM id -> ERP key), our own ERP writes, and parked conflicts."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


@dataclass(slots=True)
class Conflict:
    id: int
    entity: str
    erp_key: str
    crm_id: str | None
    field: str
    base_value: Any
    erp_value: Any
    crm_value: Any
    erp_changed_at: datetime | None
    crm_changed_at: datetime | None
    status: str
    resolution: str | None
    created_at: datetime
    resolved_at: datetime | None


def _json(value: Any) -> Jsonb:
    return Jsonb(orjson.loads(orjson.dumps(value, default=str)))


class TwoWayStore:
    """Its own connection: the CRM -> ERP runner works beside the ERP -> CRM one."""

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True, application_name="replicator-two-way")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def erp_keys(self, crm_object: str, crm_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """crm_id -> (entity, erp_key) for CRM records the id map knows."""
        ids = list(set(crm_ids))
        if not ids:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT crm_id, entity, erp_key FROM replicator.id_map WHERE crm_object = %s AND crm_id = ANY(%s)",
                (crm_object, ids),
            ).fetchall()
        return {c: (e, k) for c, e, k in rows}

    def last_record(self, entity: str, erp_key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT last_record FROM replicator.sync_state WHERE entity = %s AND erp_key = %s", (entity, erp_key)
            ).fetchone()
        return row[0] if row and isinstance(row[0], dict) else None

    def last_records(self, entity: str, erp_keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(set(erp_keys))
        if not keys:
            return {}
        with self._lock:
            rows = self._conn.execute(
                "SELECT erp_key, last_record FROM replicator.sync_state "
                "WHERE entity = %s AND erp_key = ANY(%s) AND last_record IS NOT NULL",
                (entity, keys),
            ).fetchall()
        return {k: r for k, r in rows if isinstance(r, dict)}

    def agreed(
        self,
        *,
        entity: str,
        erp_key: str,
        crm_object: str,
        crm_id: str,
        record: dict[str, Any],
        payload_hash: str,
        direction: str,
        position: str,
    ) -> None:
        """Both sides now hold `record`: remember it, the CRM id and the payload hash, in one transaction.

        `direction` crm_to_erp marks our own ERP write, so its echo from the ERP's change
        stream (same payload hash) is recognised and suppressed."""
        with self._lock, self._conn.transaction():
            self._conn.execute(
                "DELETE FROM replicator.id_map WHERE crm_object = %s AND crm_id = %s AND (entity, erp_key) <> (%s, %s)",
                (crm_object, crm_id, entity, erp_key),
            )
            self._conn.execute(
                "INSERT INTO replicator.id_map (entity, erp_key, crm_object, crm_id) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, "
                "crm_object = excluded.crm_object, updated_at = now()",
                (entity, erp_key, crm_object, crm_id),
            )
            self._conn.execute(
                "INSERT INTO replicator.sync_state (entity, erp_key, crm_id, status, last_op, last_action, last_hash, "
                "last_position, last_synced_at, last_record, last_direction) "
                "VALUES (%s, %s, %s, 'synced', 'u', 'upsert', %s, %s, now(), %s, %s) "
                "ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, status = 'synced', "
                "last_op = excluded.last_op, last_action = excluded.last_action, last_hash = excluded.last_hash, "
                "last_position = excluded.last_position, last_synced_at = now(), last_record = excluded.last_record, "
                "last_direction = excluded.last_direction, last_error = NULL, attempts = 0, updated_at = now()",
                (entity, erp_key, crm_id, payload_hash, position, _json(record), direction),
            )
            self._conn.execute(
                "UPDATE replicator.dead_letters SET status = 'replayed', resolved_at = now() "
                "WHERE status = 'open' AND entity = %s AND erp_key = %s",
                (entity, erp_key),
            )

    def forget(self, entity: str, erp_key: str, position: str) -> None:
        """The ERP row was deleted because the CRM record was."""
        with self._lock, self._conn.transaction():
            self._conn.execute("DELETE FROM replicator.id_map WHERE entity = %s AND erp_key = %s", (entity, erp_key))
            self._conn.execute(
                "UPDATE replicator.sync_state SET status = 'deleted', last_op = 'd', last_action = 'delete', "
                "last_position = %s, last_direction = 'crm_to_erp', last_record = NULL, updated_at = now() "
                "WHERE entity = %s AND erp_key = %s",
                (position, entity, erp_key),
            )

    # -- conflicts ---------------------------------------------------------
    def park(
        self,
        *,
        entity: str,
        erp_key: str,
        crm_id: str | None,
        field: str,
        base: Any,
        erp: Any,
        crm: Any,
        erp_ts: datetime | None,
        crm_ts: datetime | None,
    ) -> bool:
        """Park a conflict; an open one for the same field is brought up to date. True when new."""
        with self._lock:
            row = self._conn.execute(
                "INSERT INTO replicator.conflicts (entity, erp_key, crm_id, field, base_value, erp_value, crm_value, "
                "erp_changed_at, crm_changed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (entity, erp_key, field) WHERE status = 'open' DO UPDATE SET "
                "erp_value = excluded.erp_value, crm_value = excluded.crm_value, crm_id = excluded.crm_id, "
                "erp_changed_at = excluded.erp_changed_at, crm_changed_at = excluded.crm_changed_at "
                "RETURNING (xmax = 0)",
                (entity, erp_key, crm_id, field, _json(base), _json(erp), _json(crm), erp_ts, crm_ts),
            ).fetchone()
        return bool(row and row[0])

    def open_fields(self, entity: str, erp_key: str) -> set[str]:
        """Fields with an open conflict: neither side's value is copied until it is resolved."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT field FROM replicator.conflicts WHERE entity = %s AND erp_key = %s AND status = 'open'",
                (entity, erp_key),
            ).fetchall()
        return {f for (f,) in rows}

    def conflicts(self, *, status: str | None = "open", ids: Iterable[int] | None = None) -> list[Conflict]:
        sql = "SELECT * FROM replicator.conflicts WHERE true"
        params: list[Any] = []
        if status:
            sql += " AND status = %s"
            params.append(status)
        if ids is not None:
            sql += " AND id = ANY(%s)"
            params.append(list(ids))
        with self._lock:
            rows = self._conn.cursor(row_factory=dict_row).execute(sql + " ORDER BY id", params).fetchall()
        return [Conflict(**r) for r in rows]

    def resolved(self, conflict_id: int, take: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE replicator.conflicts SET status = 'resolved', resolution = %s, resolved_at = now() "
                "WHERE id = %s AND status = 'open'",
                (take, conflict_id),
            )

    def open_conflicts(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM replicator.conflicts WHERE status = 'open'").fetchone()
        return int(row[0]) if row else 0
