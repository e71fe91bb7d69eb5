"""What the ERP database says about the mapped tables: columns, keys, replica identity."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str  # schema-qualified
    columns: tuple[str, ...]
    types: dict[str, str]
    primary_key: tuple[str, ...]
    replica_identity: str  # d(efault), f(ull), i(ndex), n(othing)


def split_table(qualified: str) -> tuple[str, str]:
    schema, _, table = qualified.rpartition(".")
    return schema or "public", table


def read_catalog(conn: psycopg.Connection, tables: list[str]) -> dict[str, TableInfo]:
    """Tables that do not exist are simply absent from the answer."""
    out: dict[str, TableInfo] = {}
    for qualified in tables:
        schema, table = split_table(qualified)
        rel = conn.execute(
            "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, table),
        ).fetchone()
        if rel is None:
            continue
        oid, ident = rel
        cols = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (oid,),
        ).fetchall()
        pk = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "ON true JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
            (oid,),
        ).fetchall()
        out[f"{schema}.{table}"] = TableInfo(
            name=f"{schema}.{table}",
            columns=tuple(c for c, _ in cols),
            types={c: t for c, t in cols},
            primary_key=tuple(c for (c,) in pk),
            replica_identity=str(ident),
        )
    return out
