"""The ``zoo`` command line. Each command is a thin layer over a module that does the work."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from zoo.console import err, out, reporting
from zoo.errors import ZooError

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="mineral-zoo: train, rank and ensemble mineral classifiers from photos.\n\n"
                       "Data: a folder of class folders (--data or ZOO_DATA). Runs: ZOO_HOME "
                       "(default ./runs). Offline weights: ZOO_WEIGHTS_DIR.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
cache_app = typer.Typer(no_args_is_help=True, help="Manage the decode cache.")
app.add_typer(data_app, name="data")
app.add_typer(cache_app, name="cache")

DataOpt = typer.Option(None, "--data", help="Dataset folder (<class>/<image>); default $ZOO_DATA or data/minerals.")


@app.command()
def train(
    recipe: str = typer.Argument(..., help="Recipe name (recipes/<name>.yaml), a YAML path, or any model name."),
    data: Optional[str] = DataOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default <model>-<n>)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe field, e.g. train.lr=3e-4 (repeatable)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Pretrained weights: .safetensors file or folder."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue an interrupted run."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output; print only the result."),
) -> None:
    """Train a model from a recipe and rank it on the leaderboard.

    [bold]Examples[/]
      zoo train custom_cnn
      zoo train tf_efficientnet_lite0 --set train.epochs=4
      zoo train resnet50 --weights ~/weights/resnet50.safetensors
      zoo train convnext_tiny --set model.pretrained=false --name convnext-scratch
    """
    from zoo.experiment import TrainOptions, train as run_training
    from zoo.recipes import load_recipe
    from zoo.registry import check_model_name

    if resume:
        raise ZooError("--resume is not available yet in this version.")
    rec, source = load_recipe(recipe, set_)
    check_model_name(rec.model.name)
    with reporting(quiet) as rep:
        rep.log(f"recipe: {source}")
        path = run_training(rec, TrainOptions(data=data, name=name, weights=weights, quiet=quiet), rep)
    _print_run_summary(path, quiet)


def _print_run_summary(path: Path, quiet: bool) -> None:
    from zoo.runs import read_meta

    meta = read_meta(path)
    test, val = meta["metrics"]["test"], meta["metrics"]["val"]
    line = (f"{meta['name']}: test_acc {test['accuracy']:.4f}  val_acc {val['accuracy']:.4f}  "
            f"macro_f1 {test['macro_f1']:.4f}  nll {test['nll']:.4f}  ece {test['ece']:.4f}  "
            f"fit {meta.get('fit_seconds', 0):.0f}s")
    out.print(line if quiet else f"[bold green]done[/] {line}\n  saved to {path}")


@app.command()
def leaderboard(
    format: str = typer.Option("table", "--format", help="table | csv | json | markdown"),
    sort: str = typer.Option("test_accuracy", "--sort", help="Column to rank by."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only runs on this dataset."),
    all_: bool = typer.Option(False, "--all", help="Include unfinished runs."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the table from the run folders first."),
) -> None:
    """List every run and ensemble, best first.

    [bold]Examples[/]
      zoo leaderboard
      zoo leaderboard --sort test_nll --format markdown
      zoo leaderboard --format json > board.json
    """
    from zoo import leaderboard as lb
    from zoo.tables import render_rows

    if rebuild:
        err.print(f"rebuilt {lb.rebuild()} rows from run folders")
    render_rows(lb.rows(sort=sort, dataset=dataset, include_unfinished=all_), format)


@app.command()
def models(all_: bool = typer.Option(False, "--all", help="List every timm architecture name too.")) -> None:
    """List the registry: the zoo's models and recipes, and where their weights come from.

    [bold]Examples[/]
      zoo models
      zoo models --all | grep efficientnet
    """
    import timm

    from zoo.recipes import list_recipes, load_recipe
    from zoo.registry import zoo_model_names
    from zoo.weights import availability

    if all_:
        for name in timm.list_models():
            out.print(name, highlight=False)
        return
    table = Table(title="mineral-zoo models")
    for col in ("recipe", "model", "pretrained", "weights here", "image size"):
        table.add_column(col)
    shown = set()
    for rname in list_recipes():
        if rname == "defaults":
            continue
        rec, _ = load_recipe(rname)
        shown.add(rec.model.name)
        table.add_row(rname, rec.model.name, "yes" if rec.model.pretrained else "no",
                      availability(rec.model.name), str(rec.data.image_size))
    for mname in zoo_model_names():
        if mname not in shown:
            table.add_row("-", mname, "no", availability(mname), "-")
    out.print(table)
    out.print("Any timm model name also works: `zoo train <timm name>` (see `zoo models --all`).")


@data_app.command("check")
def data_check(data: Optional[str] = DataOpt) -> None:
    """Index a dataset: class counts, unreadable files with reasons, the fixed split.

    [bold]Examples[/]
      zoo data check --data ~/photos/minerals
    """
    from zoo.dataset import resolve_data_root, scan_dataset
    from zoo.splits import get_split

    index = scan_dataset(resolve_data_root(data))
    table = Table(title=f"{index.name}: {len(index.items)} readable images")
    for col in ("class", "images", "train", "val", "test"):
        table.add_column(col, justify="right" if col != "class" else "left")
    split, notes = get_split(index)
    for cls, n in index.counts().items():
        per = [sum(1 for it in index.items if it.label == cls and split.assignment.get(it.path) == s)
               for s in ("train", "val", "test")]
        table.add_row(cls, str(n), *map(str, per))
    out.print(table)
    out.print(f"split {split.id}; " + "; ".join(notes) if notes else f"split {split.id}")
    if index.skipped:
        out.print(f"[yellow]{len(index.skipped)} file(s) skipped:[/]")
        for path, reason in index.skipped:
            out.print(f"  {path}: {reason}", highlight=False)


@cache_app.command("clear")
def cache_clear() -> None:
    """Delete the decode cache (it is rebuilt on the next run)."""
    from zoo.cache import DecodeCache

    cache = DecodeCache()
    out.print(f"freed {cache.clear() / 1e6:.1f} MB from {cache.root}")


def main() -> None:
    try:
        app()
    except ZooError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
