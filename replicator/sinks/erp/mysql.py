"""Writing to a MariaDB/MySQL ERP with PyMySQL.

The session runs with STRICT_ALL_TABLES so the server refuses, rather than truncates,
a value that does not fit, and in UTC (see `mapping.mysql_conn`) so TIMESTAMP columns
take UTC wall time. Affected-row counts are "found rows", so an UPDATE that changes
nothing still counts as matching. MariaDB has no replication origins: echoes of our
writes are recognised by the caller's ledger instead.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import pymysql
from pymysql.constants import CLIENT

from replicator.mapping.catalog import TableInfo
from replicator.mapping.mysql_conn import connect
from replicator.mapping.mysql_values import Converter, convert_row, converters
from replicator.sinks.erp.fit import FitDialect
from replicator.sinks.erp.model import WriteRejected
from replicator.sinks.erp.sql import Statement

# Client-side errors meaning the server is gone: 2006 gone away, 2013 lost during query, 2055 lost (SSL/other).
_LOST = {2003, 2006, 2013, 2055}
# Check constraint violations (4025 MariaDB, 3819 MySQL): the data is at fault, though PyMySQL says OperationalError.
_DATA_ERRORS = {4025, 3819}
_DUPLICATE = 1062
_COLUMN = re.compile(r"(?:column|for key|constraint) [`']([^`']+)[`']", re.IGNORECASE)


class MysqlDriver:
    dialect: FitDialect = "mysql"
    update_returning = False

    def __init__(self, dsn: str, catalog: Mapping[str, TableInfo], *, timezone: str = "UTC") -> None:
        self.dsn = dsn
        # Returned rows get the same value model as the MariaDB reader (booleans, zoned datetimes, JSON).
        zone = ZoneInfo(timezone)
        self._convs: dict[str, dict[str, Converter]] = {t: converters(i.types, zone) for t, i in catalog.items()}
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> None:
        conn = connect(self.dsn, client_flag=CLIENT.FOUND_ROWS)
        try:
            conn.autocommit(False)
            with conn.cursor() as cur:
                cur.execute("SELECT @@SESSION.sql_mode")
                row = cur.fetchone()
                modes = [m for m in str(row[0] if row else "").split(",") if m]
                if "STRICT_ALL_TABLES" not in modes:
                    modes.append("STRICT_ALL_TABLES")
                cur.execute("SET SESSION sql_mode = %s", (",".join(modes),))
            conn.commit()
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def conn(self) -> pymysql.connections.Connection[Any]:
        # Never reconnect silently here: a COMMIT on a fresh connection would report a lost write as done.
        if self._conn is None or not self._conn.open:
            raise pymysql.err.InterfaceError(0, "the ERP writer's connection is closed")
        return self._conn

    # -- Driver

    def begin(self) -> None:
        if self._conn is None or not self._conn.open:
            self.reconnect()
        self.conn.begin()

    def execute(self, statement: Statement, table: str) -> tuple[int, list[dict[str, Any]]]:
        with self.conn.cursor() as cur:
            count = cur.execute(statement.sql, tuple(statement.params))
            if cur.description is None:
                return count, []
            names = [d[0] for d in cur.description]
            convs = self._convs.get(table, {})
            rows = [convert_row(dict(zip(names, r, strict=True)), convs) for r in cur.fetchall()]
            return len(rows), rows

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        conn = self._conn
        if conn is None or not conn.open:
            return
        with contextlib.suppress(pymysql.err.MySQLError):  # the connection is gone; so is the transaction
            conn.rollback()

    def reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None and old.open:
            with contextlib.suppress(pymysql.err.MySQLError):
                old.close()
        self._connect()

    def connection_lost(self, error: BaseException) -> bool:
        if isinstance(error, pymysql.err.InterfaceError):
            return True
        return isinstance(error, pymysql.err.OperationalError) and error.args[:1] != () and error.args[0] in _LOST

    def unique_violation(self, error: BaseException) -> bool:
        return isinstance(error, pymysql.err.IntegrityError) and error.args[:1] == (_DUPLICATE,)

    def rejection(self, error: BaseException, table: str) -> WriteRejected | None:
        code = error.args[0] if isinstance(error, pymysql.err.MySQLError) and error.args else None
        data_fault = isinstance(error, pymysql.err.IntegrityError | pymysql.err.DataError)
        if not (data_fault or (isinstance(error, pymysql.err.OperationalError) and code in _DATA_ERRORS)):
            return None
        message = str(error.args[1]) if len(error.args) > 1 else str(error)
        named = _COLUMN.search(message)
        return WriteRejected(
            f"the database refused the write (error {code}): {message}; "
            "fix: correct the data at its source, or the mapping that produces it",
            table=table,
            column=named.group(1) if named else None,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.open:
            conn.close()
