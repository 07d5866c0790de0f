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
import sys

from zoo.errors import ZooError
from zoo.evaluate.trust import DEFAULT_PRECISION, fit_confidence_threshold, selective_stats
from zoo.paths import runs_home
from zoo.store.runs import load_predictions, run_dir


def rows(name: str, levels: list[float], target: float) -> list[str]:
    """One line per level: the threshold fitted on the stored val predictions, scored on val and test."""
    path = run_dir(name, runs_home())
    val, test = load_predictions(path, "val"), load_predictions(path, "test")
    judged = {split: (p["probs"].max(1), p["probs"].argmax(1) == p["labels"]) for split, p in
              (("val", val), ("test", test))}
    lines = []
    for level in levels:
        th = fit_confidence_threshold(*judged["val"], target, level)
        v, t = (selective_stats(*judged[split], th) for split in ("val", "test"))
        lines.append(f"{name:28}{level:>6g}{'-' if th is None else f'{th:.3f}':>10}  "
                     f"{v['coverage']:>6.3f} / {v['precision'] or 0:.3f}  {t['coverage']:>7.3f} / "
                     f"{t['precision'] or 0:.3f} ({t['answered']}/{t['n']})")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--level", type=float, nargs="+", default=[0.0, 0.9, 0.95])
    ap.add_argument("--target", type=float, default=DEFAULT_PRECISION)
    args = ap.parse_args(argv)
    try:
        lines = [line for name in args.runs for line in rows(name, args.level, args.target)]
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'run':28}{'level':>6}{'threshold':>10}  {'val cov / prec':>15}  {'test cov / prec':>16}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
