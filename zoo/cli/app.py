"""The Typer application and the options every command shares."""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="mineral-zoo: train, rank and ensemble mineral classifiers from photos.\n\n"
                       "Data: a folder of class folders (--data or ZOO_DATA). Runs: ZOO_HOME "
                       "(default ./runs). Offline weights: ZOO_WEIGHTS_DIR.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
cache_app = typer.Typer(no_args_is_help=True, help="Manage the decode cache.")
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")

DataOpt = typer.Option(None, "--data", help="Dataset folder (<class>/<image>); default $ZOO_DATA or data/minerals.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress output; print only the result.")
