"""Distribution-shift benchmark: how accuracy, NLL and ECE change when the same test photos are
taken differently (phone JPEG, low resolution, defocus, exposure, white balance, tight crops,
rotation, a smaller specimen on another background).

    export ZOO_HOME=runs ZOO_DATA=/path/to/minerals
    python benchmarks/shift.py custom_cnn-1 tf_efficientnet_lite0-1 --json shift.json
    python benchmarks/shift.py ensemble-soft-1 --photos 5 --shifts jpeg,blur --strengths strong
    python benchmarks/shift.py custom_cnn-1 --split val --save-examples /tmp/shift-examples
    python benchmarks/shift.py lite0 kd --folds 5 --home /tmp/cv/runs   # recipe_cv.py's fold runs

The photos are those every entry (run or ensemble, from ``--home``, default $ZOO_HOME) was
scored on (with ``--folds``: each fold's run of every entry, on that fold's validation photos):
its stored ``--split`` predictions (the dataset's fixed test split by default), as
``zoo evaluate --tta`` rescores them, read from where the run was trained or from ``--data``.
Each photo is decoded once (EXIF-rotated, as zoo decodes; worked on at its own size, shorter
side capped at WORK_SIDE px), changed, then resized to each model's decode size and predicted
with the model's own preprocessing and calibration (``ModelPredictor.predict_arrays``): the
photo changes, never the tensor. "clean" goes through the same path unchanged. Random choices
(rotation angle, paste position, background texture) are seeded by the photo's content hash,
so every run and every entry sees the same changed photos.

Shifts (mild / strong), sizes relative to the photo's shorter side S:
- jpeg: re-saved as JPEG at quality 40 / 15 (4:2:0 chroma), as phones and messengers do;
- downscale: shrunk to 1/3 / 1/6 of each side (area average), then bicubic back up;
- blur: Gaussian blur, sigma 0.5% / 1.5% of S (a stand-in for defocus; no lens bokeh);
- darker, brighter: exposure -1 / -2 EV and +1 / +2 EV, applied in linear light (highlights
  clip as in an over-exposed photo);
- warm, cool: white balance, in linear light, red x1.2 / x1.45 and blue x0.75 / x0.55 (a
  tungsten lamp with daylight balance); red x0.85 / x0.7 and blue x1.2 / x1.45 (cool daylight);
- crop: the central 60% / 40% of each side (only part of the specimen in view);
- rotate: a quarter turn (90, 180 or 270 degrees) / an angle 20-70 degrees off the axes, the
  canvas grown to hold the whole photo and its corners filled with the photo's median border
  colour;
- background: the whole photo, its own background included, shrunk to 60% / 40% of each side
  and pasted as a rectangle at a random place on a synthetic canvas of the original size (a
  random muted surface colour with light and dark patches, slight colour variation and fine
  mottling): roughly "the specimen photographed smaller, on another table". No real table
  photo is used and the pasted rectangle's edges show, so this is an approximation.

Reported per entry and per shift x strength: accuracy, NLL and ECE (zoo.evaluate.metrics), the
clean scores, and the means over the shifts (per strength and all). Not covered: sensor noise,
motion blur, glare, occluding fingers or labels, other cameras' colour science, and real
photos of the same specimens; the shifts are synthetic. There is no per-source report: the
minerals dataset's file names do not say where each photo came from (benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from zoo.data.imaging import load_image, read_photo, resize_short_side, short_side_array
from zoo.errors import UnreadableImageError, ZooError
from zoo.evaluate.calibration import TemperatureScaler, expected_calibration_error
from zoo.evaluate.metrics import classification_metrics
from zoo.evaluate.predictor import ModelPredictor, load_predictor
from zoo.models.runtime import Runtime
from zoo.paths import runs_home
from zoo.store.runs import load_predictions, run_dir

WORK_SIDE = 1024  # larger photos are shrunk to this shorter side before they are changed
CHUNK = 16        # photos decoded and changed at a time (bounded memory)
STRENGTHS = ("mild", "strong")
METRICS = ("accuracy", "nll", "ece", "ece_raw", "ece_soft", "overconfidence")


# ---- the shifts: PIL RGB image, the strength's parameter, a seeded generator -> PIL image ----
def jpeg(img: Image.Image, quality: int, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(buf).convert("RGB")


def downscale(img: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    small = (max(8, round(img.width * factor)), max(8, round(img.height * factor)))
    return img.resize(small, Image.Resampling.BOX).resize(img.size, Image.Resampling.BICUBIC)


def blur(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(sigma * min(img.size)))


def linear_gains(img: Image.Image, gains: tuple[float, float, float]) -> Image.Image:
    """Multiply each channel by its gain in linear light (sRGB decoded and re-encoded)."""
    v = np.arange(256) / 255
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    lut = []
    for gain in gains:
        x = np.clip(lin * gain, 0, 1)
        srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
        lut += np.round(srgb * 255).astype(int).tolist()
    return img.point(lut)


def exposure(img: Image.Image, ev: float, rng: np.random.Generator) -> Image.Image:
    return linear_gains(img, (2.0 ** ev,) * 3)


def white_balance(img: Image.Image, red_blue: tuple[float, float],
                  rng: np.random.Generator) -> Image.Image:
    return linear_gains(img, (red_blue[0], 1.0, red_blue[1]))


def crop(img: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    w, h = max(1, round(img.width * keep)), max(1, round(img.height * keep))
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def rotate(img: Image.Image, off_axis: bool, rng: np.random.Generator) -> Image.Image:
    quarter = 90 * int(rng.integers(1, 4))
    if not off_axis:
        return img.rotate(quarter, expand=True)
    arr = np.asarray(img)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    fill = tuple(int(c) for c in np.median(border, axis=0))
    angle = quarter + float(rng.uniform(20, 70))
    return img.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=fill)


def background(img: Image.Image, scale: float, rng: np.random.Generator) -> Image.Image:
    def blobs(cells: int, spread: float) -> np.ndarray:
        tile = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8))
        smooth = np.asarray(tile.resize(img.size, Image.Resampling.BICUBIC), float)
        return (smooth / 255 - 0.5) * spread

    base = rng.uniform(70, 190) + rng.uniform(-15, 15, 3)  # a muted surface colour
    # light and dark patches, a little colour variation, fine mottling
    canvas = base + blobs(6, 90)[..., :1] + blobs(6, 20) + blobs(50, 40)[..., :1]
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    small = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                       Image.Resampling.LANCZOS)
    out.paste(small, (int(rng.integers(0, img.width - small.width + 1)),
                      int(rng.integers(0, img.height - small.height + 1))))
    return out


Shift = Callable[[Image.Image, object, np.random.Generator], Image.Image]
SHIFTS: dict[str, tuple[Shift, dict[str, object]]] = {
    "jpeg": (jpeg, {"mild": 40, "strong": 15}),
    "downscale": (downscale, {"mild": 1 / 3, "strong": 1 / 6}),
    "blur": (blur, {"mild": 0.005, "strong": 0.015}),
    "darker": (exposure, {"mild": -1.0, "strong": -2.0}),
    "brighter": (exposure, {"mild": 1.0, "strong": 2.0}),
    "warm": (white_balance, {"mild": (1.2, 0.75), "strong": (1.45, 0.55)}),
    "cool": (white_balance, {"mild": (0.85, 1.2), "strong": (0.7, 1.45)}),
    "crop": (crop, {"mild": 0.6, "strong": 0.4}),
    "rotate": (rotate, {"mild": False, "strong": True}),
    "background": (background, {"mild": 0.6, "strong": 0.4}),
}


def apply_shift(photo: np.ndarray, shift: str, strength: str, key: str) -> np.ndarray:
    """``photo`` (uint8 HxWx3) changed by ``shift`` at ``strength``; the random choices are
    seeded by ``key`` (the photo's content hash), the shift and the strength."""
    fn, params = SHIFTS[shift]
    seed = hashlib.sha256(f"{key}\0{shift}\0{strength}".encode()).digest()[:8]
    out = fn(Image.fromarray(photo), params[strength], np.random.default_rng(list(seed)))
    return np.ascontiguousarray(np.asarray(out.convert("RGB")))


def shifted(photo: np.ndarray, condition: tuple[str, str], key: str) -> np.ndarray:
    return photo if condition[0] == "clean" else apply_shift(photo, *condition, key)


# ---- photos and predictions ------------------------------------------------------------------
def load_photo(path: Path) -> tuple[np.ndarray, str]:
    """A photo as zoo decodes it (EXIF-rotated RGB), at most WORK_SIDE on its shorter side, and
    its content hash."""
    try:
        data = read_photo(path)
        img = load_image(data, min_side=WORK_SIDE)
    except UnreadableImageError as exc:
        raise ZooError(f"Photo {exc.source} cannot be read ({exc.reason}): restore the dataset "
                       "or point --data at it.") from exc
    if min(img.size) > WORK_SIDE:
        img = resize_short_side(img, WORK_SIDE)
    return np.asarray(img), hashlib.sha256(data).hexdigest()


def data_root(predictor: ModelPredictor, data: str | None) -> Path:
    """``data``, else the folder the run (an ensemble: its first member) was trained on."""
    meta = predictor.members[0].meta if predictor.kind == "ensemble" else predictor.meta
    root = Path(data or meta.get("data_root") or "")
    if not data and not root.is_dir():
        raise ZooError(f"The photos of '{predictor.name}' are not at {root} any more: pass "
                       "--data with the folder of class folders it was trained on.")
    if not root.is_dir():
        raise ZooError(f"--data {data} is not a folder: pass the folder of class folders "
                       "(<class>/<image>) the runs were trained on.")
    return root


def split_photos(predictors: list[ModelPredictor], split: str,
                 per_class: int | None) -> tuple[list[str], np.ndarray]:
    """Ids and labels of the ``split`` photos every entry was scored on (``per_class``: the
    first that many of each class)."""
    first = predictors[0]
    stored = load_predictions(first.path, split)
    ids, labels = stored["ids"].tolist(), stored["labels"]
    for p in predictors[1:]:
        other = load_predictions(p.path, split)
        if p.classes != first.classes or other["ids"].tolist() != ids:
            raise ZooError(f"'{p.name}' and '{first.name}' were not scored on the same {split} "
                           "photos and classes (another dataset or split): benchmark them "
                           "separately.")
    keep = [i for i, y in enumerate(labels) if per_class is None
            or int((labels[:i] == y).sum()) < per_class]
    return [ids[i] for i in keep], labels[keep]


def predict_conditions(predictors: list[ModelPredictor], root: Path, ids: list[str],
                       conditions: list[tuple[str, str]], quiet: bool) -> dict:
    """Uncalibrated probabilities per entry and condition: {name: {condition: (N, C)}}."""
    probs: dict = {p.name: {c: [] for c in conditions} for p in predictors}
    for start in range(0, len(ids), CHUNK):
        photos = [load_photo(root / i) for i in ids[start:start + CHUNK]]
        for cond in conditions:
            changed = [shifted(photo, cond, sha) for photo, sha in photos]
            for p in predictors:
                arrays = [short_side_array(a, p.decode_side) for a in changed]
                probs[p.name][cond].append(p.predict_arrays(arrays, calibrated=False))
        if not quiet:
            print(f"photos {min(start + CHUNK, len(ids))}/{len(ids)}", file=sys.stderr, flush=True)
    return {n: {c: np.concatenate(v) for c, v in by.items()} for n, by in probs.items()}


# ---- scores ----------------------------------------------------------------------------------
def scores(labels: np.ndarray, raw: np.ndarray, scaler: TemperatureScaler,
           classes: list[str]) -> dict[str, float]:
    """Accuracy, NLL and ECE with the entry's calibration; ECE of the raw probabilities and with
    the temperature kept >= 1 (``ece_soft``: calibration that may soften but never sharpen); mean
    top probability minus accuracy (``overconfidence``, calibrated; < 0: under-confident)."""
    probs = scaler.transform(raw)
    metrics = classification_metrics(labels, probs, classes)
    soft = TemperatureScaler(max(scaler.temperature, 1.0)).transform(raw)
    return {"accuracy": metrics["accuracy"], "nll": metrics["nll"], "ece": metrics["ece"],
            "ece_raw": expected_calibration_error(labels, raw),
            "ece_soft": expected_calibration_error(labels, soft),
            "overconfidence": float(probs.max(1).mean() - metrics["accuracy"])}


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) for m in METRICS}


def summarise(predictor: ModelPredictor, labels: np.ndarray, probs: dict, split: str,
              shifts: list[str], strengths: list[str]) -> dict:
    """One entry's clean scores, per shift x strength, and the means over the shifts; with the
    split's accuracy stored at training (a check of the clean path, on all of the split)."""
    score = lambda raw: scores(labels, raw, predictor.scaler, predictor.classes)  # noqa: E731
    per = {s: {k: score(probs[(s, k)]) for k in strengths} for s in shifts}
    means = {k: mean_scores([per[s][k] for s in shifts]) for k in strengths}
    means["all"] = mean_scores([per[s][k] for s in shifts for k in strengths])
    stored = predictor.meta.get("metrics", {}).get(split, {}).get("accuracy")
    return {"kind": predictor.kind, "stored_accuracy": stored,
            "temperature": predictor.scaler.temperature, "clean": score(probs[("clean", "")]),
            "shifts": per, "mean": means}


def print_table(results: dict, shifts: list[str], strengths: list[str]) -> None:
    names = list(results)
    print(f"{'':<20}" + "".join(f"{n[:29]:>30}" for n in names))
    print(f"{'condition':<20}" + f"{'acc':>12}{'NLL':>9}{'ECE':>9}{'raw':>7}{'T>=1':>7}{'over':>7}"
          * len(names))
    rows = [("clean", lambda r: r["clean"])]
    rows += [(f"{s} {k}", lambda r, s=s, k=k: r["shifts"][s][k]) for s in shifts for k in strengths]
    rows += [(f"mean {k}", lambda r, k=k: r["mean"][k]) for k in [*strengths, "all"]]
    for label, get in rows:
        cells = [get(results[n]) for n in names]
        print(f"{label:<20}" + "".join(
            f"{c['accuracy']:>12.3f}{c['nll']:>9.3f}{c['ece']:>9.3f}{c['ece_raw']:>7.3f}"
            f"{c['ece_soft']:>7.3f}{c['overconfidence']:>+7.3f}" for c in cells))


def save_examples(folder: Path, root: Path, photo_id: str, shifts: list[str],
                  strengths: list[str]) -> None:
    """The first photo, clean and changed by each shift, as PNGs for eyeballing."""
    folder.mkdir(parents=True, exist_ok=True)
    photo, sha = load_photo(root / photo_id)
    Image.fromarray(photo).save(folder / "clean.png")
    for s in shifts:
        for k in strengths:
            Image.fromarray(apply_shift(photo, s, k, sha)).save(folder / f"{s}-{k}.png")


# ---- command line ----------------------------------------------------------------------------
def subset(value: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(allowed)}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("entries", nargs="+", help="runs and/or ensembles to benchmark")
    p.add_argument("--home", type=Path, help="run root (default $ZOO_HOME, else ./runs)")
    p.add_argument("--data", help="the dataset folder (default: where each run was trained)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--photos", type=int, help="at most this many photos per class")
    p.add_argument("--shifts", type=lambda v: subset(v, tuple(SHIFTS), "shift"),
                   default=list(SHIFTS), help=f"comma-separated subset of {','.join(SHIFTS)}")
    p.add_argument("--strengths", type=lambda v: subset(v, STRENGTHS, "strength"),
                   default=list(STRENGTHS), help="mild,strong (default both)")
    p.add_argument("--folds", type=int, help="entries are benchmarks/recipe_cv.py (or ensemble_cv.py) "
                   "variants: benchmark <entry>-fold<k> on fold k's validation photos for each k < "
                   "FOLDS, then print each entry's mean over the folds")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    p.add_argument("--save-examples", type=Path, metavar="DIR",
                   help="write the first photo, clean and shifted, as PNGs here")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.photos is not None and args.photos < 1:
        p.error("--photos must be at least 1")
    if args.folds is not None and args.folds < 1:
        p.error("--folds must be at least 1")
    return args


def benchmark(names: list[str], home: Path, runtime: Runtime, args: argparse.Namespace,
              split: str) -> tuple[dict, Path, int]:
    """Every entry's scores on its ``split`` photos, clean and shifted; the photos' folder and count."""
    predictors = [load_predictor(name, home, runtime) for name in dict.fromkeys(names)]
    root = data_root(predictors[0], args.data)
    ids, labels = split_photos(predictors, split, args.photos)
    if args.save_examples:
        save_examples(args.save_examples, root, ids[0], args.shifts, args.strengths)
    conditions = [("clean", "")] + [(s, k) for s in args.shifts for k in args.strengths]
    probs = predict_conditions(predictors, root, ids, conditions, args.quiet)
    results = {p.name: summarise(p, labels, probs[p.name], split, args.shifts, args.strengths)
               for p in predictors}
    return results, root, len(ids)


def fold_means(per_fold: list[dict], entries: list[str]) -> dict:
    """Per entry, the mean over the folds of its clean and all-shift scores and of its drop
    (clean accuracy minus the mean accuracy under shift)."""
    means = {}
    for e in entries:
        runs = [fold[f"{e}-fold{k}"] for k, fold in enumerate(per_fold)]
        means[e] = {"clean": mean_scores([r["clean"] for r in runs]),
                    "shifted": mean_scores([r["mean"]["all"] for r in runs]),
                    "drop": float(np.mean([r["clean"]["accuracy"] - r["mean"]["all"]["accuracy"] for r in runs]))}
    print(f"mean over {len(per_fold)} folds' validation photos: {'entry':<24}{'clean acc':>10}"
          f"{'shifted':>9}{'drop':>7}{'NLL':>7}{'shifted':>9}{'ECE':>7}{'shifted':>9}")
    for e, m in means.items():
        c, s = m["clean"], m["shifted"]
        print(f"{'':<42}{e:<24}{c['accuracy']:>10.4f}{s['accuracy']:>9.4f}{m['drop']:>7.4f}"
              f"{c['nll']:>7.3f}{s['nll']:>9.3f}{c['ece']:>7.3f}{s['ece']:>9.3f}")
    return means


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    runtime = Runtime.create(args.device)
    home = args.home or runs_home()
    entries = list(dict.fromkeys(args.entries))
    folds = [[f"{e}-fold{k}" for e in entries] for k in range(args.folds)] if args.folds else [entries]
    split = "val" if args.folds else args.split
    for name in (n for names in folds for n in names):
        run_dir(name, home)  # every fold's run exists, before hours of work
    per_fold = []
    for names in folds:
        results, root, photos = benchmark(names, home, runtime, args, split)
        print(f"{photos} {split} photos of {root}; accuracy, NLL, ECE (calibrated), ECE raw, ECE "
              "with the temperature kept >= 1, over-confidence (mean top probability - accuracy)")
        print_table(results, args.shifts, args.strengths)
        per_fold.append(results)
    summary = {"folds": per_fold, "mean": fold_means(per_fold, entries)} if args.folds else {"entries": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "split": split, "data": str(root), "photos": photos,
            "photos_per_class_cap": args.photos, "shifts": args.shifts,
            "strengths": args.strengths, "seconds": round(time.perf_counter() - start, 1),
            **summary}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ZooError as exc:
        raise SystemExit(f"error: {exc}") from None
