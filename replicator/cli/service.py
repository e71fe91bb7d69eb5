"""Commands that move data: run (the service) and backfill."""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import psycopg
import pymysql
import structlog
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from replicator.app import Parts
from replicator.cli.app import ConfigOpt, app, build_parts, console, load


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
    from replicator.pipeline.processor import Interrupted

    processor = parts.processor(stop)
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
    parts = build_parts(load(config))
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
        bool | None,
        typer.Option(
            "--backfill/--no-backfill",
            help="backfill before streaming when it never completed; default: yes, except for a kafka source, "
            "whose Debezium connector snapshots the tables itself",
        ),
    ] = None,
) -> None:
    """Run the service: stream the configured source into the CRM, serve /metrics and /healthz."""
    from replicator.app import StartupError
    from replicator.crm_to_erp import CrmToErpService, build_two_way
    from replicator.mapping.expr import MappingError
    from replicator.ops.health import Health
    from replicator.ops.http import HttpServer
    from replicator.pipeline.runner import Runner
    from replicator.sources.open import open_source

    cfg = load(config)
    parts = build_parts(cfg)
    two_way = None
    try:
        opened = open_source(parts)
        two_way = build_two_way(parts)
    except (StartupError, MappingError) as exc:
        parts.close()
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    stop = threading.Event()
    _stop_on_signals(stop)
    health = Health(cfg.pipeline.stall_timeout_s)
    gate = threading.Lock()
    crm_to_erp = CrmToErpService(parts, two_way, stop, health, gate) if two_way is not None else None
    server = None
    if cfg.metrics.listen:
        server = HttpServer(cfg.metrics.listen, health, two_way.routes if two_way is not None else None)
        server.start()
        console.print(f"metrics and health on http://{cfg.metrics.listen}/metrics and /healthz")
        if two_way is not None:
            for path in two_way.routes:
                console.print(f"CRM webhooks on http://{cfg.metrics.listen}{path}")
    try:
        done = {c["stream"]: c["position"] for c in parts.store.checkpoints()}
        never = [e for e in parts.entities if done.get(f"backfill:{e}") != "done"]
        if backfill_first is None:
            # Every member of a consumer group would backfill the same rows; the connector's
            # snapshot already brings each row through the topics once.
            backfill_first = cfg.source.kind != "kafka"
        if backfill_first and never:
            console.print(f"initial backfill of {', '.join(never)}")
            # A backfill making progress is healthy; /healthz must not fail a long first load.
            health.source_connected()
            _run_backfill(parts, stop, None, restart=False, on_page=health.acked)
        if stop.is_set():
            return
        processor = parts.processor(stop, gate=gate)
        runner = Runner(
            opened.source,
            processor,
            health,
            batch_size=cfg.pipeline.batch_size,
            max_wait_s=cfg.pipeline.max_wait_ms / 1000,
            queue_size=cfg.pipeline.queue_size,
            on_ack=opened.on_ack,
        )
        gauges = list(opened.gauges)
        if crm_to_erp is not None:
            gauges += crm_to_erp.gauges()
            crm_to_erp.start()
            assert two_way is not None
            console.print(f"applying {two_way.crm_name} changes of {', '.join(sorted(two_way.reverse))} to the ERP")
        _start_gauge_sampler(gauges, parts.store, stop)
        console.print(f"streaming {opened.describe} into {parts.sink.name}")
        runner.run()
        if crm_to_erp is not None:
            crm_to_erp.join()
            if crm_to_erp.failure is not None:
                raise crm_to_erp.failure
    except (psycopg.OperationalError, pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
        # Nothing unapplied was acknowledged: a restart resumes exactly where this stopped.
        console.print(f"[red]error:[/red] lost the ERP/state database: {str(exc).strip()}; exiting for a restart")
        raise typer.Exit(3) from None
    finally:
        stop.set()
        if server is not None:
            server.stop()
        if crm_to_erp is not None:
            crm_to_erp.join()
        if two_way is not None:
            two_way.close()
        parts.close()


def _start_gauge_sampler(gauges: list[Any], store: Any, stop: threading.Event) -> None:
    """Gauges read from the databases (source lag, open dead letters), every 5 s from the start."""
    from replicator.ops import metrics

    def sample() -> None:
        while True:
            try:
                for gauge in gauges:
                    gauge()
                metrics.DEAD_LETTERS_OPEN.set(store.open_dead_letters())
            except Exception as exc:
                structlog.get_logger().warning("gauge sample failed", error=str(exc))
            if stop.wait(5.0):
                return

    threading.Thread(target=sample, name="gauges", daemon=True).start()
