"""`replicator conflicts`: fields both sides changed, parked under the `manual` policy."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from replicator.cli.app import ConfigOpt, app, build_parts, console, load, out

conflicts_app = typer.Typer(no_args_is_help=True, help="Two-way conflicts: list, resolve.")
app.add_typer(conflicts_app, name="conflicts")


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@conflicts_app.command("list")
def conflicts_list(
    config: ConfigOpt,
    status: Annotated[str, typer.Option(help="open, resolved or all")] = "open",
) -> None:
    """List conflicts (also queryable: SELECT * FROM replicator.conflicts)."""
    from replicator.state.twoway import TwoWayStore

    cfg = load(config)
    store = TwoWayStore(cfg.state_dsn)
    try:
        table = Table("id", "entity", "erp key", "field", "erp value", "crm value", "last agreed", "status", "since")
        for c in store.conflicts(status=None if status == "all" else status):
            table.add_row(
                str(c.id),
                c.entity,
                c.erp_key,
                c.field,
                _show(c.erp_value),
                _show(c.crm_value),
                _show(c.base_value),
                c.status if c.resolution is None else f"{c.status} ({c.resolution})",
                c.created_at.isoformat(timespec="seconds"),
            )
        out.print(table)
    finally:
        store.close()


@conflicts_app.command("resolve")
def conflicts_resolve(
    config: ConfigOpt,
    conflict_id: Annotated[int, typer.Argument(metavar="ID")],
    take: Annotated[str, typer.Option(help="erp or crm: the side whose value both sides keep")],
) -> None:
    """Keep one side's value: it is written to the other side, and the field syncs again."""
    if take not in ("erp", "crm"):
        console.print(f"[red]error:[/red] --take must be erp or crm, not {take!r}")
        raise typer.Exit(2)
    from replicator.crm_to_erp import build_two_way
    from replicator.pipeline.reverse import Rejected, ReverseProcessor
    from replicator.sinks.erp.model import WriteRejected

    parts = build_parts(load(config))
    tw = None
    try:
        tw = build_two_way(parts)
        if tw is None or tw.writer is None:
            console.print("[red]error:[/red] no mapping writes CRM changes back (crm_to_erp)")
            raise typer.Exit(2)
        found = tw.two_way.conflicts(status="open", ids=[conflict_id])
        if not found:
            console.print(f"[red]error:[/red] no open conflict #{conflict_id}: `replicator conflicts list`")
            raise typer.Exit(1)
        processor = ReverseProcessor(
            tw.reverse, parts.planner, parts.reader, parts.store, tw.two_way, tw.writer, parts.sink,
            parts.config.pipeline.retry, records=tw.records,
        )  # fmt: skip
        try:
            processor.resolve(found[0], take)
        except (Rejected, WriteRejected) as exc:
            console.print(f"[red]error:[/red] #{conflict_id} not resolved: {exc}", highlight=False)
            raise typer.Exit(1) from None
        c = found[0]
        console.print(f"#{conflict_id} {c.entity} {c.erp_key} {c.field}: kept the {take.upper()} value")
    finally:
        if tw is not None:
            tw.close()
        parts.close()
