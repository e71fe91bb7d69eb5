"""`replicator check`: the configuration and the environment, each finding with its fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.app import StartupError, build_entities, load_catalog, make_sink, mapped_tables
from replicator.config.model import Config, SlotSourceConfig
from replicator.mapping.expr import MappingError
from replicator.sources import pg_admin
from replicator.state import migrations


@dataclass
class Finding:
    check: str
    level: str  # ok, warn, fail
    detail: str
    fix: str = ""


def run_checks(config: Config) -> list[Finding]:
    findings: list[Finding] = []
    if config.erp.dialect == "postgres":
        erp = _postgres_checks(config)
    else:
        from replicator.jobs.check_mysql import mysql_checks

        erp = mysql_checks(config)
    findings.extend(erp)
    if any(f.level == "fail" and f.check in ("ERP reachable", "ERP catalog") for f in erp):
        return findings

    try:
        build_entities(config)
        findings.append(Finding("mappings", "ok", f"{len(config.mappings)} entities compile"))
    except MappingError as exc:
        findings.append(Finding("mappings", "fail", str(exc)))

    src = config.source
    if isinstance(src, SlotSourceConfig):
        findings.extend(_slot_checks(config, src))
    elif src.kind == "kafka":
        from replicator.jobs.check_kafka import kafka_checks

        findings.extend(kafka_checks(config))

    try:
        waiting = migrations.pending(config.state_dsn)
        findings.append(
            Finding("state schema", "ok", "current")
            if not waiting
            else Finding("state schema", "fail", f"{len(waiting)} migration(s) pending", "run `replicator setup`")
        )
    except psycopg.OperationalError as exc:
        findings.append(Finding("state schema", "fail", str(exc).strip().splitlines()[0], "check state.dsn"))

    findings.extend(_crm_checks(make_sink(config)))
    from replicator.jobs.check_two_way import two_way_checks

    findings.extend(two_way_checks(config))
    return findings


def _postgres_checks(config: Config) -> list[Finding]:
    findings: list[Finding] = []
    dsn = config.erp.dsn.get_secret_value()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        findings.append(Finding("ERP reachable", "ok", f"PostgreSQL {version[0] if version else '?'}"))
    except psycopg.OperationalError as exc:
        findings.append(
            Finding(
                "ERP reachable",
                "fail",
                str(exc).strip().splitlines()[0],
                "check erp.dsn, the network path and the password",
            )
        )
        return findings

    level = pg_admin.wal_level(dsn)
    if isinstance(config.source, SlotSourceConfig) or level != "logical":
        # Debezium's PostgreSQL connector needs logical decoding as much as the slot source does.
        findings.append(
            Finding("wal_level", "ok", level)
            if level == "logical"
            else Finding(
                "wal_level", "fail", f"is {level!r}", "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
            )
        )

    try:
        catalog = load_catalog(config)
    except StartupError as exc:
        findings.append(Finding("ERP catalog", "fail", str(exc)))
        return findings
    for table in mapped_tables(config):
        info = catalog.get(table)
        if info is None:
            findings.append(Finding(f"table {table}", "fail", "does not exist", "fix the mapping's table name"))
            continue
        if info.replica_identity == "n":
            findings.append(
                Finding(
                    f"replica identity {table}",
                    "fail",
                    "NOTHING: deletes cannot be captured",
                    f"ALTER TABLE {table} REPLICA IDENTITY DEFAULT",
                )
            )
        elif info.replica_identity == "d" and not info.primary_key:
            findings.append(
                Finding(
                    f"replica identity {table}",
                    "fail",
                    "DEFAULT without a primary key",
                    f"add a primary key or ALTER TABLE {table} REPLICA IDENTITY FULL",
                )
            )
        else:
            kind = {"d": "DEFAULT (primary key)", "f": "FULL", "i": "USING INDEX"}[info.replica_identity]
            findings.append(Finding(f"replica identity {table}", "ok", kind))
    return findings


def _slot_checks(config: Config, src: SlotSourceConfig) -> list[Finding]:
    findings: list[Finding] = []
    dsn = config.erp.dsn.get_secret_value()
    published = set(pg_admin.publication_tables(dsn, src.publication))
    missing = [t for t in mapped_tables(config) if t not in published]
    if missing:
        findings.append(
            Finding(
                f"publication {src.publication}",
                "fail",
                f"does not publish {', '.join(missing)}",
                "run `replicator setup`",
            )
        )
    else:
        findings.append(Finding(f"publication {src.publication}", "ok", f"{len(published)} tables"))

    slot = pg_admin.slot_info(dsn, src.slot)
    if not slot.exists:
        findings.append(Finding(f"slot {src.slot}", "fail", "does not exist", "run `replicator setup`"))
    else:
        retained = slot.retained_bytes or 0
        lvl = "warn" if retained > src.lag_warn_bytes else "ok"
        findings.append(
            Finding(
                f"slot {src.slot}",
                lvl,
                f"{'active' if slot.active else 'inactive'}, retains {retained / 1048576:.1f} MiB of WAL",
                "the replicator is behind or stopped: start it, or drop the slot if it is retired"
                if lvl == "warn"
                else "",
            )
        )
    return findings


def _crm_checks(sink: Any) -> list[Finding]:
    check = getattr(sink, "check", None)
    if check is None:
        return [Finding("CRM", "ok", f"{sink.name} sink needs no checks")]
    out = []
    try:
        for name, ok, detail in check():
            out.append(Finding(name, "ok" if ok else "fail", detail, "" if ok else detail))
    except Exception as exc:  # the CRM being down is a finding, not a crash
        out.append(Finding("CRM reachable", "fail", str(exc), "check crm.url and that the CRM is up"))
    finally:
        sink.close()
    return out
