"""`zoo evaluate`, `zoo predict`, `zoo export` and `zoo report`."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from rich.table import Table

from zoo.cli.app import QuietOpt, app
from zoo.console import err, out, reporting
from zoo.errors import ZooError

FORMATS = ("table", "csv", "json")
TtaOpt = typer.Option(False, "--tta", help="Test-time augmentation: average 5 views "
                      "(identity, flips, 90° turn, wide crop).")


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        raise ZooError(f"Unknown --format '{fmt}': use {', '.join(allowed)}.")


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="Run or ensemble name."),
    data: str | None = typer.Option(None, "--data", help="Folder of <class>/<image> photos "
                                       "(external test set); default: the run's own test split."),
    tta: bool = TtaOpt,
    format: str = typer.Option("table", "--format", help="table | json"),
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
    from zoo.evaluate.evaluation import save_evaluation, write_plots

    _check_format(format, ("table", "json"))
    with reporting(quiet or format == "json") as rep:
        ev = run_evaluation(run, data, tta, progress=lambda i, n: rep.advance("predict", i, n))
    saved = [save_evaluation(ev)] if ev.stored else []
    plots = write_plots(ev)
    if format == "json":
        print(json.dumps({**ev.to_dict(), "files": [str(p) for p in saved + plots]}, indent=2))
        return
    _print_evaluation(ev)
    for path in saved + plots:
        out.print(f"  saved {path}", highlight=False, soft_wrap=True)
    if ev.root is None:
        out.print("[dim]no top-losses plot: the run's photos are no longer where it was trained[/]")


def _print_evaluation(ev) -> None:
    m = ev.metrics
    where = "test split" if ev.on is None else f"folder '{ev.on}'"
    table = Table(title=f"{ev.name} on {where}", title_justify="left")
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
        per.add_row(cls, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                    str(s["support"]))
    out.print(per)
    out.print(f"source: {ev.source}", highlight=False, soft_wrap=True)
    if ev.missing:
        out.print(f"[yellow]classes with no photo here[/] (left out of macro averages): "
                  f"{', '.join(ev.missing)}")
    for cls, n in ev.unknown.items():
        out.print(f"[yellow]unknown class[/] '{cls}': {n} photo(s) skipped (not a class of this model)")
    if ev.unreadable:
        out.print(f"[yellow]{len(ev.unreadable)} unreadable file(s) skipped:[/]")
        for path, reason in ev.unreadable:
            out.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)
    if ev.seen_in_training:
        out.print(f"[yellow]warning:[/] {ev.seen_in_training} photo(s) here are identical to "
                  "training or validation photos of this run: the score is optimistic.")


@app.command()
def predict(
    run: str = typer.Argument(..., help="Run or ensemble name."),
    paths: list[Path] = typer.Argument(..., help="Photos or folders (searched recursively)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Classes to show per photo."),
    format: str = typer.Option("table", "--format", help="table | csv | json"),
    tta: bool = TtaOpt,
) -> None:
    """Identify the minerals in photos: the top classes with their probabilities.

    Unreadable files are listed with the reason (on stderr for csv and json) and the others are
    still predicted; the exit code is non-zero only when no photo could be read.

    [bold]Examples[/]
      zoo predict custom_cnn-1 photo.jpg
      zoo predict ensemble-soft-1 ~/photos/unknown --format csv > predictions.csv
      zoo predict custom_cnn-1 a.jpg b.jpg --tta --top-k 5 --format json
    """
    from zoo.evaluate.evaluation import predict_files, visible_files
    from zoo.evaluate.predictor import load_predictor

    _check_format(format, FORMATS)
    predictor = load_predictor(run)
    files = [f for p in paths for f in visible_files(p)]
    with reporting(format != "table") as rep:
        result = predict_files(predictor, files, tta, lambda i, n: rep.advance("predict", i, n))
    if result.unreadable:
        console = out if format == "table" else err
        console.print(f"[yellow]{len(result.unreadable)} file(s) not predicted:[/]")
        for path, reason in result.unreadable:
            console.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)
    if not result.files:
        raise ZooError(f"None of the {len(files)} file(s) given is a readable photo: nothing "
                       "was predicted (reasons above).")
    k = min(top_k, len(predictor.classes))
    tops = [[(predictor.classes[j], float(p[j])) for j in p.argsort(kind="stable")[::-1][:k]]
            for p in result.probs]
    if format == "table":
        _print_prediction_table(predictor.name, result.files, tops, k)
    else:
        print(_prediction_text(result.files, tops, k, format), end="")


def _print_prediction_table(name: str, files: list[Path], tops: list, k: int) -> None:
    table = Table(title=f"{name}: {len(files)} photo(s)", title_justify="left")
    table.add_column("photo", overflow="fold")
    for i in range(1, k + 1):
        table.add_column(f"#{i}")
    for path, top in zip(files, tops):
        table.add_row(str(path), *(f"{c} {p:.3f}" for c, p in top))
    out.print(table)


def _prediction_text(files: list[Path], tops: list, k: int, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{"path": str(f), "predictions": [{"class": c, "probability": p}
                                                            for c, p in top]}
                           for f, top in zip(files, tops)], indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path"] + [f"{key}{i}" for i in range(1, k + 1) for key in ("top", "prob")])
    for path, top in zip(files, tops):
        writer.writerow([str(path)] + [v for c, p in top for v in (c, f"{p:.6f}")])
    return buf.getvalue()


@app.command()
def export(
    run: str = typer.Argument(..., help="Run name (a trained model, not an ensemble)."),
    format: str = typer.Option("onnx", "--format", help="onnx | torchscript"),
) -> None:
    """Export a run for deployment into runs/<run>/export/, checked against PyTorch.

    Input: float32 RGB in [0, 1], NCHW, image_size x image_size (resize the shorter side to
    resize_side, centre-crop); normalisation and temperature scaling are inside the graph, the
    output is calibrated probabilities. Classes and preprocessing travel inside the file.

    [bold]Examples[/]
      zoo export custom_cnn-1 --format onnx
      zoo export tf_efficientnet_lite0-1 --format torchscript
    """
    from zoo.evaluate.export import export_run

    result = export_run(run, format)
    out.print(f"[bold green]exported[/] {result.path} ({result.path.stat().st_size / 1e6:.1f} MB)",
              highlight=False)
    out.print(f"  parity with PyTorch on {result.parity_images}: max |Δp| = "
              f"{result.max_abs_diff:.2e} (limit {result.tolerance:.0e})", highlight=False)


@app.command()
def report(run: str = typer.Argument(..., help="Run or ensemble name.")) -> None:
    """Write runs/<run>/report.html: metrics, per-class scores, plots and config in one page.

    [bold]Examples[/]
      zoo report custom_cnn-1
    """
    from zoo.report.html import write_report

    print(write_report(run))
