"""The MariaDB dev server is set up as a replication source."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from replicator.devstack.cache import reaped
from replicator.devstack.mariadb import MariaDb, start_mariadb


def test_server_is_a_row_binlog_gtid_source(mariadb: MariaDb, mariadb_db: str) -> None:
    settings = mariadb.execute(
        "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@server_id, "
        "@@gtid_strict_mode, @@bind_address"
    )[0]
    assert settings == (1, "ROW", "FULL", "FULL", 1, 1, "127.0.0.1")
    before = mariadb.gtid_binlog_pos()
    mariadb.execute("CREATE TABLE t (id INT PRIMARY KEY)", db=mariadb_db)
    mariadb.execute("INSERT INTO t VALUES (1)", db=mariadb_db)
    after = mariadb.gtid_binlog_pos()
    assert after != before and after.startswith("0-1-")
    assert mariadb.dsn(mariadb_db) == f"mysql://root@127.0.0.1:{mariadb.port}/{mariadb_db}"


def test_debezium_version_spoof_is_opt_in_and_stop_ends_the_process() -> None:
    base = Path(tempfile.mkdtemp(prefix="replicator-mariadb-t-", dir=os.environ.get("REPLICATOR_TMP")))
    server = start_mariadb(base, spoof_version_for_debezium=True)
    try:
        version = server.execute("SELECT VERSION()")[0][0]
        assert version.startswith("5.7.19-MariaDB-10.")
    finally:
        server.destroy()
    assert reaped(server.pid)
    assert not base.exists()
