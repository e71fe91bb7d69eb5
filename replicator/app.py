"""Building the running parts from a validated configuration.

Everything that can be checked before the first event is checked here:
tables and columns exist, expressions compile, lookups resolve, the state
schema is current. The CLI commands share these builders.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg

from replicator.config.model import BottleCrmConfig, Config, EntityConfig, HubSpotConfig, SalesforceConfig
from replicator.mapping.catalog import TableInfo, read_catalog
from replicator.mapping.entity import Entity, compile_mappings
from replicator.mapping.plan import Planner
from replicator.mapping.reader import ErpReader, RowReader
from replicator.pipeline.processor import Processor
from replicator.pipeline.two_way import CrmWrites
from replicator.state import migrations
from replicator.state.store import StateStore


class StartupError(RuntimeError):
    """A problem that stops the service before it reads anything, with its fix."""


def mapped_tables(config: Config) -> list[str]:
    tables: list[str] = []
    for entity in config.mappings.values():
        for table in [
            entity.table,
            *(r.table for r in entity.related.values()),
            *_line_tables(entity),
        ]:
            if table not in tables:
                tables.append(table)
    return tables


def _line_tables(entity: EntityConfig) -> list[str]:
    insert = entity.crm_to_erp.insert if entity.crm_to_erp else None
    return [insert.lines.table] if insert is not None and insert.lines is not None else []


def load_catalog(config: Config) -> dict[str, TableInfo]:
    if config.erp.dialect == "mysql":
        return _load_mysql_catalog(config)
    try:
        with psycopg.connect(config.erp.dsn.get_secret_value(), connect_timeout=10) as conn:
            return read_catalog(conn, mapped_tables(config))
    except psycopg.OperationalError as exc:
        raise StartupError(f"cannot connect to the ERP database (erp.dsn): {str(exc).strip()}") from None


def _load_mysql_catalog(config: Config) -> dict[str, TableInfo]:
    import pymysql

    from replicator.mapping.mysql_catalog import read_mysql_catalog
    from replicator.mapping.mysql_conn import connect

    try:
        conn = connect(config.erp.dsn.get_secret_value())
    except (pymysql.err.MySQLError, ValueError) as exc:
        raise StartupError(f"cannot connect to the ERP database (erp.dsn): {exc}") from None
    try:
        return read_mysql_catalog(conn, mapped_tables(config))
    finally:
        conn.close()


def build_entities(config: Config, catalog: dict[str, TableInfo] | None = None) -> dict[str, Entity]:
    return compile_mappings(
        config.mappings, catalog if catalog is not None else load_catalog(config), config.erp.dialect
    )


def open_reader(config: Config) -> RowReader:
    """The reader for the ERP's kind of database."""
    dsn = config.erp.dsn.get_secret_value()
    if config.erp.dialect == "mysql":
        from replicator.mapping.mysql_reader import MysqlReader

        return MysqlReader(dsn, config.erp.timezone)
    return ErpReader(dsn, config.erp.timezone)


def make_budget(config: Config) -> Any:
    """The CRM credential's API budget: shared through the state store by every process using it."""
    from replicator.state.budget import BudgetLimits, LocalBudget, SharedBudget, UnlimitedBudget, budget_key

    crm = config.crm
    if not isinstance(crm, HubSpotConfig | SalesforceConfig):
        return UnlimitedBudget()
    limits = crm.budget
    if limits.burst is None and limits.daily is None:
        return UnlimitedBudget()
    identity = (
        (crm.url, crm.token.get_secret_value()) if isinstance(crm, HubSpotConfig) else (crm.login_url, crm.client_id)
    )
    budget_limits = BudgetLimits(burst=limits.burst, window_s=limits.window_s, daily=limits.daily)
    if not limits.shared:
        return LocalBudget(budget_limits, crm=crm.kind)
    return SharedBudget(config.state_dsn, budget_key(crm.kind, *identity), budget_limits, crm=crm.kind)


def mapped_crm_fields(config: Config) -> dict[str, set[str]]:
    """CRM object -> the fields the mappings write or read back (HubSpot answers only what is asked)."""
    out: dict[str, set[str]] = {}
    for entity in config.mappings.values():
        names = out.setdefault(entity.object, set())
        names |= set(entity.fields) - set(entity.lookups)
        if entity.crm_to_erp is not None and entity.crm_to_erp.timestamps.crm:
            names.add(entity.crm_to_erp.timestamps.crm)
    return out


def make_sink(config: Config) -> Any:
    crm = config.crm
    if isinstance(crm, HubSpotConfig):
        from replicator.sinks.hubspot import HubSpotSink

        return HubSpotSink(
            crm.url,
            crm.token.get_secret_value(),
            id_property=crm.id_property,
            budget=make_budget(config),
            timeout=crm.timeout_s,
            concurrency=crm.concurrency,
            properties=mapped_crm_fields(config),
        )
    if isinstance(crm, SalesforceConfig):
        from replicator.sinks.salesforce import SalesforceSink

        return SalesforceSink(
            crm.login_url,
            client_id=crm.client_id,
            client_secret=crm.client_secret.get_secret_value(),
            refresh_token=crm.refresh_token.get_secret_value() if crm.refresh_token else None,
            username=crm.username,
            password=crm.password.get_secret_value() if crm.password else None,
            api_version=crm.api_version,
            external_id_field=crm.external_id_field,
            budget=make_budget(config),
            timeout=crm.timeout_s,
            bulk_threshold=crm.bulk_threshold,
            concurrency=crm.concurrency,
        )
    if isinstance(crm, BottleCrmConfig):
        from replicator.sinks.bottlecrm import BottleCrmSink

        return BottleCrmSink(
            crm.url,
            crm.token.get_secret_value(),
            external_id_field=crm.external_id_field,
            concurrency=crm.concurrency,
            timeout=crm.timeout_s,
        )
    from replicator.sinks.null import NullSink

    return NullSink()


def open_store(config: Config) -> StateStore:
    dsn = config.state_dsn
    try:
        waiting = migrations.pending(dsn)
    except psycopg.OperationalError as exc:
        raise StartupError(f"cannot connect to the state database (state.dsn): {str(exc).strip()}") from None
    if waiting:
        names = ", ".join(m.path.name for m in waiting)
        raise StartupError(f"state schema is not current (pending: {names}); run `replicator setup`")
    return StateStore(dsn)


@dataclass
class Parts:
    config: Config
    entities: dict[str, Entity]
    planner: Planner
    reader: RowReader
    store: StateStore
    sink: Any
    catalog: dict[str, TableInfo]
    closers: list[Any] = field(default_factory=list)
    # Shared by both directions of a two-way service: which CRM records this process wrote.
    crm_writes: CrmWrites = field(default_factory=CrmWrites)

    def processor(self, stop: threading.Event | None = None, *, gate: threading.Lock | None = None) -> Processor:
        """The ERP -> CRM processor; with two-way mappings it carries the guard that keeps the
        values both sides agree on, whatever runs it (the service, backfill, replay, repair)."""
        guard = None
        if any(e.crm_to_erp for e in self.config.mappings.values()):
            from replicator.crm_to_erp import forward_guard

            guard = forward_guard(self)
        return Processor(
            self.planner, self.reader, self.store, self.sink, self.config.pipeline.retry, stop, guard=guard, gate=gate
        )

    def close(self) -> None:
        for closer in (*self.closers, self.sink.close, self.reader.close, self.store.close):
            with suppress(Exception):
                closer()


def build(config: Config) -> Parts:
    catalog = load_catalog(config)
    entities = build_entities(config, catalog)
    store = open_store(config)
    reader = open_reader(config)
    return Parts(config, entities, Planner(entities), reader, store, make_sink(config), catalog)
