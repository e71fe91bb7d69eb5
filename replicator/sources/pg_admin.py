"""Administration of logical replication on PostgreSQL: publications, slots, LSNs,
and the catalog facts `check` reports (wal_level, replica identity)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.ops.metrics import SLOT_LAG_BYTES


class SlotSourceError(RuntimeError):
    pass


class SlotConnectionLost(SlotSourceError):
    """The replication stream broke; restart the source (unacked changes come again)."""


def lsn_to_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# --- slot / publication administration ---------------------------------------------------


@contextmanager
def _conn(dsn: str | psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    if isinstance(dsn, psycopg.Connection):
        yield dsn
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def _split_table(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


def create_publication(dsn: str | psycopg.Connection[Any], name: str, tables: Iterable[str]) -> None:
    """Create the publication for exactly ``tables`` ('schema.table'); re-point it if it differs."""
    wanted = sorted({".".join(_split_table(t)) for t in tables})
    idents = sql.SQL(", ").join(sql.Identifier(*_split_table(t)) for t in wanted)
    with _conn(dsn) as conn:
        exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), idents))
        elif publication_tables(conn, name) != wanted:
            conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), idents))


def publication_tables(dsn: str | psycopg.Connection[Any], publication: str) -> list[str]:
    with _conn(dsn) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1",
            (publication,),
        ).fetchall()
    return [r[0] for r in rows]


def create_slot(dsn: str | psycopg.Connection[Any], slot: str) -> bool:
    """Create a pgoutput logical slot unless it exists; True if it was created."""
    with _conn(dsn) as conn:
        if conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
            return False
        try:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        except psycopg.errors.DuplicateObject:
            return False  # lost a race with another creator: same outcome
        return True


def drop_slot(dsn: str | psycopg.Connection[Any], slot: str) -> bool:
    with _conn(dsn) as conn:
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        except psycopg.errors.UndefinedObject:
            return False
        return True


@dataclass(frozen=True, slots=True)
class SlotInfo:
    exists: bool
    active: bool = False
    confirmed_flush_lsn: int | None = None
    retained_bytes: int | None = None  # WAL the slot pins: current WAL LSN - confirmed_flush_lsn


def slot_info(dsn: str | psycopg.Connection[Any], slot: str) -> SlotInfo:
    with _conn(dsn) as conn:
        row = conn.execute(
            "SELECT active, confirmed_flush_lsn::text,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    if row is None:
        return SlotInfo(exists=False)
    active, confirmed, retained = row
    retained_bytes = int(retained) if retained is not None else None
    if retained_bytes is not None:
        SLOT_LAG_BYTES.labels(slot).set(retained_bytes)
    return SlotInfo(True, bool(active), lsn_to_int(confirmed) if confirmed else None, retained_bytes)


def wal_level(dsn: str | psycopg.Connection[Any]) -> str:
    with _conn(dsn) as conn:
        row = conn.execute("SHOW wal_level").fetchone()
    return str(row[0]) if row else ""


def replica_identity(dsn: str | psycopg.Connection[Any], table: str) -> tuple[str, bool]:
    """(relreplident 'd'/'f'/'n'/'i', has_primary_key) for 'schema.table'."""
    schema, name = _split_table(table)
    with _conn(dsn) as conn:
        row = conn.execute(
            "SELECT c.relreplident::text,"
            " EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        ).fetchone()
    if row is None:
        raise SlotSourceError(f"table {table} not found")
    return str(row[0]), bool(row[1])


def primary_key_columns(dsn: str | psycopg.Connection[Any], relation_oid: int) -> list[str]:
    with _conn(dsn) as conn:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])"
            " WHERE i.indrelid = %s AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
            (relation_oid,),
        ).fetchall()
    return [r[0] for r in rows]
