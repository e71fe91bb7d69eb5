"""Commands that prepare and verify an installation: setup, check."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from replicator.app import StartupError
from replicator.cli.app import ConfigOpt, app, console, load, out
from replicator.mapping.expr import MappingError


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
    cfg = load(config)
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

    cfg = load(config)
    findings = run_checks(cfg)
    table = Table("check", "result", "detail", "fix")
    colors = {"ok": "green", "warn": "yellow", "fail": "red"}
    for f in findings:
        table.add_row(f.check, f"[{colors[f.level]}]{f.level}[/]", f.detail, f.fix)
    out.print(table)
    if any(f.level == "fail" for f in findings):
        raise typer.Exit(1)
