"""Commands that prepare and verify an installation: setup, check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from replicator.app import StartupError
from replicator.cli.app import ConfigOpt, app, console, load, out
from replicator.mapping.expr import MappingError

if TYPE_CHECKING:
    from replicator.jobs.connect import ConnectorFile


@app.command()
def setup(
    config: ConfigOpt,
    print_roles: Annotated[bool, typer.Option(help="print the least-privilege role script and exit")] = False,
    apply_roles: Annotated[str | None, typer.Option(help="create/grant this role (needs a superuser erp.dsn)")] = None,
    role_password: Annotated[str | None, typer.Option(envvar="REPLICATOR_ROLE_PASSWORD")] = None,
    skip_crm: Annotated[bool, typer.Option(help="do not touch the CRM")] = False,
    connect: Annotated[
        str | None,
        typer.Option("--connect", metavar="URL", help="Kafka Connect REST URL (default: source.connect.url)"),
    ] = None,
    connector: Annotated[
        list[Path] | None,
        typer.Option("--connector", help="connector file to register (repeatable; default: source.connect.connectors)"),
    ] = None,
    skip_connect: Annotated[bool, typer.Option(help="do not register the Debezium connectors")] = False,
) -> None:
    """Create the state schema, publication and slot, the CRM's external-id fields, and register the
    Debezium connectors with Kafka Connect (validated first: nothing is registered if any is invalid)."""
    from replicator.jobs import connect as connect_job
    from replicator.jobs import setup as setup_job

    if print_roles:
        out.print(setup_job.role_script(), highlight=False, markup=False)
        return
    cfg = load(config)
    target = None
    if not skip_connect:
        try:
            target = connect_job.target_of(cfg.source, config, connect, connector)
            # Read and expand every file before touching anything: a missing variable stops setup here.
            connectors = [connect_job.load_connector_file(f) for f in target.files] if target else []
        except connect_job.ConnectorFileError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
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
    if target is not None:
        _register_connectors(target.url, connectors)


def _register_connectors(url: str, connectors: list[ConnectorFile]) -> None:
    from replicator.jobs import connect as connect_job

    client = connect_job.ConnectClient(url)
    try:
        results = connect_job.register(client, connectors)
    except connect_job.ConnectorsInvalid as exc:
        console.print(f"[red]invalid connector configuration, nothing registered:[/red]\n{exc}", highlight=False)
        raise typer.Exit(1) from None
    except connect_job.ConnectError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        client.close()
    table = Table("connector", "file", "action", "state", "tasks", "detail")
    failed = False
    for r in results:
        state = r.state
        failed |= state is None or not state.healthy
        action = "created" if r.created else "updated"
        if state is None:
            table.add_row(r.name, str(r.file), action, "-", "-", "no status")
        else:
            table.add_row(r.name, str(r.file), action, state.state, state.tasks_text, state.detail)
        if r.unknown_keys:
            console.print(
                f"[yellow]warning:[/yellow] {r.file}: keys the connector does not know (misspelled?): "
                + ", ".join(r.unknown_keys),
                highlight=False,
            )
    out.print(table)
    if failed:
        console.print(f"[red]not every connector is RUNNING[/red]: see {url}/connectors/<name>/status", highlight=False)
        raise typer.Exit(1)


@app.command()
def check(config: ConfigOpt) -> None:
    """Validate the configuration and the environment; exit 1 on any failure."""
    from replicator.jobs.check import run_checks

    cfg = load(config)
    findings = run_checks(cfg)
    table = Table("check", "result", "detail", "fix")
    colors = {"ok": "green", "warn": "yellow", "fail": "red"}
    for f in findings:
        table.add_row(f.check, f"[{colors[f.level]}]{f.level}[/]", f.detail, f.fix)
    out.print(table)
    if any(f.level == "fail" for f in findings):
        raise typer.Exit(1)
