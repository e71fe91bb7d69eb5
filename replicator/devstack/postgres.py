"""A throwaway PostgreSQL 15 cluster with ``wal_level=logical``."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found; install them with `apt-get install postgresql-15` "
        "(script/bootstrap does this)"
    )


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in [path, *path.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid)


@dataclass
class PgCluster:
    """A running cluster; ``dsn(db)`` gives a libpq connection string."""

    datadir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={dbname}", f"user={user or self.user}"]
        if password:
            parts.append(f"password={password}")
        return " ".join(parts)

    def url(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        auth = user or self.user
        if password:
            auth += f":{password}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str, template: str | None = None, owner: str | None = None) -> None:
        sql = f'CREATE DATABASE "{name}"'
        if template:
            sql += f' TEMPLATE "{template}"'
        if owner:
            sql += f' OWNER "{owner}"'
        self.execute(sql)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @property
    def pidfile(self) -> Path:
        return self.datadir / "postmaster.pid"

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stop(self, mode: str = "fast") -> None:
        if not self.pidfile.exists():
            return
        subprocess.run(
            _as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def start_cluster(
    basedir: Path,
    port: int | None = None,
    *,
    fast: bool = True,
    extra_conf: dict[str, str] | None = None,
) -> PgCluster:
    """initdb (once) and start a cluster under ``basedir``; reuses an existing datadir."""
    bindir = pg_bin()
    basedir.mkdir(parents=True, exist_ok=True)
    datadir = basedir / "data"
    sockdir = basedir / "sock"
    sockdir.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        # runuser needs to traverse every parent of the datadir.
        for parent in [basedir, *basedir.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        _chown_to_postgres(basedir)
    cluster = PgCluster(datadir=datadir, port=port or free_port())
    if not (datadir / "PG_VERSION").exists():
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            ),
            check=True,
            capture_output=True,
        )
    conf = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(cluster.port),
        "unix_socket_directories": f"'{sockdir}'",
        "wal_level": "logical",
        "max_replication_slots": "20",
        "max_wal_senders": "20",
        "max_connections": "200",
        "timezone": "'UTC'",
    }
    if fast:
        conf.update({"fsync": "off", "full_page_writes": "off"})
    conf.update(extra_conf or {})
    (datadir / "postgresql.auto.conf").write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
    _chown_to_postgres(datadir)
    logfile = basedir / "postgres.log"
    if cluster.pid() and _alive(cluster.pid()):
        cluster.stop("immediate")
    subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(logfile), "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(cluster.dsn(), connect_timeout=2):
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; see {logfile}") from None
            time.sleep(0.1)
    return cluster


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
