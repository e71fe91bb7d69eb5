"""The `replicator` command line. Each module registers its commands on one Typer app."""

from replicator.cli import setup_cmds, service, records, conflicts, sandbox  # noqa: F401, I001  (registers the commands, in help order)
from replicator.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
