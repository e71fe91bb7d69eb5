"""Opening the ERP writer for the configured database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from replicator.mapping.catalog import TableInfo
from replicator.sinks.erp.model import ErpWriter
from replicator.sinks.erp.writer import SqlWriter


def open_writer(
    dsn: str,
    dialect: Literal["postgres", "mysql"],
    catalog: Mapping[str, TableInfo],
    *,
    origin: str | None = "replicator",
    timezone: str = "UTC",
) -> ErpWriter:
    """A connected writer. `origin` (PostgreSQL only) tags our transactions for echo suppression;
    `timezone` is the ERP's zone for naive timestamps and columns without a time zone."""
    if dialect == "postgres":
        from replicator.sinks.erp.postgres import PostgresDriver

        return SqlWriter(PostgresDriver(dsn, origin=origin, timezone=timezone), catalog, timezone=timezone)
    if dialect == "mysql":
        from replicator.sinks.erp.mysql import MysqlDriver

        return SqlWriter(MysqlDriver(dsn, catalog, timezone=timezone), catalog, timezone=timezone)
    raise ValueError(f"erp writer: unknown dialect {dialect!r}; expected postgres or mysql")
