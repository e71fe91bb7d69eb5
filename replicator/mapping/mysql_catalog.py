"""What a MariaDB/MySQL ERP says about the mapped tables (`database.table`).

The answer has the PostgreSQL catalog's shape (`TableInfo`). Types are
information_schema's COLUMN_TYPE, except that MariaDB's JSON (a LONGTEXT with a
`json_valid` check) is reported as `json`. The binary log always carries whole rows
(binlog_row_image=FULL is checked by `replicator check`), hence replica identity `f`.
"""

from __future__ import annotations

from typing import Any

import pymysql.cursors

from replicator.mapping.catalog import TableInfo, split_table


def read_mysql_catalog(conn: Any, tables: list[str]) -> dict[str, TableInfo]:
    """Tables that do not exist are simply absent from the answer. `conn` is a PyMySQL connection."""
    out: dict[str, TableInfo] = {}
    with conn.cursor(pymysql.cursors.Cursor) as cur:  # tuples, whatever the connection's default
        for qualified in tables:
            schema, table = split_table(qualified)
            cur.execute(
                "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                (schema, table),
            )
            cols = [(str(name), str(kind)) for name, kind in cur.fetchall()]
            if not cols:
                continue
            cur.execute(
                "SELECT k.COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE k "
                "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = k.TABLE_SCHEMA AND t.TABLE_NAME = k.TABLE_NAME "
                "WHERE k.TABLE_SCHEMA = %s AND k.TABLE_NAME = %s AND k.CONSTRAINT_NAME = 'PRIMARY' "
                "AND t.TABLE_TYPE = 'BASE TABLE' ORDER BY k.ORDINAL_POSITION",
                (schema, table),
            )
            pk = tuple(str(c) for (c,) in cur.fetchall())
            types = dict(cols)
            for column in _json_columns(cur, schema, table):
                if column in types:
                    types[column] = "json"
            out[f"{schema}.{table}"] = TableInfo(
                name=f"{schema}.{table}",
                columns=tuple(c for c, _ in cols),
                types=types,
                primary_key=pk,
                replica_identity="f",
            )
    return out


def _json_columns(cur: Any, schema: str, table: str) -> list[str]:
    # MariaDB declares JSON as LONGTEXT CHECK (json_valid(`col`)); MySQL reports `json` itself.
    try:
        cur.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s AND CHECK_CLAUSE LIKE 'json_valid(%%'",
            (schema, table),
        )
    except pymysql.err.MySQLError:  # MySQL's CHECK_CONSTRAINTS has no TABLE_NAME (and needs none)
        return []
    found = []
    for (clause,) in cur.fetchall():
        inner = str(clause).removeprefix("json_valid(").removesuffix(")").strip("`")
        found.append(inner.replace("``", "`"))
    return found
