"""Reads current ERP rows: records re-synced because a related row changed,
related rows feeding a record, backfill and reconcile scans.

`RowReader` is what the planner, backfill and reconcile use; `ErpReader` reads
PostgreSQL, `replicator.mapping.mysql_reader.MysqlReader` MariaDB/MySQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from replicator.change import Row
from replicator.mapping.catalog import split_table
from replicator.mapping.entity import Related

Key = tuple[Any, ...]


class RowReader(Protocol):
    def rows_by_key(
        self, table: str, key_cols: Sequence[str], keys: Sequence[Key], types: Sequence[str] | None = None
    ) -> dict[Key, Row]: ...
    def related_rows(self, rel: Related, base_rows: Sequence[Row]) -> dict[Key, Row]: ...
    def base_keys_by_join(
        self, table: str, key_cols: Sequence[str], rel: Related, join_values: Sequence[Key]
    ) -> list[tuple[Key, Key]]: ...
    def scan(
        self, table: str, key_cols: Sequence[str], page_size: int = 1000, after: Key | None = None
    ) -> Iterator[list[Row]]: ...
    def count(self, table: str) -> int: ...
    def close(self) -> None: ...


def _arrays(types: Sequence[str] | None, count: int) -> sql.Composable:
    """Placeholders for unnest(): typed arrays, because an untyped text[] is ambiguous to PostgreSQL."""
    if types:
        return sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(t)) for t in types)
    return sql.SQL(", ").join(sql.Placeholder() for _ in range(count))


def _ident(qualified: str) -> sql.Composable:
    schema, table = split_table(qualified)
    return sql.Identifier(schema, table)


class ErpReader:
    def __init__(self, dsn: str, timezone: str = "UTC") -> None:
        self._conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row, application_name="replicator-reader")
        # Same values as the slot source gives: UTC for timestamptz, the configured
        # zone attached to timestamp-without-time-zone columns.
        self._conn.execute("SET TIME ZONE 'UTC'")
        self._zone = ZoneInfo(timezone)
        self._lock = threading.Lock()

    @property
    def connection(self) -> psycopg.Connection[Any]:
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def _fix(self, row: dict[str, Any]) -> Row:
        for k, v in row.items():
            if isinstance(v, datetime) and v.tzinfo is None:
                row[k] = v.replace(tzinfo=self._zone)
        return row

    def rows_by_key(
        self, table: str, key_cols: Sequence[str], keys: Sequence[Key], types: Sequence[str] | None = None
    ) -> dict[Key, Row]:
        """Rows by key; `types` casts key values given as text (from the command line)."""
        if not keys:
            return {}
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in key_cols)
        arrays = _arrays(types, len(key_cols))
        query = sql.SQL("SELECT * FROM {} WHERE ({}) IN (SELECT * FROM unnest({}))").format(_ident(table), cols, arrays)
        columns = [list(col) for col in zip(*keys, strict=True)]
        with self._lock:
            rows = self._conn.execute(query, columns).fetchall()
        return {tuple(r[c] for c in key_cols): self._fix(r) for r in rows}

    def related_rows(self, rel: Related, base_rows: Sequence[Row]) -> dict[Key, Row]:
        """For each distinct join value of the base rows, the first related row (by order_by)."""
        base_cols = list(rel.join.values())
        rel_cols = list(rel.join.keys())
        values = {tuple(r.get(c) for c in base_cols) for r in base_rows}
        values = {v for v in values if None not in v}
        if not values:
            return {}
        join_cols = sql.SQL(", ").join(sql.Identifier(c) for c in rel_cols)
        query = sql.SQL(
            "SELECT DISTINCT ON ({cols}) * FROM {table} WHERE ({cols}) IN (SELECT * FROM unnest({ph}))"
        ).format(
            cols=join_cols,
            table=_ident(rel.table),
            ph=_arrays(rel.join_types, len(rel_cols)),
        )
        if rel.where_sql:
            query += sql.SQL(" AND (") + sql.SQL(rel.where_sql) + sql.SQL(")")
        order = sql.SQL("ORDER BY ") + join_cols
        if rel.order_by_sql:
            order += sql.SQL(", ") + sql.SQL(rel.order_by_sql.removeprefix("ORDER BY "))
        query += sql.SQL(" ") + order
        columns = [list(col) for col in zip(*values, strict=True)]
        with self._lock:
            rows = self._conn.execute(query, columns).fetchall()
        return {tuple(r[c] for c in rel_cols): self._fix(r) for r in rows}

    def base_keys_by_join(
        self, table: str, key_cols: Sequence[str], rel: Related, join_values: Sequence[Key]
    ) -> list[tuple[Key, Key]]:
        """(join value, base key) for every base row whose join columns match one of the values."""
        if not join_values:
            return []
        base_cols = list(rel.join.values())
        if list(base_cols) == list(key_cols):
            return [(v, v) for v in join_values]
        query = sql.SQL("SELECT {keys}, {cols} FROM {table} WHERE ({cols}) IN (SELECT * FROM unnest({ph}))").format(
            keys=sql.SQL(", ").join(sql.Identifier(c) for c in key_cols),
            table=_ident(table),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in base_cols),
            ph=_arrays(rel.base_join_types, len(base_cols)),
        )
        columns = [list(col) for col in zip(*join_values, strict=True)]
        with self._lock:
            rows = self._conn.execute(query, columns).fetchall()
        return [(tuple(r[c] for c in base_cols), tuple(r[c] for c in key_cols)) for r in rows]

    def scan(
        self, table: str, key_cols: Sequence[str], page_size: int = 1000, after: Key | None = None
    ) -> Iterator[list[Row]]:
        """Keyset pagination over a whole table, in key order: resumable and index-friendly."""
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in key_cols)
        while True:
            if after is None:
                query = sql.SQL("SELECT * FROM {} ORDER BY {} LIMIT {}").format(
                    _ident(table), cols, sql.Literal(page_size)
                )
                params: list[Any] = []
            else:
                query = sql.SQL("SELECT * FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT {}").format(
                    _ident(table),
                    cols,
                    sql.SQL(", ").join(sql.Placeholder() for _ in key_cols),
                    cols,
                    sql.Literal(page_size),
                )
                params = list(after)
            with self._lock:
                rows = [self._fix(r) for r in self._conn.execute(query, params).fetchall()]
            if not rows:
                return
            yield rows
            after = tuple(rows[-1][c] for c in key_cols)
            if len(rows) < page_size:
                return

    def count(self, table: str) -> int:
        with self._lock:
            row = self._conn.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(_ident(table))).fetchone()
        return int(row["n"]) if row else 0
