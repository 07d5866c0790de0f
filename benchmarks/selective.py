"""Selective prediction: the confidence threshold's rule against the test split, from stored
predictions (no model is run).

For each run or ensemble and each ``--level`` (the confidence that the validation precision
reaches the target; 0: the plain ratio), fit the confidence threshold on the stored validation
probabilities as ``zoo train`` / ``zoo ensemble`` do (``zoo.evaluate.trust``) and print its
coverage and precision on validation and on the test split. The test split only reports here;
the shipped level was set before this was run.

    ZOO_HOME=runs python benchmarks/selective.py tf_efficientnet_lite0-1 soft-1 --level 0 0.9 0.95
"""
from __future__ import annotations

import argparse
from pathlib import Path

from zoo.evaluate.trust import DEFAULT_PRECISION, fit_confidence_threshold, selective_stats
from zoo.paths import runs_home
from zoo.store.runs import load_predictions, run_dir


def stats(run: Path, split: str, threshold: float | None) -> dict:
    p = load_predictions(run, split)
    return selective_stats(p["probs"].max(1), p["probs"].argmax(1) == p["labels"], threshold)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--level", type=float, nargs="+", default=[0.0, 0.9, 0.95])
    ap.add_argument("--target", type=float, default=DEFAULT_PRECISION)
    args = ap.parse_args(argv)
    home = runs_home()
    print(f"{'run':28}{'level':>6}{'threshold':>10}  {'val cov / prec':>15}  {'test cov / prec':>16}")
    for name in args.runs:
        path = run_dir(name, home)
        val = load_predictions(path, "val")
        for level in args.level:
            th = fit_confidence_threshold(val["probs"].max(1), val["probs"].argmax(1) == val["labels"],
                                          args.target, level)
            v, t = stats(path, "val", th), stats(path, "test", th)
            print(f"{name:28}{level:>6g}{'-' if th is None else f'{th:.3f}':>10}  "
                  f"{v['coverage']:>6.3f} / {v['precision'] or 0:.3f}  {t['coverage']:>7.3f} / "
                  f"{t['precision'] or 0:.3f} ({t['answered']}/{t['n']})")


if __name__ == "__main__":
    main()
