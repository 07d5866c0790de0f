"""`zoo ensemble`."""
from __future__ import annotations

from typing import Optional

import typer

from zoo.cli.app import app
from zoo.console import out


@app.command()
def ensemble(
    members: Optional[str] = typer.Option(None, "--members", help="Run names a,b,c, or 'all'."),
    top: Optional[int] = typer.Option(None, "--top", min=2, help="Use the best K models on validation."),
    method: str = typer.Option("soft", "--method", help="soft | weighted | stack"),
    name: Optional[str] = typer.Option(None, "--name", help="Ensemble name (default ensemble-<method>-<n>)."),
) -> None:
    """Combine trained runs into an ensemble, scored and ranked like a model.

    soft: mean of probabilities. weighted: greedy ensemble selection (Caruana 2004) on validation
    NLL. stack: logistic regression on validation probabilities, scored out-of-fold.

    [bold]Examples[/]
      zoo ensemble --members custom_cnn-1,tf_efficientnet_lite0-1,mobilenetv2_100-1
      zoo ensemble --top 3 --method weighted
      zoo ensemble --members all --method stack --name stacked
    """
    from zoo.train.ensemble import build_ensemble, select_members
    from zoo.store.runs import read_meta, runs_home

    home = runs_home()
    path = build_ensemble(select_members(members, top, home), method, name, home)
    meta = read_meta(path)
    test = meta["metrics"]["test"]
    out.print(f"[bold green]done[/] {meta['name']}: {meta['description']}")
    out.print(f"  test_acc {test['accuracy']:.4f}  macro_f1 {test['macro_f1']:.4f}  "
              f"nll {test['nll']:.4f}  ece {test['ece']:.4f}  (val_acc "
              f"{meta['metrics']['val']['accuracy']:.4f}{', out-of-fold' if method == 'stack' else ''})")
    out.print(f"  saved to {path}")
