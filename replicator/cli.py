"""The `replicator` command line: setup, check, run, backfill, preview, status, dlq, reconcile."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from replicator.app import Parts, StartupError, build
from replicator.config import Config, ConfigError, load_config
from replicator.mapping.expr import MappingError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters: list, replay, discard.")
app.add_typer(dlq_app, name="dlq")
console = Console(stderr=True, soft_wrap=True)
# Piped output (logs, CI, grep) must not wrap table cells mid-word.
out = Console(width=None if sys.stdout.isatty() else 200)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the YAML configuration", envvar="REPLICATOR_CONFIG")]


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None


def _build(config: Config) -> Parts:
    try:
        return build(config)
    except (StartupError, MappingError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _configure_logging(json_logs: bool) -> None:
    processors: list[Any] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    structlog.configure(processors=[*processors, renderer], logger_factory=structlog.PrintLoggerFactory(sys.stderr))


@app.callback()
def main_callback(json_logs: Annotated[bool, typer.Option("--json-logs", help="log as JSON lines")] = False) -> None:
    _configure_logging(json_logs)


@app.command()
def setup(
    config: ConfigOpt,
    print_roles: Annotated[bool, typer.Option(help="print the least-privilege role script and exit")] = False,
    apply_roles: Annotated[str | None, typer.Option(help="create/grant this role (needs a superuser erp.dsn)")] = None,
    role_password: Annotated[str | None, typer.Option(envvar="REPLICATOR_ROLE_PASSWORD")] = None,
    skip_crm: Annotated[bool, typer.Option(help="do not touch the CRM")] = False,
) -> None:
    """Create the state schema, publication and slot, and the CRM's external-id fields."""
    from replicator.jobs import setup as setup_job

    if print_roles:
        out.print(setup_job.role_script(), highlight=False, markup=False)
        return
    cfg = _config(config)
    try:
        if apply_roles:
            setup_job.apply_role_script(cfg.erp.dsn.get_secret_value(), apply_roles, role_password)
            console.print(f"role {apply_roles}: created or updated")
        steps = setup_job.setup(cfg, crm=not skip_crm)
    except (StartupError, MappingError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    table = Table("step", "result")
    for step in steps:
        table.add_row(step.what, step.detail)
    out.print(table)


@app.command()
def check(config: ConfigOpt) -> None:
    """Validate the configuration and the environment; exit 1 on any failure."""
    from replicator.jobs.check import run_checks

    cfg = _config(config)
    findings = run_checks(cfg)
    table = Table("check", "result", "detail", "fix")
    colors = {"ok": "green", "warn": "yellow", "fail": "red"}
    for f in findings:
        table.add_row(f.check, f"[{colors[f.level]}]{f.level}[/]", f.detail, f.fix)
    out.print(table)
    if any(f.level == "fail" for f in findings):
        raise typer.Exit(1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run_backfill(parts: Parts, stop: threading.Event, entity: str | None, restart: bool, on_page: Any = None) -> int:
    from replicator.jobs.backfill import backfill
    from replicator.pipeline.processor import Interrupted, Processor

    processor = Processor(parts.planner, parts.reader, parts.store, parts.sink, parts.config.pipeline.retry, stop)
    chosen = [e for e in parts.entities.values() if entity is None or e.name == entity]
    if not chosen:
        console.print(f"[red]error:[/red] no entity {entity!r}; mapped: {', '.join(parts.entities)}")
        raise typer.Exit(2)
    tasks: dict[str, TaskID] = {}
    with _progress() as bar:

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=max(total, done))
            if on_page is not None:
                on_page()

        try:
            results = backfill(
                processor, chosen, page_size=parts.config.pipeline.batch_size, restart=restart, progress=progress
            )
        except Interrupted:
            console.print("backfill interrupted: the next run resumes after the last completed page")
            raise typer.Exit(130) from None
    failed = 0
    for r in results:
        failed += r.report.dead_lettered
        console.print(
            f"{r.entity}: {r.rows} rows, {r.report.applied} sent, {r.report.skipped} unchanged/filtered, "
            f"{r.report.dead_lettered} dead letters",
            highlight=False,
        )
    return failed


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        console.print(f"received {signal.Signals(signum).name}: finishing the current batch, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@app.command()
def backfill(
    config: ConfigOpt,
    entity: Annotated[str | None, typer.Option(help="only this entity")] = None,
    restart: Annotated[bool, typer.Option(help="ignore saved progress and start from the first row")] = False,
) -> None:
    """Sync every mapped ERP row (parents first), resumably; unchanged records cost no CRM call."""
    parts = _build(_config(config))
    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        failed = _run_backfill(parts, stop, entity, restart)
    finally:
        parts.close()
    if failed:
        console.print(f"[yellow]{failed} record(s) went to the dead-letter table: `replicator dlq list`[/yellow]")
        raise typer.Exit(1)


@app.command()
def run(
    config: ConfigOpt,
    backfill_first: Annotated[
        bool, typer.Option("--backfill/--no-backfill", help="backfill before streaming when it never completed")
    ] = True,
) -> None:
    """Run the service: stream the slot into the CRM, serve /metrics and /healthz."""
    from replicator.ops.health import Health
    from replicator.ops.http import HttpServer
    from replicator.pipeline.processor import Processor
    from replicator.pipeline.runner import Runner
    from replicator.sources.pg_admin import int_to_lsn, slot_info
    from replicator.sources.pg_slot import PgSlotSource

    cfg = _config(config)
    parts = _build(cfg)
    dsn = cfg.erp.dsn.get_secret_value()
    if not slot_info(dsn, cfg.source.slot).exists:
        console.print(f"[red]error:[/red] replication slot {cfg.source.slot!r} does not exist; run `replicator setup`")
        raise typer.Exit(2)
    stop = threading.Event()
    _stop_on_signals(stop)
    health = Health(cfg.pipeline.stall_timeout_s)
    server = None
    if cfg.metrics.listen:
        server = HttpServer(cfg.metrics.listen, health)
        server.start()
        console.print(f"metrics and health on http://{cfg.metrics.listen}/metrics and /healthz")
    try:
        done = {c["stream"]: c["position"] for c in parts.store.checkpoints()}
        never = [e for e in parts.entities if done.get(f"backfill:{e}") != "done"]
        if backfill_first and never:
            console.print(f"initial backfill of {', '.join(never)}")
            # A backfill making progress is healthy; /healthz must not fail a long first load.
            health.source_connected()
            _run_backfill(parts, stop, None, restart=False, on_page=health.acked)
        if stop.is_set():
            return
        source = PgSlotSource(
            dsn,
            slot=cfg.source.slot,
            publication=cfg.source.publication,
            name=cfg.source.slot,
            timezone=cfg.erp.timezone,
            drop_origins=[cfg.source.origin],
            status_interval=cfg.source.status_interval_s,
        )
        processor = Processor(parts.planner, parts.reader, parts.store, parts.sink, cfg.pipeline.retry, stop)
        store = parts.store

        def checkpoint(position: Any) -> None:
            store.save_checkpoint(position.stream, int_to_lsn(position.offset), position.offset)

        runner = Runner(
            source,
            processor,
            health,
            batch_size=cfg.pipeline.batch_size,
            max_wait_s=cfg.pipeline.max_wait_ms / 1000,
            queue_size=cfg.pipeline.queue_size,
            on_ack=checkpoint,
        )
        _start_lag_sampler(dsn, cfg.source.slot, stop)
        console.print(f"streaming slot {cfg.source.slot} into {parts.sink.name}")
        runner.run()
    except psycopg.OperationalError as exc:
        # Nothing unapplied was acknowledged: a restart resumes exactly where this stopped.
        console.print(f"[red]error:[/red] lost the ERP/state database: {str(exc).strip()}; exiting for a restart")
        raise typer.Exit(3) from None
    finally:
        stop.set()
        if server is not None:
            server.stop()
        parts.close()


def _start_lag_sampler(dsn: str, slot: str, stop: threading.Event) -> None:
    from replicator.sources.pg_admin import slot_info

    def sample() -> None:
        while not stop.wait(5.0):
            try:
                slot_info(dsn, slot)  # sets the slot lag gauge
            except Exception as exc:
                structlog.get_logger().warning("slot lag sample failed", error=str(exc))

    threading.Thread(target=sample, name="slot-lag", daemon=True).start()


@app.command()
def preview(
    config: ConfigOpt,
    entity: Annotated[str, typer.Argument(help="mapped entity name")],
    key: Annotated[list[str], typer.Argument(help="ERP key value(s), in key-column order")],
) -> None:
    """Print the CRM payload an ERP row becomes, without sending it."""
    from replicator.change import Change, Op, Position
    from replicator.mapping.plan import Target

    parts = _build(_config(config))
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
        planned = parts.planner.plan([target], parts.reader, parts.store.crm_ids, lambda *_: {})[0]
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
    """Slot position and lag, per-entity sync state, open dead letters."""
    from replicator.sources.pg_admin import int_to_lsn, slot_info

    cfg = _config(config)
    parts = _build(cfg)
    try:
        info = slot_info(cfg.erp.dsn.get_secret_value(), cfg.source.slot)
        slot = Table("slot", "active", "confirmed", "retained WAL")
        slot.add_row(
            cfg.source.slot,
            str(info.active),
            int_to_lsn(info.confirmed_flush_lsn) if info.confirmed_flush_lsn else "-",
            f"{(info.retained_bytes or 0) / 1048576:.1f} MiB" if info.exists else "missing",
        )
        out.print(slot)
        states = Table("entity", "status", "rows")
        for entity, state, n in parts.store.sync_summary():
            states.add_row(entity, state, str(n))
        out.print(states)
        checkpoints = Table("stream", "position", "updated")
        for c in parts.store.checkpoints():
            checkpoints.add_row(c["stream"], c["position"], c["updated_at"].isoformat(timespec="seconds"))
        out.print(checkpoints)
        out.print(f"open dead letters: {parts.store.open_dead_letters()}")
    finally:
        parts.close()


@dlq_app.command("list")
def dlq_list(
    config: ConfigOpt,
    entity: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str, typer.Option(help="open, replayed, discarded or all")] = "open",
) -> None:
    """List dead letters (also queryable: SELECT * FROM replicator.dead_letters)."""
    parts = _build(_config(config))
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

    parts = _build(_config(config))
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
    parts = _build(_config(config))
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

    parts = _build(_config(config))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
