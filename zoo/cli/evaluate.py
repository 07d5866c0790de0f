"""`zoo evaluate`."""
from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from zoo.cli.app import DeviceOpt, QuietOpt, TtaOpt, app, check_format
from zoo.console import out, plain, print_reasons, reporting


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="Run or ensemble name."),
    data: str | None = typer.Option(None, "--data", help="Folder of <class>/<image> photos "
                                       "(external test set); default: the run's own test split."),
    tta: bool = TtaOpt,
    format: str = typer.Option("table", "--format", help="table | json"),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Score a run or ensemble: accuracy, balanced accuracy, macro-F1, NLL, ECE before/after
    calibration, per-class precision/recall, confusion matrix and worst errors (plots/).

    Without --data the run's own test split is scored (stored predictions; the photos again with
    --tta). External folders and TTA results are stored in runs/<run>/evaluations/ and ranked:
    `zoo leaderboard --on <folder name>`, and a `<run>+tta` row for TTA on the test split.

    [bold]Examples[/]
      zoo evaluate custom_cnn-1
      zoo evaluate custom_cnn-1 --tta
      zoo evaluate ensemble-soft-1 --data ~/photos/museum-test
    """
    from zoo.evaluate.evaluation import evaluate as run_evaluation
    from zoo.evaluate.evaluation import save_evaluation
    from zoo.models.runtime import Runtime
    from zoo.report.evaluation import write_plots

    check_format(format, ("table", "json"))
    runtime = Runtime.create(device)
    with reporting(quiet or format == "json") as rep:
        ev = run_evaluation(run, data, tta, progress=lambda i, n: rep.advance("predict", i, n),
                            runtime=runtime)
    saved = [save_evaluation(ev)] if ev.stored else []
    plots = write_plots(ev, runtime=runtime)
    if format == "json":
        print(json.dumps({**ev.to_dict(), "files": [str(p) for p in saved + plots]}, indent=2))
        return
    _print_evaluation(ev)
    for path in saved + plots:
        out.print(plain(f"  saved {path}"), highlight=False, soft_wrap=True)
    if ev.root is None:
        out.print("[dim]no top-losses plot: the run's photos are no longer where it was trained[/]")


def _print_evaluation(ev) -> None:
    m = ev.metrics
    where = "test split" if ev.on is None else f"folder '{ev.on}'"
    table = Table(title=plain(f"{ev.name} on {where}"), title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("photos", str(m["n"]))
    rows = [("accuracy", m["accuracy"]), ("balanced accuracy", m["balanced_accuracy"]),
            ("macro-F1", m["macro_f1"]), ("NLL", m["nll"]), ("ECE (calibrated)", m["ece"]),
            ("ECE (before calibration)", m["ece_uncalibrated"])]
    if ev.val_metrics:
        rows.append(("val accuracy (same TTA)", ev.val_metrics["accuracy"]))
    for name, value in rows:
        table.add_row(name, "-" if value is None else f"{value:.4f}")
    out.print(table)
    per = Table(title="per class", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for cls, s in m["per_class"].items():
        per.add_row(plain(cls), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                    str(s["support"]))
    out.print(per)
    out.print(plain(f"source: {ev.source}"), highlight=False, soft_wrap=True)
    if ev.missing:
        out.print(Text.assemble(("classes with no photo here", "yellow"), " (left out of macro "
                                "averages): ", plain(", ".join(ev.missing))))
    for cls, n in ev.unknown.items():
        out.print(Text.assemble(("unknown class", "yellow"), " '", plain(cls), f"': {n} photo(s) "
                                "skipped (not a class of this model)"))
    if ev.unreadable:
        print_reasons(out, f"{len(ev.unreadable)} unreadable file(s) skipped:", ev.unreadable)
    if ev.seen_in_training:
        out.print(f"[yellow]warning:[/] {ev.seen_in_training} photo(s) here are identical to "
                  "training or validation photos of this run: the score is optimistic.")
