"""The `replicator` command line: setup, check, run, backfill, preview, status, dlq, reconcile."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console

from replicator.app import Parts, StartupError, build
from replicator.config import Config, ConfigError, load_config
from replicator.mapping.expr import MappingError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True, soft_wrap=True)
# Piped output (logs, CI, grep) must not wrap table cells mid-word.
out = Console(width=None if sys.stdout.isatty() else 200)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the YAML configuration", envvar="REPLICATOR_CONFIG")]


def load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(2) from None


def build_parts(config: Config) -> Parts:
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
