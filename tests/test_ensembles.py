"""Ensemble methods on synthetic member probabilities where the right answer is known."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ensembles import (
    METHODS,
    EnsembleMethod,
    SoftVoting,
    Stacking,
    WeightedVoting,
    create_method,
    load_method,
)
from ensembles.stacking import stack_features
from zoo.errors import ZooError

C = 4


def confident(target: np.ndarray, conf: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities with mass ``conf`` on ``target`` and the rest spread at random."""
    rest = rng.dirichlet(np.ones(C - 1), len(target)) * (1 - conf)
    p = np.zeros((len(target), C))
    for i, t in enumerate(target):
        p[i, t] = conf
        p[i, np.arange(C) != t] = rest[i]
    return p


def noisy(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.dirichlet(np.ones(C), n)


def labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.resize(np.arange(C), n)[rng.permutation(n)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def members(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """A decent member, a noisy one, and one that confidently predicts the next class."""
    return [confident(y, 0.5, rng), noisy(len(y), rng), confident((y + 1) % C, 0.9, rng)]


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(axis=1) == y).mean())


def test_soft_voting_is_mean(rng):
    y = labels(40, rng)
    probs = [noisy(40, rng) for _ in range(3)]
    m = SoftVoting().fit(probs, y)
    test = [noisy(10, rng) for _ in range(3)]
    out = m.predict_proba(test)
    np.testing.assert_allclose(out, np.mean(test, axis=0))
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(m.val_proba(), np.mean(probs, axis=0))


def test_weighted_confident_member_dominates(rng):
    y = labels(80, rng)
    bad = confident((y + 1) % C, 0.8, rng)
    probs = [noisy(80, rng), confident(y, 0.95, rng), noisy(80, rng), bad, bad.copy()]
    m = WeightedVoting().fit(probs, y)
    assert m.weights_[1] > 0.8
    assert m.weights_.sum() == pytest.approx(1.0)
    assert m.weights_[3] + m.weights_[4] < 0.02
    np.testing.assert_allclose(m.predict_proba(probs).sum(axis=1), 1.0)
    assert m.describe(["a", "b", "c", "d", "e"]).startswith("weights: a=")


def test_weighted_is_greedy_with_replacement_and_ties_go_to_lowest_index(rng):
    y = labels(60, rng)
    first_half = np.arange(60) < 30
    good = confident(np.where(first_half, y, (y + 1) % C), 0.9, rng)  # right on rows 0-29
    other = confident(np.where(first_half, (y + 1) % C, y), 0.9, rng)  # right on rows 30-59
    m = WeightedVoting(n_iter=20).fit([noisy(60, rng), good, good.copy(), other], y)
    assert m.weights_[2] == 0.0  # exact duplicate of member 1 never wins a tie
    assert m.weights_[1] == pytest.approx(0.5, abs=0.1)  # complementary members share
    assert m.weights_[3] == pytest.approx(0.5, abs=0.1)
    assert np.all(m.weights_ * 20 == np.round(m.weights_ * 20))  # weights are counts / 20


def test_weighted_sorted_init_starts_with_best_members(rng):
    y = labels(60, rng)
    probs = [noisy(60, rng), confident(y, 0.9, rng), confident(y, 0.4, rng)]
    plain = WeightedVoting(n_iter=5).fit(probs, y)
    seeded = WeightedVoting(n_iter=5, sorted_init=2).fit(probs, y)
    assert plain.weights_[2] == 0.0
    assert seeded.weights_[2] == pytest.approx(1 / 7)


def test_stacking_fixes_permuted_member_where_soft_voting_fails(rng):
    y_val, y_test = labels(200, rng), labels(200, rng)
    val, test = members(y_val, rng), members(y_test, rng)
    stack = Stacking().fit(val, y_val)
    soft = SoftVoting().fit(val, y_val)
    assert accuracy(stack.predict_proba(test), y_test) > 0.95
    assert accuracy(stack.val_proba(), y_val) > 0.95
    assert accuracy(soft.predict_proba(test), y_test) < 0.5
    np.testing.assert_allclose(stack.predict_proba(test).sum(axis=1), 1.0)


def test_stacking_fits_only_on_validation_rows_and_val_proba_is_out_of_fold(rng, monkeypatch):
    seen: list[np.ndarray] = []
    original_fit = LogisticRegression.fit

    def recording_fit(self, X, y, *args, **kwargs):
        seen.append(np.array(X, copy=True))
        return original_fit(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", recording_fit)
    y_val, y_test = labels(100, rng), labels(50, rng)
    val, test = members(y_val, rng), members(y_test, rng)
    m = Stacking().fit(val, y_val)
    assert len(seen) == m.n_splits_ + 1 == 6  # 5 folds + the final fit on all validation rows
    val_rows = {row.tobytes() for row in stack_features(val)}
    test_rows = {row.tobytes() for row in stack_features(test)}
    fitted_rows = {row.tobytes() for X in seen for row in X}
    assert fitted_rows <= val_rows and not fitted_rows & test_rows
    assert all(len(X) < 100 for X in seen[:-1]) and len(seen[-1]) == 100

    m.predict_proba(test)
    assert len(seen) == 6  # predicting never fits
    in_sample = m.predict_proba(val)
    assert np.abs(m.val_proba() - in_sample).max() > 1e-3  # out-of-fold, not in-sample


def test_stacking_handles_classes_absent_from_validation(rng):
    y_val = np.resize([0, 1, 2], 60)  # class 3 never appears
    val = [confident(y_val, 0.7, rng), noisy(60, rng)]
    m = Stacking().fit(val, y_val)
    out = m.predict_proba([confident(y_val, 0.7, rng), noisy(60, rng)])
    assert out.shape == (60, C) and np.all(np.isfinite(np.log(out)))
    assert out[:, 3].max() < 1e-6
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert m.val_proba().shape == (60, C)


def test_stacking_binary_subset_matches_sklearn(rng):
    y_val = np.resize([0, 2], 40)
    val = [confident(y_val, 0.6, rng), noisy(40, rng)]
    m = Stacking().fit(val, y_val)
    expected = LogisticRegression(C=1.0, max_iter=1000).fit(stack_features(val), y_val)
    out = m.predict_proba(val)
    np.testing.assert_allclose(out[:, [0, 2]], expected.predict_proba(stack_features(val)),
                               atol=1e-6)


def test_stacking_singleton_class_uses_fewer_folds_or_refuses(rng):
    y = np.array([0] * 10 + [1] * 10 + [2] * 3 + [3])
    probs = [confident(y, 0.6, rng), noisy(len(y), rng)]
    m = Stacking().fit(probs, y)
    assert m.n_splits_ == 3
    assert np.all(np.isfinite(np.log(m.val_proba())))
    with pytest.raises(ZooError, match="at least two classes"):
        Stacking().fit(probs, np.array([0] * 21 + [1, 2, 3]))


@pytest.mark.parametrize("name", ["soft", "weighted", "stack"])
def test_json_round_trip_is_exact(name, rng):
    y_val, y_test = labels(60, rng), labels(30, rng)
    val, test = members(y_val, rng), members(y_test, rng)
    m = create_method(name).fit(val, y_val)
    d = json.loads(json.dumps(m.to_dict()))
    loaded = load_method(d)
    assert type(loaded) is type(m) and d["method"] == name
    np.testing.assert_array_equal(loaded.predict_proba(test), m.predict_proba(test))
    assert loaded.describe() == m.describe()


def test_new_method_registers_with_one_small_class(rng):
    class Median(EnsembleMethod):
        name = "median_test"
        description = "median of the member probabilities"

        def _fit(self, probs, y):
            return self._predict(probs)

        def _predict(self, probs):
            return np.median(np.stack(probs), axis=0)

        def describe(self, names=None):
            return "median"

    try:
        y = labels(20, rng)
        probs = [noisy(20, rng) for _ in range(3)]
        m = create_method("median_test").fit(probs, y)
        assert METHODS["median_test"] is Median and m.to_dict()["method"] == "median_test"
        out = load_method(json.loads(json.dumps(m.to_dict()))).predict_proba(probs)
        np.testing.assert_allclose(out.sum(axis=1), 1.0)
        with pytest.raises(ValueError, match="already registered"):
            type("Again", (EnsembleMethod,), {"name": "median_test"})
    finally:
        METHODS.pop("median_test")


def test_invalid_inputs_raise_zoo_error(rng):
    y = labels(20, rng)
    p = noisy(20, rng)
    with pytest.raises(ZooError, match="non-empty"):
        SoftVoting().fit([], y)
    with pytest.raises(ZooError, match="shape"):
        SoftVoting().fit([p, noisy(19, rng)], y)
    with pytest.raises(ZooError, match="Labels"):
        SoftVoting().fit([p], y[:-1])
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ZooError, match="NaN"):
        WeightedVoting().fit([p, bad], y)
    with pytest.raises(ZooError, match="logits"):
        Stacking().fit([p * 3], y)
    with pytest.raises(ZooError, match="not fitted"):
        SoftVoting().predict_proba([p])
    fitted = WeightedVoting().fit([p, noisy(20, rng)], y)
    with pytest.raises(ZooError, match="2"):
        fitted.predict_proba([p])
    with pytest.raises(ZooError, match="soft, stack, weighted"):
        create_method("bagging")
    with pytest.raises(ZooError, match="Unknown"):
        load_method({"method": "bagging"})
    with pytest.raises(ZooError, match="Invalid parameters"):
        create_method("stack", depth=3)
    with pytest.raises(ZooError, match="incomplete"):
        load_method({"method": "weighted", "params": {}, "n_members": 3, "n_classes": C,
                     "state": {"weights": [1.0]}})
