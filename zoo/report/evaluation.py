"""Figures of a ``zoo evaluate`` result: the top-losses grid and, if stored, a confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.imaging import load_image
from zoo.errors import UnreadableImageError
from zoo.evaluate.evaluation import Evaluation, top_losses
from zoo.report.plots import plot_confusion_matrix, plot_risk_coverage, plot_top_losses
from zoo.store.runs import run_dir

THUMBNAIL = 192


def _thumbnail(path: Path) -> Image.Image:
    img = load_image(path, min_side=THUMBNAIL)
    img.thumbnail((THUMBNAIL, THUMBNAIL))
    return img


def write_plots(ev: Evaluation, home: Path | None = None) -> list[Path]:
    """Top-losses grid (needs the photos) and, for stored evaluations, a confusion matrix."""
    plots = run_dir(ev.run, home) / "plots"
    suffix = f"_{ev.stem}" if ev.stored else ""
    written = []
    if ev.stored:
        written.append(plot_confusion_matrix(np.array(ev.metrics["confusion"]), ev.classes,
                                             plots / f"confusion_matrix{suffix}.png"))
    where = "test split" if ev.on is None else ev.on
    written.append(plot_risk_coverage(ev.labels, ev.probs, ev.metrics["selective"]["threshold"],
                                      plots / f"risk_coverage{suffix}.png",
                                      f"{ev.name} on {where}"))
    if ev.root is not None:
        images, titles = [], []
        for i in top_losses(ev):
            try:
                images.append(_thumbnail(ev.root / ev.ids[i]))
            except UnreadableImageError:
                continue
            pred = int(ev.probs[i].argmax())
            titles.append(f"{Path(ev.ids[i]).name}\ntrue: {ev.classes[ev.labels[i]]}\n"
                          f"pred: {ev.classes[pred]} ({ev.probs[i, pred]:.2f})")
        written.append(plot_top_losses(images, titles, plots / f"top_losses{suffix}.png"))
    return written
