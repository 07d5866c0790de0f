"""Figures for runs: learning curves, confusion matrix, reliability diagram, top losses, and a
`zoo tune` study's plots.

Every function writes one PNG (creating parent folders), closes its figure and returns the path
(``plot_study``: one per plot, and their paths).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402
from PIL import Image  # noqa: E402

from zoo.evaluate.calibration import expected_calibration_error, reliability_bins  # noqa: E402

if TYPE_CHECKING:
    import optuna

_DPI = 100


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=_DPI, format="png")
    finally:
        plt.close(fig)
    return out


def _num(value: object) -> float:
    """A float from a history cell; None, '' and anything non-numeric become NaN."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _epochs(history: list[dict]) -> np.ndarray:
    """x positions: the recorded epochs if they increase strictly, else 1..N (e.g. per-stage counters)."""
    x = np.array([_num(row.get("epoch")) for row in history])
    if np.all(np.isfinite(x)) and np.all(np.diff(x) > 0):
        return x
    return np.arange(1, len(history) + 1, dtype=float)


def _mark_stages(axes: list, x: np.ndarray, stages: list[str]) -> None:
    """Dashed vertical line and the new stage's name wherever the stage changes."""
    for i in range(1, len(stages)):
        if stages[i] == stages[i - 1]:
            continue
        boundary = (x[i - 1] + x[i]) / 2
        for ax in axes:
            ax.axvline(boundary, color="grey", linestyle="--", linewidth=1)
            ax.text(boundary, 0.98, f" {stages[i]}", transform=blended_transform_factory(
                ax.transData, ax.transAxes), va="top", ha="left", fontsize=8, color="dimgrey")


def plot_learning_curves(history: list[dict], path: str | Path) -> Path:
    """Loss (train and val) and validation accuracy per epoch, with stage changes marked.

    Rows are dicts (or csv.DictReader rows) with epoch, stage, train_loss, val_loss, val_accuracy;
    missing, empty or None values leave a gap.
    """
    x = _epochs(history)
    stages = [str(row.get("stage") or "") for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        y = np.array([_num(row.get(key)) for row in history])
        if np.isfinite(y).any():
            ax_loss.plot(x, y, marker="o", markersize=3, label=label)
    acc = np.array([_num(row.get("val_accuracy")) for row in history])
    if np.isfinite(acc).any():
        ax_acc.plot(x, acc, marker="o", markersize=3, color="tab:green", label="validation")
        if np.nanmax(acc) <= 1.0:
            ax_acc.set_ylim(0.0, 1.05)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    _mark_stages([ax_loss, ax_acc], x, stages)
    return _save(fig, path)


def _heatmap(ax, values: np.ndarray, classes: list[str], title: str, fmt: str,
             vmax: float | None = None) -> None:
    n = len(classes)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), classes)
    if n > 40:
        return
    threshold = (vmax if vmax is not None else values.max()) / 2
    fontsize = 9 if n <= 12 else 6
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                color="white" if v > threshold else "black")


def plot_confusion_matrix(confusion: np.ndarray, classes: list[str], path: str | Path) -> Path:
    """Counts and row-normalised (recall per true class) confusion matrices side by side."""
    counts = np.asarray(confusion)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix shape {counts.shape} does not match {n} classes")
    totals = counts.sum(axis=1, keepdims=True).astype(float)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = max(5.0, 0.45 * n + 2.5)
    fig, (ax_counts, ax_norm) = plt.subplots(1, 2, figsize=(2 * side + 1, side),
                                             layout="constrained")
    _heatmap(ax_counts, counts, classes, "Counts", "d" if np.issubdtype(counts.dtype, np.integer)
             else ".0f")
    _heatmap(ax_norm, normalised, classes, "Normalised by true class", ".2f", vmax=1.0)
    return _save(fig, path)


def plot_reliability(y: np.ndarray, probs: np.ndarray, path: str | Path, n_bins: int = 15) -> Path:
    """Reliability diagram (accuracy per confidence bin vs the diagonal) above a count histogram."""
    bins = reliability_bins(y, probs, n_bins)
    ece = expected_calibration_error(y, probs, n_bins)
    edges, count = bins["edges"], bins["count"]
    filled = count > 0
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(6, 7), sharex=True, layout="constrained",
                                       gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centres[filled], bins["accuracy"][filled], width=width, edgecolor="black",
           color="tab:blue", label="accuracy")
    ax.bar(centres[filled], bins["confidence"][filled] - bins["accuracy"][filled],
           bottom=bins["accuracy"][filled], width=width, edgecolor="tab:red", color="tab:red",
           alpha=0.3, label="gap to confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"Reliability (ECE = {ece:.3f})")
    ax.legend(loc="upper left")
    ax_count.bar(centres, count, width=width, edgecolor="black", color="lightgrey")
    ax_count.set(xlabel="confidence", ylabel="samples")
    return _save(fig, path)


def plot_risk_coverage(y: np.ndarray, probs: np.ndarray, threshold: float | None, path: str | Path,
                       title: str = "") -> Path:
    """Risk (error rate of the answers) against coverage (share of photos answered, most confident
    first), with the area under it and the point of the stored confidence threshold."""
    from zoo.evaluate.trust import risk_coverage, selective_stats

    p = np.asarray(probs)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(y)
    curve = risk_coverage(confidence, correct)
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    ax.plot(curve["coverage"], curve["risk"], color="tab:blue",
            label=f"risk-coverage (AURC = {curve['aurc']:.3f})" if curve["aurc"] is not None else None)
    at = selective_stats(confidence, correct, threshold)
    if threshold is not None and at["precision"] is not None:
        ax.plot([at["coverage"]], [1 - at["precision"]], "o", color="tab:red",
                label=f"threshold {threshold:.3f}: coverage {at['coverage']:.2f}, "
                      f"precision {at['precision']:.3f}")
    ax.set(xlim=(0, 1.02), ylim=(0, max(0.1, float(np.nanmax(curve["risk"], initial=0)) * 1.1)),
           xlabel="coverage (share answered, most confident first)", ylabel="risk (error rate)",
           title=f"Risk-coverage{': ' + title if title else ''}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_top_losses(images: list[Image.Image], titles: list[str], path: str | Path,
                    ncols: int = 4) -> Path:
    """Grid of images, each with its title (e.g. "true: quartz\\npred: pyrite (0.91)"); cells
    widen for wide images (up to 2:1, e.g. a photo beside its heat map)."""
    if len(images) != len(titles):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    cols = max(1, min(ncols, len(images)))
    rows = max(1, math.ceil(len(images) / cols))
    aspect = min(2.0, max([1.0] + [image.width / image.height for image in images]))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * aspect * cols, 3.4 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(np.asarray(image.convert("RGB")))
        ax.set_title(title, fontsize=9)
    if not images:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
    return _save(fig, path)


def plot_study(study: optuna.Study, folder: str | Path) -> list[Path]:
    """An Optuna study's history, parameter importances and parallel coordinates
    (``tune_*.png``); a plot that the study cannot draw yet (too few trials) is left out."""
    import warnings

    from optuna.visualization import matplotlib as optuna_plots

    drawn = []
    for name, draw in (("history", optuna_plots.plot_optimization_history),
                       ("importances", optuna_plots.plot_param_importances),
                       ("parallel", optuna_plots.plot_parallel_coordinate)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = draw(study)
            except (ValueError, RuntimeError):
                plt.close("all")
                continue
        axes.figure.set_size_inches(9, 5)
        axes.figure.tight_layout()
        drawn.append(_save(axes.figure, Path(folder) / f"tune_{name}.png"))
    return drawn
