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
    calibration, per-class precision/recall, confusion matrix and worst errors (plots/), and
    selective prediction: the risk-coverage curve (plots/) and its area, coverage and precision
    at the run's stored confidence threshold, the statuses; photos in folders of classes the
    model does not know are judged too (unknown / unsure / confident, OOD AUROC).

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
    _print_trust(ev)


def _print_trust(ev) -> None:
    """Selective prediction at the stored threshold, the risk-coverage curve, and the photos of
    unknown classes (zoo.evaluate.trust)."""
    from zoo.evaluate.trust import NO_TRUST_NOTE, risk_coverage

    sel = ev.metrics["selective"]
    table = Table(title="selective prediction (thresholds fitted on validation)", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table.add_row("area under the risk-coverage curve", fmt(sel["aurc"]))
    if "statuses" not in sel:
        out.print(table)
        out.print(plain(f"note: {NO_TRUST_NOTE}."), style="yellow", highlight=False)
        return
    table.add_row("confidence threshold", "none (never confident)" if sel["threshold"] is None
                  else f"{sel['threshold']:.4f}")
    table.add_row("coverage at the threshold", fmt(sel["coverage"]))
    table.add_row("precision at the threshold", fmt(sel["precision"]))
    table.add_row("statuses", ", ".join(f"{s} {n}" for s, n in sel["statuses"].items()))
    table.add_row("share 'confident'", fmt(sel["confident_coverage"]))
    table.add_row("precision of 'confident'", fmt(sel["confident_precision"]))
    out.print(table)
    probs = ev.probs
    curve = risk_coverage(probs.max(1), probs.argmax(1) == ev.labels)
    points = [c for c in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0) if c * len(probs) >= 1]
    risks = [curve["risk"][max(0, int(round(c * len(probs))) - 1)] for c in points]
    out.print(plain("risk-coverage (most confident first): " + ", ".join(
        f"coverage {c:.0%} risk {r:.3f}" for c, r in zip(points, risks))), highlight=False)
    if ev.open_set:
        o = ev.open_set
        line = (f"photos of classes this model does not know ({', '.join(o['folders'])}): "
                f"{o['photos']}; " + ", ".join(f"{s} {n}" for s, n in o["statuses"].items())
                + f"; top probability >= 0.9: {o['top_probability_over_0_9']}")
        if "auroc" in o:
            line += f"; OOD AUROC {o['auroc']:.3f}, FPR at 95% TPR {o['fpr_at_95_tpr']:.3f}"
        out.print(plain(line), highlight=False)
