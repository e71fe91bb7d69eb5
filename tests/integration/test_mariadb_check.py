"""`replicator check` findings for a MariaDB ERP read through the binlog."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from replicator.config import parse_config
from replicator.devstack.mariadb import MariaDb, start_mariadb
from replicator.jobs.check import Finding
from replicator.jobs.check_mysql import mysql_checks
from replicator.state.migrations import migrate
from replicator.state.store import StateStore
from tests.integration.test_binlog_source import purge_all_but_the_newest_binlog


def _config(dsn: str, state_dsn: str, db: str, table: str = "items") -> str:
    return f"""
erp: {{dsn: "{dsn}"}}
source: {{kind: mysql_binlog, server_id: 77}}
state: {{dsn: "{state_dsn}"}}
crm: {{kind: discard}}
mappings:
  items: {{table: {db}.{table}, object: product, fields: {{name: name}}}}
"""


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def test_a_ready_server_and_a_least_privilege_user_pass(mariadb: MariaDb, mariadb_db: str, pg_db: str) -> None:
    mariadb.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))", db=mariadb_db)
    user = f"rep_{mariadb_db}"
    mariadb.create_user(user, "s3cret")
    try:
        found = _by_check(
            mysql_checks(parse_config(_config(mariadb.dsn(mariadb_db, user, "s3cret"), pg_db, mariadb_db)))
        )
    finally:
        mariadb.execute(f"DROP USER '{user}'@'127.0.0.1'")
    assert {c: f.level for c, f in found.items()} == {
        "ERP reachable": "ok",
        "log_bin": "ok",
        "binlog_format": "ok",
        "binlog_row_image": "ok",
        "binlog_row_metadata": "ok",
        "GTID": "ok",
        "grants": "ok",
        f"table {mariadb_db}.items": "ok",
    }
    assert found["ERP reachable"].detail.startswith("MariaDB 10.")


def test_missing_grants_wrong_settings_and_tables_fail_with_their_fix(
    mariadb: MariaDb, mariadb_db: str, pg_db: str
) -> None:
    mariadb.execute("CREATE TABLE items (name VARCHAR(20))", db=mariadb_db)  # no primary key
    user = f"ro_{mariadb_db}"
    mariadb.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'")
    mariadb.execute(f"GRANT SELECT ON `{mariadb_db}`.* TO '{user}'@'127.0.0.1'")
    mariadb.execute("SET GLOBAL binlog_row_image = 'MINIMAL'")
    try:
        dsn = mariadb.dsn(mariadb_db, user, "pw")
        found = _by_check(mysql_checks(parse_config(_config(dsn, pg_db, mariadb_db))))
        missing = _by_check(mysql_checks(parse_config(_config(dsn, pg_db, mariadb_db, "nope"))))
    finally:
        mariadb.execute("SET GLOBAL binlog_row_image = 'FULL'")
        mariadb.execute(f"DROP USER '{user}'@'127.0.0.1'")
    assert found["binlog_row_image"].level == "fail" and "FULL" in found["binlog_row_image"].fix
    assert found["grants"].level == "fail"
    assert "REPLICATION SLAVE" in found["grants"].detail and "SELECT" not in found["grants"].detail
    assert (
        found[f"table {mariadb_db}.items"].level == "fail"
        and "primary key" in found[f"table {mariadb_db}.items"].detail
    )
    assert missing[f"table {mariadb_db}.nope"].detail == "does not exist"
    unreachable = mysql_checks(parse_config(_config(mariadb.dsn(mariadb_db, user, "wrong"), pg_db, mariadb_db)))
    assert [(f.check, f.level) for f in unreachable] == [("ERP reachable", "fail")]


def test_a_checkpoint_in_purged_binlogs_is_reported(pg_db: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="replicator-mariadb-check-", dir=os.environ.get("REPLICATOR_TMP")))
    server = start_mariadb(base)
    migrate(pg_db)
    store = StateStore(pg_db)
    try:
        server.create_database("c")
        server.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))", db="c")
        config = parse_config(_config(server.dsn("c"), pg_db, "c"))
        assert _by_check(mysql_checks(config))["checkpoint binlog"].detail.startswith("none yet")
        store.save_checkpoint("binlog", server.gtid_binlog_pos(), 0)
        server.execute("INSERT INTO items VALUES (1, 'a')", db="c")
        assert _by_check(mysql_checks(config))["checkpoint binlog"].level == "ok"
        purge_all_but_the_newest_binlog(server)
        found = _by_check(mysql_checks(config))["checkpoint binlog"]
    finally:
        store.close()
        server.destroy()
    assert found.level == "fail" and "purged" in found.detail and "backfill --restart" in found.fix
