"""`zoo train`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from zoo.cli.app import DataOpt, QuietOpt, TargetPrecisionOpt, app
from zoo.console import out, plain, reporting
from zoo.errors import ZooError


@app.command()
def train(
    recipe: str = typer.Argument(..., help="Recipe name (recipes/<name>.yaml), a YAML path, or any model name."),
    data: Optional[str] = DataOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default <model>-<n>)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe field, e.g. train.lr=3e-4 (repeatable)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Pretrained weights: .safetensors file or folder."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue an interrupted run."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps "
                                         "(default: the recipe's train.device, auto)."),
    devices: int = typer.Option(1, "--devices", min=1, help="Train data-parallel on N processes of "
                                "this machine (one per GPU, or N CPU processes), started with torchrun."),
    target_precision: Optional[float] = TargetPrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a model from a recipe and rank it on the leaderboard.

    [bold]Examples[/]
      zoo train custom_cnn
      zoo train tf_efficientnet_lite0 --set train.epochs=4
      zoo train resnet50 --weights ~/weights/resnet50.safetensors
      zoo train convnext_tiny --set model.pretrained=false --name convnext-scratch
      zoo train tf_efficientnet_lite2 --device cuda --set train.precision=bf16 --devices 2
    """
    from zoo.store.runs import check_run_name
    from zoo.train.distributed import Cluster
    from zoo.train.launch import launch_training
    from zoo.train.recipes import load_recipe
    from zoo.train.run import TrainOptions
    from zoo.train.run import train as run_training

    if resume and (set_ or target_precision is not None):
        raise ZooError("--resume continues a run with its own saved recipe; drop --set and "
                       "--target-precision.")
    if target_precision is not None:
        set_ = [*set_, f"trust.target_precision={target_precision}"]
    for run_name in (name, resume):
        if run_name:
            check_run_name(run_name)
    rec, source = load_recipe(recipe, set_)
    cluster = Cluster.from_env()
    if devices > 1:
        options = _flags(("--data", data), ("--weights", weights), ("--device", device), ("--set", set_))
        launch_training(devices, recipe, rec, device, resume or name, bool(resume),
                        options + ["--quiet"] * quiet)  # rank 0 prints the summary
        return
    with reporting(quiet or not cluster.main) as rep:
        rep.log(f"recipe: {source}")
        path = run_training(rec, TrainOptions(data=data, name=name, weights=weights, device=device),
                            rep, resume=resume)
    if cluster.main:
        print_run_summary(path, quiet)


def _flags(*pairs: tuple[str, str | list[str] | None]) -> list[str]:
    """``--flag value`` for each value given (a list: the flag repeated)."""
    values = [(flag, v) for flag, value in pairs for v in (value if isinstance(value, list) else [value])]
    return [token for flag, value in values if value is not None for token in (flag, value)]


def print_run_summary(path: Path, quiet: bool) -> None:
    from zoo.store.runs import read_meta

    meta = read_meta(path)
    test, val = meta["metrics"]["test"], meta["metrics"]["val"]
    line = (f"{meta['name']}: test_acc {test['accuracy']:.4f}  val_acc {val['accuracy']:.4f}  "
            f"macro_f1 {test['macro_f1']:.4f}  nll {test['nll']:.4f}  ece {test['ece']:.4f}  "
            f"fit {meta.get('fit_seconds', 0):.0f}s")
    if meta.get("skipped_files"):
        line += f"  ({meta['skipped_files']} file(s) skipped: `zoo data check` lists them)"
    from zoo.evaluate.trust import trust_summary

    line += "\n  " + trust_summary(meta)
    if not quiet:
        line = f"{line}\n  saved to {path}"
    out.print(plain(line) if quiet else Text.assemble(("done", "bold green"), " ", plain(line)))


