"""Versioned SQL in sql/migrations, applied in order, each once, recorded."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Serialises concurrent `setup` runs against one database.
_LOCK_ID = 0x5EB1_1CA7


def sql_dir() -> Path:
    """sql/ of a source checkout, or the copy packaged inside the wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("sql/migrations not found next to the replicator package")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def available() -> list[Migration]:
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_description.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    return found


class MigrationError(RuntimeError):
    pass


def migrate(dsn: str) -> list[Migration]:
    """Apply pending migrations; returns the ones applied now."""
    applied_now: list[Migration] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            # Even IF NOT EXISTS needs CREATE on the database; a least-privilege role
            # is handed the schema by the role script instead.
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'replicator'").fetchone():
                conn.execute("CREATE SCHEMA replicator")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS replicator.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            rows = conn.execute("SELECT version, checksum FROM replicator.schema_migrations").fetchall()
            done: dict[int, str] = dict(rows)
            for migration in available():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"{migration.path.name} was changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO replicator.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def pending(dsn: str) -> list[Migration]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('replicator.schema_migrations') IS NOT NULL").fetchone()
        done: set[int] = set()
        if exists and exists[0]:
            done = {v for (v,) in conn.execute("SELECT version FROM replicator.schema_migrations")}
    return [m for m in available() if m.version not in done]
