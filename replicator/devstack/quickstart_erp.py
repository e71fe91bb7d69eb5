"""The quickstart's ERP side: which database holds the sample ERP, how its changes reach
the replicator, and the configuration file that says so (one-way or two-way)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from replicator.devstack.postgres import PgCluster
from replicator.devstack.sample_erp import EXAMPLE, MARIADB_EXAMPLE, load_sample_erp, load_sample_erp_mariadb

ROOT = Path(__file__).resolve().parents[2]
TOPIC_PREFIX = "erp"


@dataclass
class QuickErp:
    title: str  # "PostgreSQL (slot)"
    dsn: str
    state_dsn: str
    config: Path  # the configuration the replicator runs with
    execute: Callable[[str], None]  # runs ';\n'-separated statements, autocommitted
    scalar: Callable[[str], int]
    query: Callable[..., list[tuple[Any, ...]]]  # (sql, params=None) -> rows; placeholders are %s on both ERPs
    shell: str  # how to open a SQL prompt on the ERP
    host: str  # where Debezium reaches the ERP database
    port: int
    user: str
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the replicator


def _pg_execute(dsn: str) -> Callable[[str], None]:
    def run(sql: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)

    return run


def _pg_scalar(dsn: str) -> Callable[[str], int]:
    def run(sql: str) -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    return run


def _pg_query(dsn: str) -> Callable[..., list[tuple[Any, ...]]]:
    def run(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    return run


def write_config(base: Path, workdir: Path, overrides: dict[str, Any]) -> Path:
    raw = yaml.safe_load(base.read_text())
    raw.update(overrides)
    if isinstance(raw.get("extends"), str):
        # `extends` is relative to the file that names it; this copy lives elsewhere.
        raw["extends"] = str((base.parent / raw["extends"]).resolve())
    path = workdir / "replicator.yaml"
    path.write_text(
        f"# Written by the quickstart from {base.relative_to(ROOT)} with the source for this run.\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    return path


def sample_config(erp: str, two_way: bool) -> Path:
    """The sample configuration for this ERP: ERP -> CRM only, or both ways."""
    folder = EXAMPLE if erp == "postgres" else MARIADB_EXAMPLE
    return folder / ("replicator-two-way.yaml" if two_way else "replicator.yaml")


def start_erp(
    erp: str,
    source: str,
    cluster: PgCluster,
    workdir: Path,
    stack: ExitStack,
    log: Callable[[str], None],
    *,
    two_way: bool = False,
) -> QuickErp:
    """Start the ERP database with the sample data (and Debezium when asked); stops go on `stack`."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = sample_config(erp, two_way)
    if erp == "postgres":
        dsn = load_sample_erp(cluster)
        quick = QuickErp(
            title="PostgreSQL",
            dsn=dsn,
            state_dsn=dsn,
            config=base,
            execute=_pg_execute(dsn),
            scalar=_pg_scalar(dsn),
            query=_pg_query(dsn),
            shell=f"psql '{dsn}'",
            host=cluster.host,
            port=cluster.port,
            user=cluster.user,
        )
    else:
        from replicator.devstack.mariadb import start_mariadb

        # Debezium's MySQL connector stands in for its MariaDB connector here, which only
        # accepts the server behind a spoofed version string: never do that in production.
        server = start_mariadb(workdir / "mariadb", spoof_version_for_debezium=source == "debezium")
        stack.callback(server.destroy)
        dsn = load_sample_erp_mariadb(server)
        cluster.create_database("replicator_state")
        state_dsn = cluster.dsn("replicator_state")

        def execute(sql: str) -> None:
            for statement in sql.split(";\n"):
                server.execute(statement, db="erp")

        def scalar(sql: str) -> int:
            rows = server.execute(sql, db="erp")
            return int(rows[0][0]) if rows else 0

        def query(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
            return server.execute(sql, params, db="erp")

        quick = QuickErp(
            title="MariaDB",
            dsn=dsn,
            state_dsn=state_dsn,
            config=base,
            execute=execute,
            scalar=scalar,
            query=query,
            shell=f"mariadb -h 127.0.0.1 -P {server.port} -u root erp",
            host=server.host,
            port=server.port,
            user=server.user,
        )
    if source == "debezium":
        from replicator.devstack.quickstart_debezium import debezium_source

        overrides = debezium_source(erp, quick, workdir, stack, log)
        quick.title += " -> Debezium -> Kafka"
        quick.config = write_config(base, workdir, overrides)
    else:
        quick.title += " (slot)" if erp == "postgres" else " (binlog)"
    return quick
