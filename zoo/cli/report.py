"""`zoo report`."""
from __future__ import annotations

import typer

from zoo.cli.app import app


@app.command()
def report(run: str = typer.Argument(..., help="Run or ensemble name.")) -> None:
    """Write runs/<run>/report.html: metrics, per-class scores, plots and config in one page.

    [bold]Examples[/]
      zoo report custom_cnn-1
    """
    from zoo.report.html import write_report

    print(write_report(run))
