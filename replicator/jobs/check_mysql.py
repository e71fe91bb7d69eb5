"""`replicator check` for a MariaDB/MySQL ERP: reachable, a replicable binary log, grants, tables."""

from __future__ import annotations

import re
from typing import Any

import pymysql

from replicator.app import StartupError, load_catalog, mapped_tables
from replicator.config.model import BinlogSourceConfig, Config
from replicator.jobs.check import Finding
from replicator.mapping.catalog import split_table
from replicator.mapping.mysql_conn import connect

_GRANT = re.compile(r"^GRANT (.+?) ON (\S+) TO ", re.IGNORECASE)


def mysql_checks(config: Config) -> list[Finding]:
    findings: list[Finding] = []
    binlog = isinstance(config.source, BinlogSourceConfig)
    try:
        conn = connect(config.erp.dsn.get_secret_value())
    except (pymysql.err.MySQLError, ValueError) as exc:
        findings.append(
            Finding("ERP reachable", "fail", _message(exc), "check erp.dsn, the network path and the password")
        )
        return findings
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT VERSION(), @@log_bin, @@binlog_format, @@binlog_row_image, "
                "@@binlog_row_metadata, @@gtid_binlog_pos, @@gtid_strict_mode"
            )
            version, log_bin, fmt, image, metadata, gtid_pos, strict = _row(cur, 7)
            cur.execute("SHOW GRANTS")
            grants = [str(g) for (g,) in cur.fetchall()]
    except pymysql.err.MySQLError as exc:
        # MySQL (not MariaDB) has no gtid_binlog_pos / binlog_row_metadata in older versions.
        findings.append(
            Finding("ERP reachable", "fail", _message(exc), "the binlog source needs MariaDB 10.5 or later")
        )
        return findings
    finally:
        conn.close()
    mariadb = "mariadb" in str(version).lower()
    findings.append(Finding("ERP reachable", "ok", f"{'MariaDB' if mariadb else 'MySQL'} {version}"))
    findings.extend(_binlog_settings(log_bin, fmt, image, metadata, binlog))
    if binlog:
        findings.append(_gtid(mariadb, str(gtid_pos or ""), strict))
        findings.extend(_checkpoint(config))
    findings.extend(_grants(grants, config, binlog))

    try:
        catalog = load_catalog(config)
    except StartupError as exc:
        findings.append(Finding("ERP catalog", "fail", str(exc)))
        return findings
    for table in mapped_tables(config):
        info = catalog.get(table)
        if info is None:
            findings.append(
                Finding(f"table {table}", "fail", "does not exist", "fix the mapping's table name (database.table)")
            )
        elif not info.primary_key:
            findings.append(
                Finding(
                    f"table {table}",
                    "fail",
                    "has no primary key: row events cannot name their record",
                    f"ALTER TABLE {table} ADD PRIMARY KEY (...)",
                )
            )
        else:
            findings.append(Finding(f"table {table}", "ok", f"primary key ({', '.join(info.primary_key)})"))
    return findings


def _row(cur: Any, width: int) -> tuple[Any, ...]:
    row = cur.fetchone()
    return tuple(row) if row else (None,) * width


def _message(exc: Exception) -> str:
    return str(exc.args[-1] if exc.args else exc).strip().splitlines()[0]


def _binlog_settings(log_bin: Any, fmt: Any, image: Any, metadata: Any, binlog: bool) -> list[Finding]:
    out = [
        Finding("log_bin", "ok", "on")
        if log_bin and int(log_bin)
        else Finding("log_bin", "fail", "the binary log is off", "set log_bin (and server_id) in [mariadbd]; restart"),
        Finding("binlog_format", "ok", "ROW")
        if str(fmt).upper() == "ROW"
        else Finding("binlog_format", "fail", f"is {fmt}", "SET GLOBAL binlog_format = 'ROW' (and in [mariadbd])"),
        Finding("binlog_row_image", "ok", "FULL")
        if str(image).upper() == "FULL"
        else Finding(
            "binlog_row_image",
            "fail",
            f"is {image}: updates would miss columns",
            "binlog_row_image = FULL in [mariadbd]",
        ),
    ]
    if binlog:
        out.append(
            Finding("binlog_row_metadata", "ok", "FULL")
            if str(metadata).upper() == "FULL"
            else Finding(
                "binlog_row_metadata",
                "fail",
                f"is {metadata}: row events carry no column names",
                "SET GLOBAL binlog_row_metadata = 'FULL' (and in [mariadbd])",
            )
        )
    return out


def _gtid(mariadb: bool, position: str, strict: Any) -> Finding:
    if not mariadb:
        return Finding(
            "GTID",
            "fail",
            "`source.kind: mysql_binlog` follows MariaDB GTIDs; this is MySQL",
            "use `source.kind: kafka` with Debezium's MySQL connector",
        )
    detail = f"position {position or '(empty: no transaction logged yet)'}"
    if not (strict and int(strict)):
        return Finding("GTID", "warn", f"{detail}; gtid_strict_mode is off", "set gtid_strict_mode = 1 in [mariadbd]")
    return Finding("GTID", "ok", f"{detail}, strict mode")


def _checkpoint(config: Config) -> list[Finding]:
    """A stored position the server can no longer stream from is worth knowing before `run`."""
    import psycopg

    from replicator.sources.binlog import check_resumable

    assert isinstance(config.source, BinlogSourceConfig)
    name = config.source.name
    try:
        with psycopg.connect(config.state_dsn, connect_timeout=10) as conn:
            row = conn.execute("SELECT position FROM replicator.checkpoints WHERE stream = %s", (name,)).fetchone()
    except psycopg.Error:
        return []  # no state schema yet: the state-schema check says so
    if row is None:
        return [Finding(f"checkpoint {name}", "ok", "none yet: `run` starts at the current position")]
    lost = check_resumable(config.erp.dsn.get_secret_value(), str(row[0]))
    if lost:
        return [
            Finding(
                f"checkpoint {name}",
                "fail",
                f"GTID {row[0]} is in purged binary logs (up to {', '.join(lost)})",
                f"DELETE FROM replicator.checkpoints WHERE stream = '{name}'; "
                "run, then `replicator backfill --restart`",
            )
        ]
    return [Finding(f"checkpoint {name}", "ok", f"GTID {row[0]}, still in the binary logs")]


def _privileges(grants: list[str]) -> dict[str, set[str]]:
    """Privileges per target (`*.*`, `db`.*, `db`.`table`), upper case, without backticks."""
    out: dict[str, set[str]] = {}
    for grant in grants:
        found = _GRANT.match(grant)
        if not found:
            continue
        target = found.group(2).replace("`", "")
        privs = {p.strip().upper() for p in found.group(1).split(",")}
        out.setdefault(target, set()).update(privs)
    return out


def _has(privs: dict[str, set[str]], wanted: set[str], targets: list[str]) -> bool:
    for target in targets:
        held = privs.get(target, set())
        if "ALL PRIVILEGES" in held or wanted & held:
            return True
    return False


def _grants(grants: list[str], config: Config, binlog: bool) -> list[Finding]:
    privs = _privileges(grants)
    missing = []
    if binlog:
        if not _has(privs, {"REPLICATION SLAVE", "REPLICATION REPLICA"}, ["*.*"]):
            missing.append("REPLICATION SLAVE")
        # MariaDB 10.5 renamed REPLICATION CLIENT to BINLOG MONITOR.
        if not _has(privs, {"REPLICATION CLIENT", "BINLOG MONITOR"}, ["*.*"]):
            missing.append("REPLICATION CLIENT")
    unreadable = []
    for table in mapped_tables(config):
        schema, name = split_table(table)
        if not _has(privs, {"SELECT"}, ["*.*", f"{schema}.*", f"{schema}.{name}"]):
            unreadable.append(table)
    if unreadable:
        missing.append(f"SELECT on {', '.join(unreadable)}")
    if missing:
        return [
            Finding(
                "grants",
                "fail",
                f"the ERP user lacks {'; '.join(missing)}",
                "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO <user> "
                "(or SELECT on the mapped databases only)",
            )
        ]
    return [Finding("grants", "ok", "SELECT" + (", REPLICATION SLAVE, REPLICATION CLIENT" if binlog else ""))]
