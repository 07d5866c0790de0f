"""`zoo ensemble`: its --method choices and their help come from the registered methods."""
from __future__ import annotations

from typing import Optional

import typer
from rich.text import Text

from ensembles import METHODS, method_class
from zoo.cli.app import app
from zoo.console import out, plain

NAMES = sorted(METHODS)
HELP = f"""Combine trained runs into an ensemble, scored and ranked like a model.

{" ".join(f"{name}: {METHODS[name].description}." for name in NAMES)}

[bold]Examples[/]
  zoo ensemble --members custom_cnn-1,tf_efficientnet_lite0-1,mobilenetv2_100-1
  zoo ensemble --top 3 --method weighted
  zoo ensemble --members all --method stack --name stacked
"""


@app.command(help=HELP)
def ensemble(
    members: Optional[str] = typer.Option(None, "--members", help="Run names a,b,c, or 'all'."),
    top: Optional[int] = typer.Option(None, "--top", min=2, help="Use the best K models on validation."),
    method: str = typer.Option("soft", "--method", help=" | ".join(NAMES)),
    name: Optional[str] = typer.Option(None, "--name", help="Ensemble name (default ensemble-<method>-<n>)."),
    target_precision: float = typer.Option(
        0.95, "--target-precision", min=0.5, max=1.0,
        help="Precision that 'confident' answers must reach on validation (out-of-fold for stack)."),
) -> None:
    from zoo.evaluate.trust import trust_summary
    from zoo.paths import runs_home
    from zoo.store.runs import read_meta
    from zoo.train.ensemble import build_ensemble, select_members

    oof = ", out-of-fold" if method_class(method).out_of_fold else ""
    home = runs_home()
    path = build_ensemble(select_members(members, top, home), method, name, home, target_precision)
    meta = read_meta(path)
    test = meta["metrics"]["test"]
    done = plain(f"{meta['name']}: {meta['description']}")
    out.print(Text.assemble(("done", "bold green"), " ", done))
    out.print(f"  test_acc {test['accuracy']:.4f}  macro_f1 {test['macro_f1']:.4f}  "
              f"nll {test['nll']:.4f}  ece {test['ece']:.4f}  (val_acc "
              f"{meta['metrics']['val']['accuracy']:.4f}{oof})")
    out.print(plain("  " + trust_summary(meta)), highlight=False)
    out.print(plain(f"  saved to {path}"), highlight=False)
