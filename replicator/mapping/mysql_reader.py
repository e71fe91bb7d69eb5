"""Reads current rows from a MariaDB/MySQL ERP, with the interface and value model of
the PostgreSQL reader: the planner, backfill and reconcile do not know which one runs.

Every statement is parameterised; identifiers are quoted with backticks. Related rows
take the first row per join value with ROW_NUMBER() (MySQL has no DISTINCT ON);
scans page by key (keyset), never by OFFSET.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import pymysql.cursors

from replicator.change import Row
from replicator.mapping.catalog import split_table
from replicator.mapping.entity import Related
from replicator.mapping.mysql_catalog import read_mysql_catalog
from replicator.mapping.mysql_conn import connect
from replicator.mapping.mysql_values import Converter, convert_row, converters, to_param

Key = tuple[Any, ...]
_CHUNK = 1000  # keys per IN list: bounded statements
_RANK = "_replicator_rank"
_IDLE_PING_S = 60.0


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def table_sql(qualified: str) -> str:
    schema, table = split_table(qualified)
    return f"{quote(schema)}.{quote(table)}"


def in_list(columns: Sequence[str], count: int) -> str:
    """`a IN (%s, ...)` for one column, `(a, b) IN ((%s, %s), ...)` for several."""
    if len(columns) == 1:
        return f"{quote(columns[0])} IN ({', '.join(['%s'] * count)})"
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return f"({', '.join(quote(c) for c in columns)}) IN ({', '.join([row] * count)})"


def after_key(columns: Sequence[str]) -> str:
    """Rows after a key in key order, spelled out (a > ? OR a = ? AND b > ?) so an index can serve it;
    parameters: the key's values, repeated as `after_key_params` gives them."""
    terms = []
    for i, column in enumerate(columns):
        equal = [f"{quote(c)} = %s" for c in columns[:i]]
        terms.append("(" + " AND ".join([*equal, f"{quote(column)} > %s"]) + ")")
    return "(" + " OR ".join(terms) + ")"


def after_key_params(key: Key) -> list[Any]:
    params: list[Any] = []
    for i in range(len(key)):
        params.extend(key[: i + 1])
    return params


def related_query(rel: Related, count: int) -> str:
    """For each join value, the first related row by `order_by` (ROW_NUMBER instead of DISTINCT ON)."""
    rel_cols = list(rel.join.keys())
    partition = ", ".join(quote(c) for c in rel_cols)
    order = f" ORDER BY {rel.order_by_sql.removeprefix('ORDER BY ')}" if rel.order_by_sql else ""
    where = in_list(rel_cols, count)
    if rel.where_sql:
        where += f" AND ({rel.where_sql})"
    return (
        f"SELECT * FROM (SELECT r.*, ROW_NUMBER() OVER (PARTITION BY {partition}{order}) AS {_RANK} "
        f"FROM {table_sql(rel.table)} AS r WHERE {where}) AS ranked WHERE {_RANK} = 1"
    )


def _chunks(items: Sequence[Key]) -> Iterator[Sequence[Key]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class MysqlReader:
    def __init__(self, dsn: str, timezone: str = "UTC") -> None:
        self._dsn = dsn
        self._conn = connect(dsn, cursorclass=pymysql.cursors.DictCursor)
        self._zone = ZoneInfo(timezone)
        self._lock = threading.Lock()
        self._convs: dict[str, dict[str, Converter]] = {}
        self._used = time.monotonic()

    def close(self) -> None:
        self._conn.close()

    def _converters(self, table: str) -> dict[str, Converter]:
        # Called with the lock held.
        if table not in self._convs:
            info = read_mysql_catalog(self._conn, [table]).get(table)
            self._convs[table] = converters(info.types, self._zone) if info else {}
        return self._convs[table]

    def _query(self, table: str, statement: str, params: Sequence[Any]) -> list[Row]:
        with self._lock:
            if time.monotonic() - self._used > _IDLE_PING_S:
                # The server drops connections idle past wait_timeout; a quiet ERP is normal.
                # A new connection, not ping(reconnect=True): it redoes the session setup (time zone).
                try:
                    self._conn.ping(reconnect=False)
                except pymysql.err.Error:
                    with contextlib.suppress(pymysql.err.Error):
                        self._conn.close()
                    self._conn = connect(self._dsn, cursorclass=pymysql.cursors.DictCursor)
            self._used = time.monotonic()
            convs = self._converters(table)
            with self._conn.cursor() as cur:
                cur.execute(statement, [to_param(p, self._zone) for p in params])
                rows = list(cur.fetchall())
        return [convert_row(r, convs) for r in rows]

    def rows_by_key(
        self, table: str, key_cols: Sequence[str], keys: Sequence[Key], types: Sequence[str] | None = None
    ) -> dict[Key, Row]:
        """Rows by key. `types` is for PostgreSQL's sake: MySQL compares text to numbers itself."""
        out: dict[Key, Row] = {}
        for chunk in _chunks(list(keys)):
            statement = f"SELECT * FROM {table_sql(table)} WHERE {in_list(key_cols, len(chunk))}"
            for row in self._query(table, statement, [v for key in chunk for v in key]):
                out[tuple(row[c] for c in key_cols)] = row
        return out

    def related_rows(self, rel: Related, base_rows: Sequence[Row]) -> dict[Key, Row]:
        """For each distinct join value of the base rows, the first related row (by order_by)."""
        base_cols = list(rel.join.values())
        rel_cols = list(rel.join.keys())
        values = {tuple(r.get(c) for c in base_cols) for r in base_rows}
        wanted = sorted((v for v in values if None not in v), key=repr)
        out: dict[Key, Row] = {}
        for chunk in _chunks(wanted):
            for row in self._query(rel.table, related_query(rel, len(chunk)), [v for key in chunk for v in key]):
                row.pop(_RANK, None)
                out[tuple(row[c] for c in rel_cols)] = row
        return out

    def base_keys_by_join(
        self, table: str, key_cols: Sequence[str], rel: Related, join_values: Sequence[Key]
    ) -> list[tuple[Key, Key]]:
        """(join value, base key) for every base row whose join columns match one of the values."""
        base_cols = list(rel.join.values())
        if list(base_cols) == list(key_cols):
            return [(v, v) for v in join_values]
        out: list[tuple[Key, Key]] = []
        columns = ", ".join(quote(c) for c in [*key_cols, *base_cols])
        for chunk in _chunks(list(join_values)):
            statement = f"SELECT {columns} FROM {table_sql(table)} WHERE {in_list(base_cols, len(chunk))}"
            for row in self._query(table, statement, [v for key in chunk for v in key]):
                out.append((tuple(row[c] for c in base_cols), tuple(row[c] for c in key_cols)))
        return out

    def scan(
        self, table: str, key_cols: Sequence[str], page_size: int = 1000, after: Key | None = None
    ) -> Iterator[list[Row]]:
        """Keyset pagination over a whole table, in key order: resumable and index-friendly."""
        order = ", ".join(quote(c) for c in key_cols)
        while True:
            if after is None:
                statement = f"SELECT * FROM {table_sql(table)} ORDER BY {order} LIMIT %s"
                params: list[Any] = [page_size]
            else:
                statement = f"SELECT * FROM {table_sql(table)} WHERE {after_key(key_cols)} ORDER BY {order} LIMIT %s"
                params = [*after_key_params(after), page_size]
            rows = self._query(table, statement, params)
            if not rows:
                return
            yield rows
            after = tuple(rows[-1][c] for c in key_cols)
            if len(rows) < page_size:
                return

    def count(self, table: str) -> int:
        rows = self._query(table, f"SELECT COUNT(*) AS n FROM {table_sql(table)}", [])
        return int(rows[0]["n"]) if rows else 0
