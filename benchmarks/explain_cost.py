"""The cost of an explanation against one prediction, per photo, on the CPU (or --device).

    python benchmarks/explain_cost.py --runs custom_cnn-1,tf_efficientnet_lite0-1 --photos 30 --repeat 5

For each run and each of --photos photos (spread over the --data folder, default $ZOO_DATA) it
times, one photo at a time, as `zoo predict` and `zoo predict --explain` do:

  predict   read the file, decode it at the model's size, predict (calibrated probabilities)
  cam       the Grad-CAM map of the top class (forward to the feature map without autograd,
            then the head forward and backward), on the decoded photo already in memory
  explain   all that `--explain` adds for the photo: decode it again for the CAM and at its
            own size, the CAM, the overlay and the PNG bytes (not the disk write)

and prints the medians (milliseconds), the ratios cam / predict and explain / predict of the
medians (target: explain <= 2x predict) and the largest explain / predict of any photo. It also
checks that explaining leaves the model in eval mode with no parameter gradients and that
predictions are unchanged afterwards.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from zoo.data.cache import decode_array
from zoo.data.dataset import visible_files
from zoo.data.imaging import read_photo
from zoo.errors import ZooError
from zoo.evaluate.predictor import ModelPredictor, load_predictor
from zoo.models.runtime import Runtime
from zoo.report.heatmaps import explained_photo, png_bytes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="comma-separated runs or ensembles")
    parser.add_argument("--data", type=Path, default=os.environ.get("ZOO_DATA"),
                        help="folder of photos (searched recursively; default $ZOO_DATA)")
    parser.add_argument("--photos", type=int, default=30, help="photos to time, spread over the folder")
    parser.add_argument("--repeat", type=int, default=5, help="timings of each stage per photo")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps | auto")
    args = parser.parse_args(argv)
    if args.data is None or not args.data.is_dir():
        parser.error("give --data (a folder of photos) or set ZOO_DATA")
    if min(args.photos, args.repeat) < 1:
        parser.error("--photos and --repeat must be >= 1")
    return args


def photos(folder: Path, n: int) -> list[Path]:
    files = [f for f in visible_files(folder) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return files[::max(1, len(files) // n)][:n]


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def predict_one(predictor: ModelPredictor, path: Path) -> np.ndarray:
    return predictor.predict_arrays([decode_array(read_photo(path), predictor.decode_side)])[0]


def measure(predictor: ModelPredictor, files: list[Path], repeat: int) -> dict[str, list[float]]:
    """Per photo, the median of ``repeat`` timings of each stage (stages interleaved)."""
    times: dict[str, list[float]] = {"predict": [], "cam": [], "explain": []}
    for path in files:
        array = decode_array(read_photo(path), predictor.decode_side)
        target = int(predict_one(predictor, path).argmax())
        runs: dict[str, list[float]] = {key: [] for key in times}
        for _ in range(repeat):
            runs["predict"].append(_ms(lambda: predict_one(predictor, path)))
            runs["cam"].append(_ms(lambda: predictor.heatmaps([array], [target])))
            runs["explain"].append(_ms(lambda: png_bytes(explained_photo(predictor, read_photo(path),
                                                                         target))))
        for key, values in runs.items():
            times[key].append(statistics.median(values))
    return times


def check_untouched(predictor: ModelPredictor, files: list[Path], before: np.ndarray) -> None:
    members = getattr(predictor, "members", [predictor])
    assert all(not m.model.training for m in members), "explaining left a model in train mode"
    assert all(p.grad is None for m in members for p in m.model.parameters()), "parameter gradients"
    after = np.stack([predict_one(predictor, f) for f in files])
    assert np.array_equal(before, after), "predictions changed after explaining"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runtime = Runtime.create(args.device)
    files = photos(args.data, args.photos)
    print(f"{len(files)} photos from {args.data}; {runtime.describe()['device_name']}; "
          f"medians over photos of the per-photo median of {args.repeat}")
    print(f"{'run':32} {'predict ms':>10} {'cam ms':>8} {'explain ms':>10} {'cam/pred':>9} {'expl/pred':>9} "
          f"{'worst':>6}")
    for run in args.runs.split(","):
        try:
            predictor = load_predictor(run, runtime=runtime)
        except ZooError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        before = np.stack([predict_one(predictor, f) for f in files])  # also the warm-up
        predictor.heatmaps([decode_array(read_photo(files[0]), predictor.decode_side)], [0])
        times = measure(predictor, files, args.repeat)
        check_untouched(predictor, files, before)
        t = {key: statistics.median(v) for key, v in times.items()}
        worst = max(e / p for e, p in zip(times["explain"], times["predict"]))
        print(f"{run:32} {t['predict']:10.1f} {t['cam']:8.1f} {t['explain']:10.1f} "
              f"{t['cam'] / t['predict']:9.2f} {t['explain'] / t['predict']:9.2f} {worst:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
