"""``zoo report``: one self-contained HTML page per run (metrics, per-class scores, plots, config).

Plots are embedded as base64 PNG, so the file can be mailed or archived on its own.
"""
from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from zoo.errors import ZooError
from zoo.fileio import open_regular, read_text, write_text
from zoo.store.leaderboard import stored_evaluations
from zoo.store.runs import CONFIG_MAX_BYTES, read_meta, run_dir

METRICS = [("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
           ("macro_f1", "macro-F1"), ("nll", "NLL"), ("ece", "ECE (calibrated)"),
           ("ece_uncalibrated", "ECE (before calibration)"), ("n", "photos")]
PLOT_ORDER = ["learning_curves", "confusion_matrix", "reliability", "risk_coverage", "top_losses"]
SELECTIVE = [("aurc", "area under the risk-coverage curve"), ("threshold", "confidence threshold"),
             ("coverage", "coverage at the threshold"), ("precision", "precision at the threshold"),
             ("confident_coverage", "share 'confident'"),
             ("confident_precision", "precision of 'confident'"), ("unsure", "'unsure'"),
             ("unknown", "'unknown'"), ("n", "photos")]
PLOT_MAX_BYTES = 16 * 2**20
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .3rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f4f4f4; }
.muted { color: #666; } figure { margin: 1rem 0; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1rem; overflow-x: auto; }
"""


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return escape(str(value))


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_section(meta: dict, evaluations: list[dict]) -> str:
    columns = {"validation": meta.get("metrics", {}).get("val", {}),
               "test": meta.get("metrics", {}).get("test", {})}
    for ev in sorted(evaluations, key=lambda e: (e["on"] is not None, e["on"] or "", e["tta"])):
        if ev["on"] is None and ev.get("val_metrics"):
            columns["validation + TTA"] = ev["val_metrics"]
        where = "test" if ev["on"] is None else ev["on"]
        columns[f"{where}{' + TTA' if ev['tta'] else ''}"] = ev["metrics"]
    rows = [[label] + [m.get(key) for m in columns.values()] for key, label in METRICS]
    notes = []
    for ev in evaluations:
        where = "test split" if ev["on"] is None else f"folder {ev['on']} ({ev['source']})"
        parts = [f"{len(ev['unreadable'])} unreadable" if ev.get("unreadable") else "",
                 "missing classes: " + ", ".join(ev["missing"]) if ev.get("missing") else "",
                 "unknown classes skipped: " + ", ".join(f"{c} ({n})" for c, n in ev["unknown"].items())
                 if ev.get("unknown") else "",
                 f"{ev['seen_in_training']} photos identical to training photos"
                 if ev.get("seen_in_training") else ""]
        detail = "; ".join(p for p in parts if p)
        notes.append(f"<li>{escape(where)}{' with TTA' if ev['tta'] else ''}, {escape(ev['created'])}"
                     f"{': ' + escape(detail) if detail else ''}</li>")
    listed = f"<p class='muted'>Evaluations:</p><ul>{''.join(notes)}</ul>" if notes else ""
    return "<h2>Metrics</h2>" + _table(["metric", *columns], rows) + listed


def _selective_value(sel: dict, key: str) -> object:
    if key in ("unsure", "unknown"):
        return (sel.get("statuses") or {}).get(key)
    return sel.get(key)


def _trust_section(meta: dict, evaluations: list[dict]) -> str:
    """Selective prediction and the unknown-mineral check: the thresholds (fitted on
    validation) and what they do on each set of photos."""
    trust = meta.get("trust")
    if not trust:
        return ("<h2>Trust</h2><p class='muted'>No trust thresholds: this run was trained before "
                "they existed; retrain it to get statuses (confident / unsure / unknown).</p>")
    threshold = trust.get("confidence_threshold")
    lines = [f"A prediction is <b>confident</b> when its calibrated top probability is at least "
             f"{_fmt(threshold)} (the lowest threshold whose precision on "
             f"{escape(trust.get('fitted_on') or 'validation')} reaches "
             f"{trust['target_precision']:.2f}), <b>unsure</b> below it."
             if threshold is not None else
             f"No threshold reaches precision {trust['target_precision']:.2f} on validation: "
             "every answer is <b>unsure</b>."]
    ood = trust.get("ood")
    if ood:
        lines.append(f"A photo is <b>unknown</b> when its OOD score ({escape(ood['method'])}) is "
                     f"above {ood['threshold']:.4g}, which {ood['known_tpr']:.0%} of the known "
                     "classes' validation photos stay below.")
    columns = {"validation": meta.get("metrics", {}).get("val", {}).get("selective"),
               "test": meta.get("metrics", {}).get("test", {}).get("selective")}
    for ev in sorted(evaluations, key=lambda e: (e["on"] is not None, e["on"] or "", e["tta"])):
        where = "test" if ev["on"] is None else ev["on"]
        columns[f"{where}{' + TTA' if ev['tta'] else ''}"] = ev["metrics"].get("selective")
    columns = {k: v for k, v in columns.items() if v}
    table = _table(["", *columns], [[label] + [_selective_value(c, key) for c in columns.values()]
                                    for key, label in SELECTIVE]) if columns else ""
    open_rows = []
    for ev in evaluations:
        o = ev.get("open_set")
        if o:
            st = o.get("statuses", {})
            open_rows.append([f"{ev['on']} ({', '.join(o['folders'])})", o["photos"],
                              st.get("unknown"), st.get("unsure"), st.get("confident"),
                              o.get("top_probability_over_0_9"), o.get("auroc")])
    open_html = ("<p class='muted'>Photos of classes the model does not know:</p>" + _table(
        ["folder", "photos", "unknown", "unsure", "confident", "top p >= 0.9", "OOD AUROC"],
        open_rows)) if open_rows else ""
    return ("<h2>Trust</h2>" + "".join(f"<p>{line}</p>" for line in lines) + table + open_html)


def _per_class_section(metrics: dict) -> str:
    per = metrics.get("per_class", {})
    rows = [[c, s["precision"], s["recall"], s["f1"], s["support"]] for c, s in per.items()]
    return "<h2>Per class (test)</h2>" + _table(["class", "precision", "recall", "F1", "support"], rows)


def _plot_key(file: Path) -> tuple[int, str]:
    rank = next((i for i, p in enumerate(PLOT_ORDER) if file.stem.startswith(p)), len(PLOT_ORDER))
    return rank, file.stem


def _plots_section(path: Path) -> str:
    figures = []
    for file in sorted((path / "plots").glob("*.png"), key=_plot_key):
        title = escape(file.stem.replace("_", " "))
        try:
            with open_regular(file, PLOT_MAX_BYTES) as fh:
                data = base64.b64encode(fh.read()).decode("ascii")
        except (OSError, ZooError) as exc:  # a pipe, a giant or a vanished file: not shown
            figures.append(f"<p class='muted'>{title}: not shown ({escape(str(exc))})</p>")
            continue
        figures.append(f"<figure><figcaption>{title}</figcaption>"
                       f"<img alt='{title}' src='data:image/png;base64,{data}'></figure>")
    return "<h2>Plots</h2>" + ("".join(figures) or "<p class='muted'>No plots.</p>")


def _summary(meta: dict) -> str:
    fields = [("kind", meta.get("kind")), ("model", meta.get("model")),
              ("dataset", meta.get("dataset")), ("split", meta.get("split_id")),
              ("members", ", ".join(meta.get("members", [])) or None),
              ("method", meta.get("description")), ("weights", meta.get("weights_source")),
              ("parameters", f"{meta['params']:,}" if meta.get("params") else None),
              ("fit time", f"{meta['fit_seconds']:.0f} s" if meta.get("fit_seconds") else None),
              ("inference", f"{meta['infer_img_per_s']:.0f} photos/s"
               if meta.get("infer_img_per_s") else None),
              ("epochs", meta.get("epochs_run")),
              ("temperature", meta.get("calibration", {}).get("temperature")),
              ("created", meta.get("created")), ("status", meta.get("status"))]
    return _table(["", ""], [[k, v] for k, v in fields if v is not None]).replace(
        "<thead><tr><th></th><th></th></tr></thead>", "")


def _config_text(config: Path) -> str:
    try:
        return read_text(config, CONFIG_MAX_BYTES)
    except (OSError, ValueError) as exc:
        raise ZooError(f"Run file {config} cannot be shown: {exc}.") from exc


def render_report(path: Path) -> str:
    meta = read_meta(path)
    config = path / "config.yaml"
    if config.exists():
        config_html = f"<h2>Config</h2><pre>{escape(_config_text(config))}</pre>"
    else:
        fitted = json.dumps(meta.get("ensemble", {}), indent=2)
        config_html = f"<h2>Ensemble</h2><pre>{escape(fitted)}</pre>"
    notes = "".join(f"<li>{escape(n)}</li>" for n in meta.get("notes", []))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(meta['name'])} – mineral-zoo report</title><style>{STYLE}</style></head>"
            f"<body><h1>{escape(meta['name'])}</h1><p class='muted'>mineral-zoo run report</p>"
            f"{_summary(meta)}{_metrics_section(meta, stored_evaluations(path))}"
            f"{_trust_section(meta, stored_evaluations(path))}"
            f"{_per_class_section(meta.get('metrics', {}).get('test', {}))}{_plots_section(path)}"
            f"{config_html}{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}</body></html>\n")


def write_report(run: str, home: Path | None = None) -> Path:
    """Write runs/<run>/report.html and return its path."""
    path = run_dir(run, home)
    out = path / "report.html"
    write_text(out, render_report(path))
    return out
