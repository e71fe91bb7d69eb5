"""`replicator check` for CRM -> ERP: reverse mappings, a feed of CRM changes, and the rights to write."""

from __future__ import annotations

import psycopg

from replicator.config.model import Config
from replicator.jobs.check import Finding
from replicator.mapping.expr import MappingError
from replicator.mapping.reverse import ReverseEntity
from replicator.sinks.base import CrmError
from replicator.sources.crm import feeds


def two_way_checks(config: Config) -> list[Finding]:
    if not any(e.crm_to_erp for e in config.mappings.values()):
        return []
    from replicator.app import build_entities, load_catalog, make_sink
    from replicator.mapping.reverse import compile_reverse

    findings: list[Finding] = []
    crm = config.crm
    poll = feeds.poll_config(config)
    path = feeds.webhook_path(config)
    if poll is None:
        findings.append(Finding("CRM change feed", "fail", f"crm.kind {crm.kind} has no CRM changes to read"))
    elif path is None and poll.interval_s == 0:
        findings.append(
            Finding("CRM change feed", "fail", "neither webhooks nor polling", "set crm.webhooks and/or crm.poll")
        )
    elif path is None and feeds.offers_webhooks(config):
        findings.append(
            Finding(
                "CRM change feed",
                "warn",
                f"polling only, every {poll.interval_s:.0f} s",
                "add a webhook and crm.webhooks for changes within a second",
            )
        )
    elif path is None:
        findings.append(Finding("CRM change feed", "ok", f"polling every {poll.interval_s:.0f} s"))
    else:
        findings.append(Finding("CRM change feed", "ok", f"webhooks on {path}"))
    sink = make_sink(config)
    try:
        # The CRM's field names, as the service checks them at startup (HubSpot and Salesforce: read from the CRM).
        crm_fields = feeds.crm_fields(config, sink)
        catalog = load_catalog(config)
        reverse = compile_reverse(config.mappings, build_entities(config, catalog), catalog, crm_fields)
        findings.append(Finding("reverse mappings", "ok", f"{len(reverse)} entities write CRM changes back"))
    except MappingError as exc:
        return [*findings, Finding("reverse mappings", "fail", str(exc))]
    except CrmError as exc:
        return [*findings, Finding("reverse mappings", "fail", f"cannot read the CRM's field names: {exc}")]
    finally:
        sink.close()
    if config.erp.dialect == "postgres":
        findings.extend(_postgres_rights(config, reverse))
    return findings


def _postgres_rights(config: Config, reverse: dict[str, ReverseEntity]) -> list[Finding]:
    wanted: dict[str, set[str]] = {}
    for rent in reverse.values():
        wanted.setdefault(rent.entity.table, set()).add("UPDATE")
        if rent.insert:
            wanted[rent.entity.table].add("INSERT")
        if rent.delete == "delete":
            wanted[rent.entity.table].add("DELETE")
        if rent.lines is not None:
            wanted.setdefault(rent.lines.table, set()).add("INSERT")
    findings = []
    try:
        with psycopg.connect(config.erp.dsn.get_secret_value(), connect_timeout=10) as conn:
            for table, rights in sorted(wanted.items()):
                missing = [
                    r
                    for r in sorted(rights)
                    if not conn.execute("SELECT has_table_privilege(%s, %s)", (table, r)).fetchone()[0]  # type: ignore[index]
                ]
                if missing:
                    findings.append(
                        Finding(
                            f"write {table}",
                            "fail",
                            f"the ERP user lacks {', '.join(missing)}",
                            f"GRANT {', '.join(missing)} ON {table} TO <replicator role> "
                            "(see sql/roles/replicator_role.sql)",
                        )
                    )
                else:
                    findings.append(Finding(f"write {table}", "ok", ", ".join(sorted(rights))))
            row = conn.execute(
                "SELECT has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE')"
            ).fetchone()
            if row and row[0]:
                findings.append(Finding("echo suppression", "ok", "replication origin usable"))
            else:
                findings.append(
                    Finding(
                        "echo suppression",
                        "fail",
                        "cannot tag our writes with a replication origin",
                        "GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), "
                        "pg_replication_origin_create(text), pg_replication_origin_oid(text) TO <replicator role>",
                    )
                )
    except psycopg.OperationalError as exc:
        findings.append(Finding("ERP writes", "fail", str(exc).strip().splitlines()[0], "check erp.dsn"))
    return findings
