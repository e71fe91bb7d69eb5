"""Versioned state schema and the least-privilege role, on a real PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from replicator.devstack.postgres import PgCluster
from replicator.jobs.setup import apply_role_script
from replicator.state import migrations


def test_migrations_apply_once_in_order_and_are_recorded(pg_db: str) -> None:
    first = migrations.migrate(pg_db)
    assert [m.version for m in first] == [m.version for m in migrations.available()]
    assert migrations.migrate(pg_db) == []  # idempotent
    assert migrations.pending(pg_db) == []
    with psycopg.connect(pg_db) as conn:
        rows = conn.execute("SELECT version, name FROM replicator.schema_migrations ORDER BY version").fetchall()
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'replicator'"
            ).fetchall()
        }
    assert rows[0] == (1, "state")
    assert {"checkpoints", "id_map", "ledger", "sync_state", "dead_letters"} <= tables


def test_an_edited_applied_migration_is_refused(pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    migrations.migrate(pg_db)
    copy = tmp_path / "sql"
    shutil.copytree(migrations.sql_dir(), copy)
    target = copy / "migrations" / "0001_state.sql"
    target.write_text(target.read_text() + "\n-- edited\n")
    monkeypatch.setattr(migrations, "sql_dir", lambda: copy)
    with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
        migrations.migrate(pg_db)


def test_role_script_creates_a_least_privilege_replication_role(pg_cluster: PgCluster, pg_db: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO public.customers VALUES (1, 'a')")
    apply_role_script(pg_db, "repl_least", "pw'with quote")
    apply_role_script(pg_db, "repl_least", "pw'with quote")  # re-runnable
    dbname = psycopg.conninfo.conninfo_to_dict(pg_db)["dbname"]
    with psycopg.connect(pg_cluster.dsn(str(dbname)), autocommit=True) as conn:
        role = conn.execute(
            "SELECT rolreplication, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = 'repl_least'"
        ).fetchone()
    assert role == (True, False, False, False)
    as_role = psycopg.conninfo.make_conninfo(pg_db, user="repl_least", password="pw'with quote")
    with psycopg.connect(as_role, autocommit=True) as conn:
        assert conn.execute("SELECT name FROM public.customers").fetchone() == ("a",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE public.customers SET name = 'b'")
    # The role owns the state schema: migrations run as it.
    migrations.migrate(as_role)
