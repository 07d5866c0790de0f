"""Trust in a prediction: how sure it is (selective prediction) and whether the photo shows one of
the known classes at all (open-set, "unknown mineral").

Every prediction gets

- ``confidence``: the calibrated probability of the top class;
- ``ood_score``: how unlike the training photos the photo is (higher = stranger; see
  ``OodScorer``);
- ``status``: ``unknown`` when ``ood_score`` is beyond the run's OOD threshold, else
  ``confident`` when ``confidence`` reaches the run's confidence threshold (and the top class is
  a strict winner), else ``unsure``.

Both thresholds are fitted on validation photos only (out-of-fold validation probabilities where
the method has them, e.g. a stacking ensemble), never on the test split: the confidence threshold
is the lowest one whose selective precision on validation reaches the target precision (default
0.95) with 90% confidence (a Clopper-Pearson lower bound), the OOD threshold the ``known_tpr`` quantile (default 0.95) of the validation photos' OOD
scores, so that 95% of photos of the known classes stay below it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

DEFAULT_PRECISION = 0.95
DEFAULT_LEVEL = 0.9   # confidence that the validation precision bound holds (0: the plain ratio)
DEFAULT_TPR = 0.95
# The OOD scores that benchmarks/open_set.py compares; DEFAULT_OOD is the one it favoured.
OOD_METHODS = ("knn", "mahalanobis", "energy", "maxlogit", "msp")
FEATURE_METHODS = ("knn", "mahalanobis")
DEFAULT_OOD = "knn"
DEFAULT_K = 5
OOD_FILE = "ood.safetensors"      # feature statistics of a run (knn bank, Mahalanobis means)
OOD_MAX_BYTES = 2**31
BANK_MAX = 20_000                 # training photos kept in a k-NN bank (a seeded sample beyond)
STATUSES = ("confident", "unsure", "unknown")
MAX_CANDIDATES = 3
EPS = 1e-12


# ---- selective prediction ---------------------------------------------------------------------
def _sorted(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.ndim != 1 or conf.shape != ok.shape:
        raise ValueError(f"confidence {conf.shape} and correct {ok.shape} must be equal 1-D shapes")
    order = np.argsort(-conf, kind="stable")
    return conf[order], ok[order]


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """The risk-coverage curve of answering only the most confident photos: for each k, coverage
    k/N and risk (error rate) among the k most confident; ``aurc`` is the area under it (mean
    risk over k; lower is better; Geifman & El-Yaniv 2017)."""
    conf, ok = _sorted(confidence, correct)
    if conf.size == 0:
        return {"coverage": np.zeros(0), "risk": np.zeros(0), "aurc": None}
    k = np.arange(1, conf.size + 1)
    risk = 1.0 - np.cumsum(ok) / k
    return {"coverage": k / conf.size, "risk": risk, "aurc": float(risk.mean())}


def fit_confidence_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float,
                             level: float = DEFAULT_LEVEL) -> float | None:
    """The lowest confidence threshold whose selective precision (accuracy of the answers at or
    above it) reaches ``target_precision`` on these (validation) photos with confidence ``level``:
    the one-sided Clopper-Pearson lower bound of that precision must reach the target, so a few
    hundred validation photos do not promise more than they can (the bound of Geifman & El-Yaniv
    2017's selection with guaranteed risk); ``level`` 0 takes the plain ratio. The largest coverage
    that keeps the target; ``None`` when no threshold does (then nothing is ever confident)."""
    conf, ok = _sorted(confidence, correct)
    if conf.size == 0:
        return None
    k = np.arange(1, conf.size + 1)
    right = np.cumsum(ok)
    if level > 0:
        from scipy.stats import beta

        precision = np.nan_to_num(beta.ppf(1.0 - level, right, k - right + 1), nan=0.0)
    else:
        precision = right / k
    # Only the ends of runs of equal confidence are thresholds (a threshold takes all ties).
    ends = np.append(conf[:-1] > conf[1:], True)
    good = np.flatnonzero(ends & (precision >= target_precision - 1e-12))
    return float(conf[good[-1]]) if good.size else None


def selective_stats(confidence: np.ndarray, correct: np.ndarray, threshold: float | None) -> dict:
    """Coverage (share answered) and precision (accuracy of those) at ``threshold``."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    covered = conf >= threshold if threshold is not None else np.zeros(conf.shape, bool)
    n = int(covered.sum())
    return {"threshold": threshold, "coverage": float(covered.mean()) if conf.size else 0.0,
            "precision": float(ok[covered].mean()) if n else None, "answered": n, "n": int(conf.size)}


# ---- open set -------------------------------------------------------------------------------
def quantile_threshold(scores: np.ndarray, tpr: float) -> float:
    """The smallest score that at least ``tpr`` of ``scores`` do not exceed."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ZooError("An OOD threshold needs validation photos; the validation split is empty.")
    return float(np.quantile(s, tpr, method="inverted_cdf"))


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of telling ``unknown`` (positives, higher scores) from ``known``."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Share of ``unknown`` photos taken for known ones at the threshold that keeps ``tpr`` of
    the ``known`` photos (the usual "FPR at 95% TPR" of OOD detection)."""
    threshold = quantile_threshold(known, tpr)
    return float(np.mean(np.asarray(unknown) <= threshold))


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), EPS)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


class OodScorer:
    """One model's OOD score (higher = less like its training photos):

    - ``knn``: 1 - cosine similarity to the k-th nearest training photo in pooled-feature space
      (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"); the bank
      is the training photos' L2-normalised features (float16);
    - ``mahalanobis``: smallest Mahalanobis distance to a class mean of the training features,
      one shared covariance (Ledoit-Wolf shrinkage; Lee et al. 2018);
    - ``energy``: -logsumexp(logits / T) on the temperature-scaled logits (Liu et al. 2020);
    - ``maxlogit``: -max logit (Hendrycks et al. 2022);
    - ``msp``: 1 - max calibrated softmax probability (Hendrycks & Gimpel 2017).
    """

    def __init__(self, method: str, temperature: float = 1.0, k: int = DEFAULT_K,
                 arrays: dict[str, np.ndarray] | None = None) -> None:
        if method not in OOD_METHODS:
            raise ZooError(f"Unknown OOD score {method!r}; known: {', '.join(OOD_METHODS)}.")
        self.method = method
        self.temperature = float(temperature)
        self.k = int(k)
        self.arrays = arrays or {}

    @property
    def needs_features(self) -> bool:
        return self.method in FEATURE_METHODS

    @classmethod
    def fit(cls, method: str, train_features: np.ndarray | None, train_labels: np.ndarray | None,
            n_classes: int, temperature: float = 1.0, k: int = DEFAULT_K,
            seed: int = 0) -> "OodScorer":
        """Statistics of the training photos' pooled features (eval view, no augmentation)."""
        scorer = cls(method, temperature, k)
        if method == "knn":
            bank = _normalise(train_features)
            if len(bank) > BANK_MAX:
                bank = bank[np.sort(np.random.default_rng(seed).choice(len(bank), BANK_MAX, False))]
            scorer.arrays = {"bank": bank.astype(np.float16)}
            scorer.k = max(1, min(k, len(bank)))
        elif method == "mahalanobis":
            from sklearn.covariance import LedoitWolf

            f = np.asarray(train_features, dtype=np.float64)
            y = np.asarray(train_labels, dtype=np.int64)
            present = [c for c in range(n_classes) if np.any(y == c)]
            means = np.stack([f[y == c].mean(0) for c in present])
            centred = f - means[np.searchsorted(present, y)]
            precision = LedoitWolf(assume_centered=True).fit(centred).precision_
            scorer.arrays = {"means": means.astype(np.float32), "precision": precision.astype(np.float32)}
        return scorer

    def score(self, logits: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64)
        if len(z) == 0:
            return np.zeros(0, np.float32)
        if self.method == "energy":
            out = -_logsumexp(z / self.temperature)
        elif self.method == "maxlogit":
            out = -z.max(axis=1)
        elif self.method == "msp":
            zt = z / self.temperature
            out = 1.0 - np.exp(zt.max(axis=1) - _logsumexp(zt))
        elif self.method == "knn":
            sims = _normalise(features) @ self.arrays["bank"].astype(np.float32).T
            kth = np.partition(sims, sims.shape[1] - self.k, axis=1)[:, sims.shape[1] - self.k]
            out = 1.0 - kth
        else:  # mahalanobis
            f = np.asarray(features, dtype=np.float32)
            means, precision = self.arrays["means"], self.arrays["precision"]
            fp = f @ precision
            mp = means @ precision
            d = ((fp * f).sum(1)[:, None] - 2.0 * fp @ means.T + (mp * means).sum(1)[None, :])
            out = d.min(axis=1)
        return np.asarray(out, dtype=np.float32)

    def params(self) -> dict:
        p = {"method": self.method, "temperature": self.temperature}
        if self.method == "knn":
            p["k"] = self.k
        if self.needs_features:
            p["file"] = OOD_FILE
        return p

    def write_to(self, folder: Path) -> None:
        """Write the feature statistics (if any) to ``folder/ood.safetensors``, atomically."""
        if not self.needs_features:
            return
        from safetensors.numpy import save_file

        from zoo.fileio import atomic_path

        with atomic_path(folder / OOD_FILE, durable=True) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.arrays.items()}, str(tmp))

    @classmethod
    def load(cls, folder: Path, params: dict) -> "OodScorer":
        scorer = cls(params["method"], params.get("temperature", 1.0), params.get("k", DEFAULT_K))
        if not scorer.needs_features:
            return scorer
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from zoo.fileio import open_regular

        file = folder / OOD_FILE
        try:
            open_regular(file, OOD_MAX_BYTES).close()
            arrays = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ZooError(f"The unknown-mineral statistics {file} are missing or unreadable "
                           f"({exc}); retrain the run, or delete 'trust' from its meta.json to "
                           "predict without statuses.") from exc
        need = {"knn": {"bank"}, "mahalanobis": {"means", "precision"}}[scorer.method]
        if set(arrays) != need:
            raise ZooError(f"{file} holds {sorted(arrays)}, expected {sorted(need)}; retrain the run.")
        scorer.arrays = arrays
        return scorer


def combine_member_scores(scores: list[np.ndarray], norms: list[dict]) -> np.ndarray:
    """An ensemble's OOD score: the mean of its members' scores, each put on a common scale by its
    own validation photos: (score - median) / (threshold - median), so 0 is a typical known photo
    and 1 the member's own threshold."""
    parts = [(np.asarray(s, np.float64) - n["median"]) / max(n["threshold"] - n["median"], EPS)
             for s, n in zip(scores, norms)]
    return np.mean(parts, axis=0).astype(np.float32)


# ---- fitting and applying -------------------------------------------------------------------
def fit_trust(val_probs: np.ndarray, val_labels: np.ndarray, val_ood: np.ndarray | None,
              target_precision: float = DEFAULT_PRECISION, known_tpr: float = DEFAULT_TPR,
              ood: dict | None = None, fitted_on: str = "validation",
              level: float = DEFAULT_LEVEL) -> dict:
    """The ``trust`` entry of a run's meta.json, from validation photos only: calibrated
    probabilities, labels and OOD scores (``None``: no unknown-mineral check)."""
    probs = np.asarray(val_probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(val_labels)
    threshold = fit_confidence_threshold(confidence, correct, target_precision, level)
    curve = risk_coverage(confidence, correct)
    trust = {"target_precision": float(target_precision), "confidence_level": float(level),
             "confidence_threshold": threshold,
             "fitted_on": f"{fitted_on} ({len(probs)} photos)",
             "val": {**selective_stats(confidence, correct, threshold), "aurc": curve["aurc"]}}
    # A rule any program can apply to the probabilities alone (exported models): 1 - top
    # probability, with its own threshold for the same share of known photos.
    trust["output_ood"] = {"method": "msp", "known_tpr": float(known_tpr),
                           "threshold": quantile_threshold(1.0 - confidence, known_tpr)}
    if val_ood is not None and ood is not None:
        scores = np.asarray(val_ood, dtype=np.float64)
        trust["ood"] = {**ood, "known_tpr": float(known_tpr),
                        "threshold": quantile_threshold(scores, known_tpr),
                        "median": float(np.median(scores))}
    return trust


@dataclass
class Trust:
    """A run's fitted thresholds (``meta.json`` ``trust``), applied to new photos."""

    target_precision: float
    confidence_threshold: float | None
    ood_threshold: float | None = None
    ood_method: str | None = None

    @classmethod
    def from_meta(cls, d: dict | None) -> "Trust | None":
        if not d:
            return None
        ood = d.get("ood") or {}
        return cls(float(d["target_precision"]), d.get("confidence_threshold"),
                   ood.get("threshold"), ood.get("method"))

    def judge(self, probs: np.ndarray, ood: np.ndarray | None, classes: list[str]) -> list[dict]:
        """``status``, ``confidence``, ``ood_score`` and ``candidates`` for each row of calibrated
        ``probs`` (N, C)."""
        p = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-p, axis=1, kind="stable")
        out = []
        for i, row in enumerate(p):
            top = row[order[i]]
            confidence = float(top[0])
            winner = len(top) < 2 or top[0] > top[1]
            score = None if ood is None or not math.isfinite(float(ood[i])) else float(ood[i])
            if score is not None and self.ood_threshold is not None and score > self.ood_threshold:
                status = "unknown"
            elif (self.confidence_threshold is not None and winner
                  and confidence >= self.confidence_threshold):
                status = "confident"
            else:
                status = "unsure"
            out.append({"status": status, "confidence": confidence, "ood_score": score,
                        "candidates": candidates(row, classes, status, self.target_precision)})
        return out


def candidates(row: np.ndarray, classes: list[str], status: str,
               target_precision: float = DEFAULT_PRECISION) -> list[str]:
    """The answer for a confident photo; two or three candidates otherwise: the most probable
    classes until they hold ``target_precision`` of the probability (at least 2, at most 3)."""
    order = np.argsort(-np.asarray(row), kind="stable")
    if status == "confident":
        return [classes[order[0]]]
    n = int(np.searchsorted(np.cumsum(np.asarray(row)[order]), target_precision) + 1)
    n = min(max(n, 2), MAX_CANDIDATES, len(classes))
    return [classes[j] for j in order[:n]]


def message(verdict: dict, classes: list[str]) -> str:
    """The verdict in plain words."""
    names = [c.replace("_", " ") for c in verdict["candidates"]]
    if verdict["status"] == "confident":
        return f"{names[0]} ({verdict['confidence']:.0%} sure)."
    if verdict["status"] == "unsure":
        return "Not sure: " + _either(names) + "."
    return (f"This does not look like any of the {len(classes)} minerals this model knows; "
            f"nearest: {', '.join(names)}.")


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


NO_TRUST_NOTE = ("this run has no fitted trust thresholds (trained before they existed): "
                 "predictions carry no status or OOD score; retrain it to get them")


def selective_summary(trust: Trust | None, probs: np.ndarray, labels: np.ndarray,
                      ood: np.ndarray | None, classes: list[str]) -> dict:
    """What the thresholds do on labelled photos (for reporting: nothing here is fitted): the area
    under the risk-coverage curve, coverage and precision at the confidence threshold, and the
    statuses with the precision of the ``confident`` answers."""
    p = np.asarray(probs, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(labels)
    out = {"aurc": risk_coverage(confidence, correct)["aurc"],
           **selective_stats(confidence, correct,
                             trust.confidence_threshold if trust is not None else None)}
    if trust is None:
        return out
    statuses = np.array([v["status"] for v in trust.judge(p, ood, classes)])
    confident = statuses == "confident"
    out["statuses"] = {s: int((statuses == s).sum()) for s in STATUSES}
    out["confident_coverage"] = float(confident.mean()) if len(p) else 0.0
    out["confident_precision"] = float(correct[confident].mean()) if confident.any() else None
    return out


def export_trust(meta: dict) -> dict | None:
    """The thresholds in an exported model's metadata, with how to apply them to its output."""
    trust = meta.get("trust")
    if not trust:
        return None
    ood = trust.get("ood") or {}
    out = {"target_precision": trust["target_precision"],
           "confidence_threshold": trust.get("confidence_threshold"),
           "rule": "status = 'unknown' if the OOD score > its threshold; else 'confident' if the "
                   "largest probability >= confidence_threshold (and no other class ties it); "
                   "else 'unsure' (answer with the 2-3 most probable classes). "
                   "confidence_threshold null: never confident.",
           "fitted_on": trust.get("fitted_on")}
    if ood:
        out["ood"] = {"method": ood["method"], "threshold": ood["threshold"],
                      "known_tpr": ood["known_tpr"],
                      "from_output": ood["method"] == "msp",
                      "note": "the zoo's own OOD score (zoo predict / zoo serve); "
                              + ("1 - the largest probability" if ood["method"] == "msp" else
                                 "it needs the model's pooled features and the run's "
                                 f"{OOD_FILE}, which this file does not output: use output_ood")}
    if trust.get("output_ood"):
        out["output_ood"] = {**trust["output_ood"], "from_output": True,
                             "note": "OOD score = 1 - the largest probability of this file's "
                                     "output; unknown above the threshold"}
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def trust_summary(meta: dict) -> str:
    """One line on a run's fitted thresholds and what they do on its test split."""
    trust = meta.get("trust")
    if not trust:
        return f"trust: none ({NO_TRUST_NOTE})"
    test = meta.get("metrics", {}).get("test", {}).get("selective") or {}
    threshold = trust.get("confidence_threshold")
    if threshold is None:
        line = (f"trust: never confident (no threshold reaches precision "
                f"{trust['target_precision']:.2f} on {trust.get('fitted_on', 'validation')})")
    else:
        line = (f"trust: confident at confidence >= {threshold:.3f} (target precision "
                f"{trust['target_precision']:.2f}, fitted on {trust.get('fitted_on', 'validation')}); "
                f"test coverage {_pct(test.get('coverage'))}, precision {_pct(test.get('precision'))}")
    ood = trust.get("ood")
    if ood:
        flagged = (test.get("statuses") or {}).get("unknown")
        line += (f"; unknown beyond {ood['method']} score {ood['threshold']:.4g} (keeps "
                 f"{ood['known_tpr']:.0%} of known validation photos)"
                 + (f", {flagged} of {test.get('n')} test photos flagged" if flagged is not None else ""))
    return line
