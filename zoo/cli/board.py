"""`zoo leaderboard` and `zoo models`."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from zoo.cli.app import app
from zoo.console import err, out, plain


@app.command()
def leaderboard(
    format: str = typer.Option("table", "--format", help="table | csv | json | markdown"),
    sort: str = typer.Option("test_accuracy", "--sort", help="Column to rank by."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    all_: bool = typer.Option(False, "--all", help="Include unfinished runs."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the table from the run folders first."),
    on: Optional[str] = typer.Option(None, "--on", help="Rank by scores on an external folder "
                                     "evaluated with `zoo evaluate RUN --data DIR` (its name)."),
) -> None:
    """List every run and ensemble, best first.

    With --on, the test columns are the scores on that folder instead of the test split.

    [bold]Examples[/]
      zoo leaderboard
      zoo leaderboard --sort test_nll --format markdown
      zoo leaderboard --format json > board.json
      zoo leaderboard --on museum-test
    """
    from zoo.report.tables import render_rows
    from zoo.store import leaderboard as lb

    if rebuild:
        rebuilt = lb.rebuild()
        for reason in rebuilt.skipped:
            err.print(Text.assemble(("skipped", "yellow"), " ", plain(reason)), highlight=False)
        err.print(f"rebuilt {rebuilt.rows} rows from run folders")
    if on:
        err.print(plain(f"scores on folder '{on}' (test columns = that folder)"), highlight=False)
        render_rows(lb.rows_on(on, sort=sort, dataset=dataset), format)
    else:
        render_rows(lb.rows(sort=sort, dataset=dataset, include_unfinished=all_), format)


@app.command()
def models(all_: bool = typer.Option(False, "--all", help="List every timm architecture name too.")) -> None:
    """List the registry: the zoo's models and recipes, and where their weights come from.

    [bold]Examples[/]
      zoo models
      zoo models --all | grep efficientnet
    """
    import timm

    from zoo.train.recipes import model_table

    if all_:
        for name in timm.list_models():
            out.print(name, highlight=False)
        return
    table = Table(title="mineral-zoo models")
    for col in ("recipe", "model", "pretrained", "weights here", "image size"):
        table.add_column(col)
    for e in model_table():
        table.add_row(plain(e.recipe or "-"), plain(e.model), "yes" if e.pretrained else "no",
                      plain(e.weights), "-" if e.image_size is None else str(e.image_size))
    out.print(table)
    out.print("Any timm model name also works: `zoo train <timm name>` (see `zoo models --all`).")


