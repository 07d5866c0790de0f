"""`zoo predict`."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from rich.table import Table

from zoo.cli.app import DeviceOpt, TtaOpt, app, check_format
from zoo.console import err, out, plain, print_reasons, printable, reporting
from zoo.errors import ZooError

FORMATS = ("table", "csv", "json")


@app.command()
def predict(
    run: str = typer.Argument(..., help="Run or ensemble name."),
    paths: list[Path] = typer.Argument(..., help="Photos or folders (searched recursively)."),
    k: int = typer.Option(3, "--top-k", min=1, help="Classes to show per photo."),
    format: str = typer.Option("table", "--format", help="table | csv | json"),
    tta: bool = TtaOpt,
    device: str = DeviceOpt,
    explain: bool = typer.Option(False, "--explain", help="Also write a Grad-CAM heat map of the top "
                                 "class over each photo (PNG at the photo's size) and print its path."),
    explain_dir: Path | None = typer.Option(None, "--explain-dir", help="Folder for the heat maps "
                                            "(implies --explain; default: runs/<run>/explanations)."),
) -> None:
    """Identify the minerals in photos: the top classes with their probabilities, and how far to
    trust the answer: status confident, unsure (two or three candidates) or unknown (not like
    any mineral the model knows), confidence and OOD score (csv and json too).

    Unreadable files are listed with the reason (on stderr for csv and json) and the others are
    still predicted; the exit code is non-zero only when no photo could be read. --explain writes
    <photo name>-<hash>.png per photo: where the model saw the evidence for its top class.

    [bold]Examples[/]
      zoo predict custom_cnn-1 photo.jpg
      zoo predict ensemble-soft-1 ~/photos/unknown --format csv > predictions.csv
      zoo predict custom_cnn-1 a.jpg b.jpg --tta --top-k 5 --format json
      zoo predict custom_cnn-1 photo.jpg --explain --explain-dir heatmaps
    """
    from zoo.data.dataset import visible_files
    from zoo.evaluate.evaluation import predict_files
    from zoo.evaluate.predictor import load_predictor, top_k
    from zoo.models.runtime import Runtime
    from zoo.report.heatmaps import write_heatmaps

    check_format(format, FORMATS)
    predictor = load_predictor(run, runtime=Runtime.create(device))
    files = visible_files(*paths)
    with reporting(format != "table") as rep:
        result = predict_files(predictor, files, tta, lambda i, n: rep.advance("predict", i, n))
    if result.unreadable:
        console = out if format == "table" else err
        print_reasons(console, f"{len(result.unreadable)} file(s) not predicted:", result.unreadable)
    if not result.files:
        raise ZooError(f"None of the {len(files)} file(s) given is a readable photo: nothing "
                       "was predicted (reasons above).")
    heatmaps = None
    if explain or explain_dir is not None:
        with reporting(format != "table") as rep:
            heatmaps = write_heatmaps(predictor, result.files, result.sha256,
                                      result.probs.argmax(1).tolist(),
                                      explain_dir or predictor.path / "explanations",
                                      lambda i, n: rep.advance("explain", i, n))
    tops = top_k(result.probs, predictor.classes, k)
    k = len(tops[0])
    verdicts = _verdicts(predictor, result, format)
    for verdict, path in zip(verdicts, heatmaps or []):
        verdict["heatmap"] = str(path)
    if format == "table":
        _print_prediction_table(predictor.name, result.files, tops, k, verdicts, predictor.classes)
        for path in heatmaps or []:
            out.print(plain(f"  heatmap {path}"), highlight=False, soft_wrap=True)
    else:
        print(_prediction_text(result.files, tops, k, format, verdicts), end="")


def _verdicts(predictor, result, format: str) -> list[dict]:
    """Each photo's status, confidence, OOD score and candidates (zoo.evaluate.trust); a run
    trained before trust thresholds existed gets its confidence only, and a note saying so."""
    from zoo.evaluate.trust import NO_TRUST_NOTE, message

    judged = predictor.judge(result.probs, result.ood)
    if judged is None:
        (out if format == "table" else err).print(plain(f"note: {NO_TRUST_NOTE}."), style="yellow")
        return [{"confidence": float(row.max())} for row in result.probs]
    return [{**v, "message": message(v, predictor.classes)} for v in judged]


def _print_prediction_table(name: str, files: list[Path], tops: list, k: int,
                            verdicts: list[dict], classes: list[str]) -> None:
    table = Table(title=plain(f"{name}: {len(files)} photo(s)"), title_justify="left")
    table.add_column("photo", overflow="fold")
    judged = "status" in verdicts[0]
    if judged:
        table.add_column("status")
    for i in range(1, k + 1):
        table.add_column(f"#{i}")
    styles = {"confident": "green", "unsure": "yellow", "unknown": "red"}
    for path, top, v in zip(files, tops, verdicts):
        cells = [plain(v["status"], styles[v["status"]])] if judged else []
        table.add_row(plain(path), *cells, *(plain(f"{c} {p:.3f}") for c, p in top))
    out.print(table)
    if judged:
        out.print(plain(_status_legend(verdicts, classes)), style="dim", highlight=False)


def _status_legend(verdicts: list[dict], classes: list[str]) -> str:
    """What the statuses mean, for those that occur."""
    seen = {v["status"] for v in verdicts}
    words = {"confident": "confident: as sure as the run's target precision allows",
             "unsure": "unsure: one of the top two or three, the model cannot tell which",
             "unknown": f"unknown: does not look like any of the {len(classes)} minerals this "
                        f"model knows ({', '.join(classes)})"}
    return "; ".join(words[s] for s in ("confident", "unsure", "unknown") if s in seen) + "."


# Per-photo fields of csv and json beside the top classes (those a photo has; heatmap: --explain).
TEXT_KEYS = ("status", "confidence", "ood_score", "candidates", "heatmap")


def _prediction_text(files: list[Path], tops: list, k: int, fmt: str, verdicts: list[dict]) -> str:
    keys = [key for key in TEXT_KEYS if key in verdicts[0]]
    if fmt == "json":
        return json.dumps([{"path": str(f), **{key: v[key] for key in keys},
                            "predictions": [{"class": c, "probability": p} for c, p in top]}
                           for f, top, v in zip(files, tops, verdicts)], indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path"] + [f"{key}{i}" for i in range(1, k + 1) for key in ("top", "prob")] + keys)
    for path, top, verdict in zip(files, tops, verdicts):
        writer.writerow([printable(path)] + [v for c, p in top for v in (printable(c), f"{p:.6f}")]
                        + [_cell(verdict[key]) for key in keys])
    return buf.getvalue()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, list):
        return ";".join(printable(c) for c in value)
    return printable(value)
