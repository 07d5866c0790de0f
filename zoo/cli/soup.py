"""`zoo soup`."""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.text import Text

from zoo.cli.app import DeviceOpt, QuietOpt, TargetPrecisionOpt, app
from zoo.console import out, plain, reporting

HELP = """Average the weights of fine-tunes of one model into one model (a soup), ranked like a run.

A model soup (Wortsman et al. 2022) is scored, calibrated and ranked like a trained run, and costs
one model at inference. The runs must be the same recipe model (different seeds or
hyper-parameters, fine-tuned from the same pretrained weights), with the same classes, image size
and split. uniform: the mean of all their weights. greedy: from the best run on validation, add
each next run only if the soup's validation accuracy does not drop.

[bold]Examples[/]
  zoo soup tf_efficientnet_lite0-1 tf_efficientnet_lite0-2 tf_efficientnet_lite0-3
  zoo soup tf_efficientnet_lite0-1 tf_efficientnet_lite0-2 tf_efficientnet_lite0-3 --method greedy
  zoo soup lite0-a lite0-b --name lite0-soup
"""


@app.command(help=HELP)
def soup(
    runs: List[str] = typer.Argument(..., help="Runs to average (at least 2), e.g. lite0-1 lite0-2."),
    method: str = typer.Option("uniform", "--method", help="uniform | greedy"),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default soup-<model>-<n>)."),
    data: Optional[str] = typer.Option(None, "--data", help="The runs' photos folder, if it moved "
                                       "(default: where they were trained)."),
    device: str = DeviceOpt,
    target_precision: Optional[float] = TargetPrecisionOpt,
    quiet: bool = QuietOpt,
) -> None:
    from zoo.evaluate.trust import trust_summary
    from zoo.paths import runs_home
    from zoo.store.runs import read_meta
    from zoo.train.soup import build_soup

    with reporting(quiet) as rep:
        path = build_soup(runs, method, name, runs_home(), data, device, target_precision, rep)
    meta = read_meta(path)
    test, val = meta["metrics"]["test"], meta["metrics"]["val"]
    done = plain(f"{meta['name']}: {meta['description']}")
    out.print(plain(done) if quiet else Text.assemble(("done", "bold green"), " ", done))
    out.print(f"  test_acc {test['accuracy']:.4f}  val_acc {val['accuracy']:.4f}  macro_f1 "
              f"{test['macro_f1']:.4f}  nll {test['nll']:.4f}  ece {test['ece']:.4f}", highlight=False)
    out.print(plain("  " + trust_summary(meta)), highlight=False)
    if not quiet:
        out.print(plain(f"  saved to {path}"), highlight=False)
