"""The ``zoo`` command line. Each command is a thin layer over a module that does the work;
each module below registers its commands on the one Typer app."""
from __future__ import annotations

import sys

from zoo.cli import board, data, ensemble, serve, train  # noqa: F401  (register commands)
from zoo.cli.app import app
from zoo.console import err
from zoo.errors import ZooError


def main() -> None:
    try:
        app()
    except ZooError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
