"""The sample ERP in examples/erp: schema, seed data and its BottleCRM mapping."""

from __future__ import annotations

from pathlib import Path

import psycopg

from replicator.devstack.mariadb import MariaDb
from replicator.devstack.postgres import PgCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "erp"
CONFIG = EXAMPLE / "replicator.yaml"


def load_sample_erp(cluster: PgCluster, db: str = "erp", *, seed: bool = True) -> str:
    """Create database `db` with the sample schema (and seed data); returns its DSN."""
    cluster.create_database(db)
    with psycopg.connect(cluster.dsn(db), autocommit=True) as conn:
        conn.execute((EXAMPLE / "schema.sql").read_text())
        if seed:
            conn.execute((EXAMPLE / "seed.sql").read_text())
    return cluster.dsn(db)


MARIADB_EXAMPLE = EXAMPLE / "mariadb"
MARIADB_CONFIG = MARIADB_EXAMPLE / "replicator.yaml"


def load_sample_erp_mariadb(server: MariaDb, db: str = "erp", *, seed: bool = True) -> str:
    """The same sample ERP in a MariaDB database `db` (created here); returns its `mysql://` DSN."""
    server.create_database(db)
    server.execute_script((MARIADB_EXAMPLE / "schema.sql").read_text(), db=db)
    if seed:
        server.execute_script((MARIADB_EXAMPLE / "seed.sql").read_text(), db=db)
    return server.dsn(db)
