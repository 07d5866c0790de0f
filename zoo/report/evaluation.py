"""Figures of a ``zoo evaluate`` result: the top-losses grid (each photo beside the Grad-CAM heat
map of the class it was mistaken for) and, if stored, a confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.imaging import load_image, read_photo
from zoo.errors import UnreadableImageError
from zoo.evaluate.evaluation import Evaluation, top_losses
from zoo.evaluate.predictor import ModelPredictor, load_predictor
from zoo.models.runtime import Runtime
from zoo.report.heatmaps import explained_photo
from zoo.report.plots import plot_confusion_matrix, plot_risk_coverage, plot_top_losses
from zoo.store.runs import run_dir

THUMBNAIL = 192
GAP = 4  # pixels between a photo and its heat map


def _explained_thumbnail(predictor: ModelPredictor, path: Path, target: int) -> Image.Image:
    """The photo and, at its right, the heat map of class ``target`` over it (thumbnails)."""
    data = read_photo(path)
    photo = load_image(data, min_side=THUMBNAIL)
    photo.thumbnail((THUMBNAIL, THUMBNAIL))
    pair = Image.new("RGB", (2 * photo.width + GAP, photo.height), (255, 255, 255))
    pair.paste(photo, (0, 0))
    pair.paste(explained_photo(predictor, data, target, photo), (photo.width + GAP, 0))
    return pair


def write_plots(ev: Evaluation, home: Path | None = None, runtime: Runtime = Runtime()) -> list[Path]:
    """Top-losses grid (needs the photos; runs the model on ``runtime`` for the heat maps) and,
    for stored evaluations, a confusion matrix."""
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
        losses = top_losses(ev)
        predictor = load_predictor(ev.run, home, runtime) if losses else None
        for i in losses:
            pred = int(ev.probs[i].argmax())
            try:
                images.append(_explained_thumbnail(predictor, ev.root / ev.ids[i], pred))
            except UnreadableImageError:
                continue
            titles.append(f"{Path(ev.ids[i]).name}\ntrue: {ev.classes[ev.labels[i]]}\n"
                          f"pred: {ev.classes[pred]} ({ev.probs[i, pred]:.2f})")
        written.append(plot_top_losses(images, titles, plots / f"top_losses{suffix}.png"))
    return written
