"""`replicator setup`: state schema, publication, slot, CRM external-id fields."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from replicator.app import build_entities, make_sink, mapped_tables
from replicator.config.model import Config, SlotSourceConfig
from replicator.sources import pg_admin
from replicator.state import migrations


@dataclass
class Step:
    what: str
    detail: str


def setup(config: Config, *, crm: bool = True) -> list[Step]:
    steps: list[Step] = []
    applied = migrations.migrate(config.state_dsn)
    steps.append(Step("state schema", f"applied {', '.join(m.path.name for m in applied)}" if applied else "current"))
    build_entities(config)  # refuse to publish tables for a mapping that does not compile
    steps.extend(_source_setup(config))
    if crm:
        sink = make_sink(config)
        try:
            ensure = getattr(sink, "ensure_setup", None)
            if ensure is not None:
                ensure()
                steps.append(Step(f"CRM {sink.name}", "external-id fields present"))
        finally:
            sink.close()
    return steps


def _source_setup(config: Config) -> list[Step]:
    src = config.source
    if isinstance(src, SlotSourceConfig):
        dsn = config.erp.dsn.get_secret_value()
        tables = mapped_tables(config)
        pg_admin.create_publication(dsn, src.publication, tables)
        created = pg_admin.create_slot(dsn, src.slot)
        return [
            Step(f"publication {src.publication}", ", ".join(tables)),
            Step(f"slot {src.slot}", "created" if created else "exists"),
        ]
    # Kafka: Debezium connectors are registered with `setup --connect`; binlog: nothing to create.
    return []


def role_script() -> str:
    return (migrations.sql_dir() / "roles" / "replicator_role.sql").read_text()


def apply_role_script(dsn: str, role: str, password: str | None) -> None:
    """Run the role script through psql, which understands its \\gexec and \\if."""
    args = [
        "psql",
        dsn,
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        f"role={role}",
        "-f",
        str(migrations.sql_dir() / "roles" / "replicator_role.sql"),
    ]
    if password:
        quoted = password.replace("'", "''")
        args[3:3] = ["-v", f"password='{quoted}'"]
    subprocess.run(args, check=True, capture_output=True, text=True)
