"""Writing to a PostgreSQL ERP with psycopg 3.

Echo suppression: the writer's session is bound to a replication origin
(`pg_replication_origin_session_setup`), so every transaction it commits carries that
origin in the WAL and the slot source drops it (`PgSlotSource(drop_origins=...)`)
instead of sending our own write back to the CRM. An origin can be active in one
session at a time: a second writer with the same origin is refused at connect.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import errors
from psycopg.rows import dict_row

from replicator.sinks.erp.fit import FitDialect
from replicator.sinks.erp.model import WriteRejected
from replicator.sinks.erp.sql import Statement

APPLICATION_NAME = "replicator-erp-writer"


class OriginInUse(RuntimeError):
    """Another session (another replicator process) already writes with this replication origin."""


class PostgresDriver:
    dialect: FitDialect = "postgres"
    update_returning = True

    def __init__(self, dsn: str, *, origin: str | None = "replicator", timezone: str = "UTC") -> None:
        self.dsn = dsn
        self.origin = origin
        # Returned rows follow the reader's value model: timestamp-without-time-zone values are in this zone.
        self.zone = ZoneInfo(timezone)
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._connect()

    @property
    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        # Never reconnect silently here: a COMMIT on a fresh connection would report a lost write as done.
        if self._conn is None or self._conn.closed:
            raise psycopg.OperationalError("the ERP writer's connection is closed")
        return self._conn

    def _connect(self) -> None:
        conn = psycopg.connect(self.dsn, autocommit=False, application_name=APPLICATION_NAME, row_factory=dict_row)
        try:
            if self.origin is not None:
                self._setup_origin(conn, self.origin)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _setup_origin(conn: psycopg.Connection[dict[str, Any]], origin: str) -> None:
        row = conn.execute("SELECT pg_replication_origin_oid(%s) IS NULL AS missing", [origin]).fetchone()
        if row is not None and row["missing"]:
            try:
                conn.execute("SELECT pg_replication_origin_create(%s)", [origin])
                conn.commit()
            except errors.UniqueViolation:
                conn.rollback()  # another process created it at the same moment: just use it
        try:
            conn.execute("SELECT pg_replication_origin_session_setup(%s)", [origin])
            conn.commit()
        except errors.ObjectInUse as e:
            conn.rollback()
            raise OriginInUse(
                f"replication origin {origin!r} is already in use by another session: another replicator "
                "process writes to this ERP with the same origin. Stop it, or give each writer its own origin "
                f"(and add it to the slot source's drop_origins). Server said: {e}"
            ) from e

    # -- Driver

    def begin(self) -> None:
        # psycopg opens the transaction with the first statement (autocommit is off).
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.reconnect()

    def execute(self, statement: Statement, table: str) -> tuple[int, list[dict[str, Any]]]:
        with self.conn.cursor() as cur:
            cur.execute(statement.sql, statement.params)
            rows = cur.fetchall() if cur.description is not None else []
            for row in rows:
                for column, value in row.items():
                    if isinstance(value, datetime) and value.tzinfo is None:
                        row[column] = value.replace(tzinfo=self.zone)
            return cur.rowcount, rows

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        with contextlib.suppress(psycopg.Error):  # the connection is gone; so is the transaction
            conn.rollback()

    def reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            old.close()
        self._connect()

    def connection_lost(self, error: BaseException) -> bool:
        conn = self._conn
        return isinstance(error, psycopg.OperationalError) and (conn is None or conn.closed or conn.broken)

    def unique_violation(self, error: BaseException) -> bool:
        return isinstance(error, errors.UniqueViolation)

    def rejection(self, error: BaseException, table: str) -> WriteRejected | None:
        if not isinstance(error, psycopg.IntegrityError | psycopg.DataError):
            return None
        diag = error.diag
        what = type(
            error
        ).__name__  # UniqueViolation, ForeignKeyViolation, CheckViolation, StringDataRightTruncation...
        constraint = f" (constraint {diag.constraint_name})" if diag.constraint_name else ""
        detail = f" {diag.message_detail}" if diag.message_detail else ""
        return WriteRejected(
            f"the database refused the write: {what}{constraint}: {diag.message_primary}.{detail} "
            "fix: correct the data at its source, or the mapping that produces it",
            table=f"{diag.schema_name}.{diag.table_name}" if diag.table_name else table,
            column=diag.column_name,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
