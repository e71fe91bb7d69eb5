"""Commands about records: preview, status, dead letters, reconcile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from replicator.cli.app import ConfigOpt, app, build_parts, console, load, out

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, replay, discard.")
app.add_typer(dlq_app, name="dlq")


@app.command()
def preview(
    config: ConfigOpt,
    entity: Annotated[str, typer.Argument(help="mapped entity name")],
    key: Annotated[list[str], typer.Argument(help="ERP key value(s), in key-column order")],
) -> None:
    """Print the CRM payload an ERP row becomes, without sending it."""
    from replicator.change import Change, Op, Position
    from replicator.mapping.plan import Target, no_hashes

    parts = build_parts(load(config))
    try:
        ent = parts.entities.get(entity)
        if ent is None:
            console.print(f"[red]error:[/red] no entity {entity!r}; mapped: {', '.join(parts.entities)}")
            raise typer.Exit(2)
        if len(key) != len(ent.key):
            console.print(f"[red]error:[/red] {entity} has key ({', '.join(ent.key)}): give {len(ent.key)} value(s)")
            raise typer.Exit(2)
        rows = parts.reader.rows_by_key(ent.table, ent.key, [tuple(key)], types=ent.key_types)
        row = next(iter(rows.values()), None)
        if row is None:
            console.print(f"[red]error:[/red] no row in {ent.table} with ({', '.join(ent.key)}) = ({', '.join(key)})")
            raise typer.Exit(1)
        k = ent.key_of(row)
        target = Target(ent, k, Change("preview", ent.table, Op.READ, k, None, row, Position("preview", 0)), row)
        planned = parts.planner.plan([target], parts.reader, parts.store.crm_ids, no_hashes)[0]
        if planned.error:
            console.print(f"[red]{planned.error}[/red]")
            raise typer.Exit(1)
        if planned.op is None:
            out.print_json(orjson.dumps({"skip": str(planned.skip)}).decode())
            return
        op = planned.op
        out.print_json(
            orjson.dumps(
                {
                    "object": op.object,
                    "action": op.action,
                    "external_id": op.external_id,
                    "crm_id": op.crm_id,
                    "record": op.record,
                }
            ).decode()
        )
    finally:
        parts.close()


@app.command()
def status(config: ConfigOpt) -> None:
    """Source position and lag, per-entity sync state, open dead letters."""
    from replicator.config.model import SlotSourceConfig
    from replicator.sources.pg_admin import int_to_lsn, slot_info

    cfg = load(config)
    parts = build_parts(cfg)
    try:
        src = cfg.source
        if isinstance(src, SlotSourceConfig):
            info = slot_info(cfg.erp.dsn.get_secret_value(), src.slot)
            slot = Table("slot", "active", "confirmed", "retained WAL")
            slot.add_row(
                src.slot,
                str(info.active),
                int_to_lsn(info.confirmed_flush_lsn) if info.confirmed_flush_lsn else "-",
                f"{(info.retained_bytes or 0) / 1048576:.1f} MiB" if info.exists else "missing",
            )
            out.print(slot)
        connect = getattr(src, "connect", None)
        if connect is not None:
            _print_connectors(connect.url, connect.connectors, config)
        states = Table("entity", "status", "rows")
        for entity, state, n in parts.store.sync_summary():
            states.add_row(entity, state, str(n))
        out.print(states)
        checkpoints = Table("stream", "position", "updated")
        for c in parts.store.checkpoints():
            checkpoints.add_row(c["stream"], c["position"], c["updated_at"].isoformat(timespec="seconds"))
        out.print(checkpoints)
        out.print(f"open dead letters: {parts.store.open_dead_letters()}")
        if any(e.crm_to_erp for e in cfg.mappings.values()):
            _print_crm_to_erp(cfg.state_dsn)
    finally:
        parts.close()


def _print_crm_to_erp(state_dsn: str) -> None:
    """The CRM -> ERP side: notifications waiting in the inbox, open conflicts."""
    import psycopg

    with psycopg.connect(state_dsn) as conn:
        inbox = conn.execute(
            "SELECT crm, count(*) FILTER (WHERE processed_at IS NULL), min(received_at) FILTER "
            "(WHERE processed_at IS NULL), max(processed_at) FROM replicator.inbox GROUP BY crm ORDER BY crm"
        ).fetchall()
        conflicts = conn.execute("SELECT count(*) FROM replicator.conflicts WHERE status = 'open'").fetchone()
    table = Table("CRM inbox", "waiting", "oldest waiting since", "last applied")
    for crm, waiting, oldest, last in inbox:
        table.add_row(
            crm,
            str(waiting),
            oldest.isoformat(timespec="seconds") if oldest else "-",
            last.isoformat(timespec="seconds") if last else "-",
        )
    out.print(table)
    out.print(f"open conflicts: {conflicts[0] if conflicts else 0} (`replicator conflicts list`)")


def _print_connectors(url: str, files: list[str], config_path: Path) -> None:
    """Debezium connector and task states from Kafka Connect (source.connect)."""
    from replicator.jobs.connect import ConnectClient, ConnectError, connector_names, connector_states, resolve_files

    client = ConnectClient(url, timeout=10)
    try:
        found = connector_states(client, connector_names(resolve_files(config_path, files)))
    except ConnectError as exc:
        out.print(f"connectors: {exc}", highlight=False)
        return
    finally:
        client.close()
    table = Table("connector", "state", "tasks", "detail")
    for name, state in found:
        if state is None:
            table.add_row(name, "not registered", "-", "replicator setup --connect registers it")
            continue
        table.add_row(name, state.state, state.tasks_text, state.detail)
    out.print(table)


@dlq_app.command("list")
def dlq_list(
    config: ConfigOpt,
    entity: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str, typer.Option(help="open, replayed, discarded or all")] = "open",
) -> None:
    """List dead letters (also queryable: SELECT * FROM replicator.dead_letters)."""
    parts = build_parts(load(config))
    try:
        table = Table("id", "entity", "erp key", "op", "attempts", "last seen", "reason")
        for d in parts.store.dead_letters(status=None if status == "all" else status, entity=entity):
            table.add_row(
                str(d.id),
                d.entity,
                d.erp_key,
                d.op,
                str(d.attempts),
                d.last_seen.isoformat(timespec="seconds"),
                d.reason,
            )
        out.print(table)
    finally:
        parts.close()


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigOpt,
    ids: Annotated[list[int] | None, typer.Argument(help="dead-letter ids; none = every open one")] = None,
    entity: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Re-sync dead-lettered records from the ERP's current rows."""
    from replicator.jobs.replay import replay

    parts = build_parts(load(config))
    try:
        results = replay(parts, ids=ids, entity=entity)
    finally:
        parts.close()
    failed = 0
    for r in results:
        failed += not r.ok
        console.print(
            f"#{r.letter_id} {r.entity} {r.erp_key}: {'ok' if r.ok else 'failed: ' + r.detail}", highlight=False
        )
    if failed:
        raise typer.Exit(1)


@dlq_app.command("discard")
def dlq_discard(config: ConfigOpt, ids: Annotated[list[int], typer.Argument()]) -> None:
    """Mark dead letters as discarded (kept for audit, no longer open)."""
    parts = build_parts(load(config))
    try:
        for letter_id in ids:
            parts.store.resolve_dead_letter(letter_id, "discarded")
    finally:
        parts.close()
    console.print(f"discarded {len(ids)} dead letter(s)")


@app.command()
def reconcile(
    config: ConfigOpt,
    entity: Annotated[str | None, typer.Option(help="only this entity")] = None,
    repair: Annotated[bool, typer.Option(help="re-send missing/different records, remove extra ones")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Compare every mapped ERP row with the CRM, field by field; exit 1 on any difference."""
    from replicator.jobs.reconcile import reconcile_all

    parts = build_parts(load(config))
    try:
        reports = reconcile_all(parts, entity=entity, repair=repair, console=console)
    finally:
        parts.close()
    differences = [d for r in reports for d in r.differences]
    if json_out:
        out.print_json(orjson.dumps([r.__dict__ for r in reports], default=lambda o: o.__dict__).decode())
    else:
        table = Table("entity", "expected", "in CRM", "matching", "differences")
        for r in reports:
            table.add_row(r.entity, str(r.expected), str(r.found), str(r.matching), str(len(r.differences)))
        out.print(table)
        for d in differences[:50]:
            out.print(f"  {d.entity} {d.external_id}: {d.kind} {d.detail}", highlight=False)
        if len(differences) > 50:
            out.print(f"  ... and {len(differences) - 50} more")
    if differences:
        raise typer.Exit(1)
