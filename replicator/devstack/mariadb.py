"""A throwaway MariaDB server (Debian's `mariadb-server`) set up as a replicable ERP.

Its own datadir, port and socket, loopback only, a ROW-format binary log with full
row images and full row metadata (column names in the binlog), GTIDs. Stopped by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from replicator.devstack.cache import log_tail, stop_pid
from replicator.devstack.postgres import free_port

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
SERVER_ID = 1
# What `source.kind: mysql_binlog` needs: read rows and the catalog, stream the binary log.
REPLICATOR_GRANTS = "SELECT, REPLICATION SLAVE, REPLICATION CLIENT"


def mariadbd() -> str:
    for candidate in (MARIADBD, shutil.which("mariadbd"), shutil.which("mysqld")):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(
        "MariaDB server not found; install it with `apt-get install mariadb-server` (script/bootstrap does this)"
    )


def server_version(binary: str | None = None) -> str:
    """'10.11.19' from `mariadbd --version`."""
    out = subprocess.run([binary or mariadbd(), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Ver (\d+\.\d+\.\d+)", out)
    if not found:
        raise RuntimeError(f"cannot read the MariaDB version from {out!r}")
    return found.group(1)


def debezium_spoof_version(version: str) -> str:
    """The version string Debezium's MySQL connector accepts from MariaDB (tests only, see start_mariadb)."""
    return f"5.7.19-MariaDB-{version}"


@dataclass
class MariaDb:
    """A running server; the `root` account has no password and reaches it over loopback TCP."""

    workdir: Path
    port: int
    pid: int
    socket: Path
    host: str = "127.0.0.1"
    user: str = "root"

    def dsn(self, db: str = "", user: str | None = None, password: str | None = None) -> str:
        """`mysql://user[:password]@127.0.0.1:port/db`, the form `erp.dsn` takes."""
        auth = user or self.user
        if password:
            auth += f":{password}"
        return f"mysql://{auth}@{self.host}:{self.port}/{db}"

    def connect(self, db: str | None = None, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A root connection in autocommit mode."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            database=db,
            autocommit=True,
            charset="utf8mb4",
            **kwargs,
        )

    @contextmanager
    def cursor(self, db: str | None = None) -> Iterator[Any]:
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def execute(self, statement: str, params: Any = None, db: str | None = None) -> list[tuple[Any, ...]]:
        with self.cursor(db) as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    def execute_script(self, script: str, db: str | None = None) -> None:
        """Runs a file of `;`-separated statements (no procedures or DELIMITER)."""
        conn = self.connect(db, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        try:
            with conn.cursor() as cur:
                cur.execute(script)
                while cur.nextset():
                    pass
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def create_user(self, name: str, password: str, grants: str = REPLICATOR_GRANTS) -> None:
        """An account reaching the server from 127.0.0.1 with `grants` ON *.*."""
        self.execute(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        self.execute(f"GRANT {grants} ON *.* TO '{name}'@'127.0.0.1'")

    def gtid_binlog_pos(self) -> str:
        return str(self.execute("SELECT @@gtid_binlog_pos")[0][0])

    def stop(self) -> None:
        stop_pid(self.pid, timeout=30)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.socket.parent != self.workdir:
            shutil.rmtree(self.socket.parent, ignore_errors=True)


def _socket_path(workdir: Path) -> Path:
    # A unix socket path must fit in 108 bytes; pytest's temporary paths can be longer.
    path = workdir / "mariadbd.sock"
    if len(str(path)) < 100:
        return path
    return Path(tempfile.mkdtemp(prefix="mdb-")) / "sock"


def _config(workdir: Path, port: int, socket: Path, version: str | None) -> str:
    lines = [
        "[mariadbd]",
        f"datadir={workdir / 'data'}",
        f"socket={socket}",
        f"port={port}",
        "bind-address=127.0.0.1",
        f"pid-file={workdir / 'mariadbd.pid'}",
        f"log-error={workdir / 'error.log'}",
        "skip-name-resolve",
        # Replication source settings: what a replicator (and Debezium) needs.
        "log_bin=mariadb-bin",
        "binlog_format=ROW",
        "binlog_row_image=FULL",
        "binlog_row_metadata=FULL",
        f"server_id={SERVER_ID}",
        "gtid_domain_id=0",
        "gtid_strict_mode=1",
        "character-set-server=utf8mb4",
        "collation-server=utf8mb4_general_ci",
        "default-time-zone=+00:00",
        # Small and fast: a test server, not a durable one.
        "performance_schema=OFF",
        "innodb_buffer_pool_size=64M",
        "innodb_log_file_size=16M",
        "innodb_flush_log_at_trx_commit=2",
        "sync_binlog=0",
        "max_connections=200",
    ]
    if version is not None:
        lines.append(f"version={version}")
    return "\n".join(lines) + "\n"


def _as_user() -> list[str]:
    # mariadbd refuses to run as root unless told to; the datadir is ours, so root it is.
    return ["--user=root"] if os.geteuid() == 0 else []


def start_mariadb(workdir: Path, *, spoof_version_for_debezium: bool = False, port: int | None = None) -> MariaDb:
    """Install a fresh datadir under `workdir` (once) and start the server on a free loopback port.

    `spoof_version_for_debezium` is for TESTS ONLY: it makes the server report
    `5.7.19-MariaDB-<version>` to every client, because Debezium's MySQL connector refuses
    MariaDB 10.11's real version string. Never do this to a production server: production
    MariaDB is read with Debezium's MariaDB connector or with `source.kind: mysql_binlog`.
    """
    binary = mariadbd()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    socket = _socket_path(workdir)
    version = debezium_spoof_version(server_version(binary)) if spoof_version_for_debezium else None
    cnf = workdir / "my.cnf"
    cnf.write_text(_config(workdir, port, socket, version))
    if not (workdir / "data" / "mysql").exists():
        installed = subprocess.run(
            [
                shutil.which(INSTALL_DB) or INSTALL_DB,
                f"--defaults-file={cnf}",
                *_as_user(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{installed.stdout}\n{installed.stderr}")
    log = (workdir / "mariadbd.out").open("w")
    proc = subprocess.Popen(
        [binary, f"--defaults-file={cnf}", *_as_user()],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop_pid can take it down whole
    )
    log.close()
    server = MariaDb(workdir=workdir, port=port, pid=proc.pid, socket=socket)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {proc.returncode}:\n{log_tail(workdir / 'error.log', 30)}")
        try:
            server.connect(connect_timeout=2).close()
            return server
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"MariaDB did not start:\n{log_tail(workdir / 'error.log', 30)}") from None
            time.sleep(0.1)


if __name__ == "__main__":  # a quick manual check: start, print the DSN, stop
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_mariadb(Path(tmp))
        print(srv.dsn(), srv.execute("SELECT VERSION(), @@gtid_binlog_pos"))
        srv.stop()
