"""`zoo tune`."""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from zoo.cli.app import DataOpt, QuietOpt, app
from zoo.cli.train import print_run_summary
from zoo.console import out, reporting
from zoo.errors import ZooError


@app.command()
def tune(
    recipe: Optional[str] = typer.Argument(None, help="Recipe name, YAML path or model name (as for "
                                           "`zoo train`)."),
    trials: int = typer.Option(20, "--trials", min=1, help="Stop once the study holds this many finished "
                               "trials (earlier sessions count)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1, help="Start no trial after this "
                                            "many minutes."),
    folds: int = typer.Option(5, "--folds", min=1, help="Cross-validation folds of train+val; 1: the fixed "
                              "validation split."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Trials at once on this machine (a process each, CPU "
                             "threads divided)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the recipe's)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default "
                                          "sqlite:///$ZOO_HOME/tune.db); postgresql://... shares a study "
                                          "between machines."),
    show: Optional[str] = typer.Option(None, "--show", metavar="STUDY", help="Print a study's trials, best "
                                       "trial and parameter importances; train nothing."),
    data: Optional[str] = DataOpt,
    set_: List[str] = typer.Option([], "--set", help="Override a recipe field before tuning (repeatable)."),
    quiet: bool = QuietOpt,
) -> None:
    """Search a recipe's hyperparameters with Optuna, then train and rank the best recipe.

    The search space is the recipe's tune: section. Each trial is scored by mean validation
    accuracy over --folds folds of train+val (the test photos are never used); bad trials are
    pruned early. The study resumes where it stopped; the best parameters become
    $ZOO_HOME/recipes/<study>-tuned.yaml, trained once on the train split.

    [bold]Examples[/]
      zoo tune custom_cnn --trials 30
      zoo tune tf_efficientnet_lite0 --timeout 30 --jobs 2
      zoo tune custom_cnn --storage postgresql://zoo@db-host/zoo   # on each machine
      zoo tune --show custom_cnn
    """
    from zoo.tune import require_optuna

    require_optuna()
    if show:
        _print_summary(show, storage)
        return
    if recipe is None:
        raise ZooError("Name a recipe to tune (zoo tune custom_cnn), or a study to show (--show NAME).")
    from zoo.tune.study import TuneOptions
    from zoo.tune.study import tune as run_tune

    opts = TuneOptions(recipe, set_, data, trials, timeout, folds, jobs, study, storage)
    with reporting(quiet) as rep:
        result = run_tune(opts, rep)
    if not quiet:
        out.print(f"[bold green]best[/] trial {result.best.number} of study {escape(result.study)}: "
                  f"score {result.best.value:.4f}\n  recipe {escape(str(result.recipe))}")
    print_run_summary(result.run, quiet)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def _print_summary(name: str, storage: Optional[str]) -> None:
    from zoo.tune.storage import summarize

    summary = summarize(name, storage)
    setup = summary.setup
    sets = "".join(f" --set {s}" for s in setup.get("set", []))
    out.print(f"study [bold]{escape(name)}[/]: recipe {escape(str(setup.get('recipe')) + sets)}, "
              f"{setup.get('folds')} fold(s), split {setup.get('split')}", highlight=False)
    keys = list(dict.fromkeys(k for row in summary.trials for k in row["params"]))
    table = Table(*("trial", "state", "score", "val acc", "nll", "seconds", *map(escape, keys)))
    for row in summary.trials:
        table.add_row(str(row["trial"]), row["state"], _cell(row["score"]), _cell(row["accuracy"]),
                      _cell(row["nll"]), _cell(row["seconds"] and round(row["seconds"])),
                      *(_cell(row["params"].get(k)) for k in keys))
    out.print(table)
    best = summary.best
    if best:
        params = " ".join(f"{escape(k)}={_cell(v)}" for k, v in best["params"].items())
        folds = " ".join(f"{a:.3f}" for a in best["folds"])
        out.print(f"best: trial {best['trial']}, score {best['score']:.4f}, folds {folds}, {params}")
    else:
        out.print("best: none yet")
    if summary.importances:
        out.print("importances: " + ", ".join(f"{escape(k)} {v:.2f}" for k, v in summary.importances.items()))
    else:
        out.print(summary.importance_note)
