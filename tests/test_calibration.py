import json

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.evaluate.calibration import TemperatureScaler, expected_calibration_error, reliability_bins


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def _calibrated(n: int, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): softmax(logits) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, classes))
    probs = _softmax(logits)
    y = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, y


def test_fit_softens_overconfident_model_and_lowers_nll():
    logits, y = _calibrated(3000)
    probs = _softmax(5 * logits)
    scaler = TemperatureScaler().fit(probs, y)
    assert scaler.temperature > 1
    assert 3.5 < scaler.temperature < 7  # the sharpening factor it has to undo
    assert _nll(scaler.transform(probs), y) < _nll(probs, y)


def test_fit_sharpens_underconfident_model():
    logits, y = _calibrated(3000, seed=1)
    scaler = TemperatureScaler().fit(_softmax(logits / 3), y)
    assert scaler.temperature < 1


def test_fit_keeps_well_calibrated_model_near_one():
    logits, y = _calibrated(5000, seed=2)
    scaler = TemperatureScaler().fit(_softmax(logits), y)
    assert abs(scaler.temperature - 1) < 0.15


def test_fit_returns_self_and_stays_in_bounds():
    probs = np.array([[0.5, 0.5]] * 10)
    y = np.array([0, 1] * 5)
    scaler = TemperatureScaler()
    assert scaler.fit(probs, y) is scaler
    assert 0.05 <= scaler.temperature <= 20


def test_transform_preserves_argmax_and_normalises():
    logits, _ = _calibrated(200)
    probs = _softmax(logits).astype(np.float32)
    for t in (0.3, 1.0, 4.0):
        out = TemperatureScaler(t).transform(probs)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
        np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-6)
    hot = TemperatureScaler(4.0).transform(probs)
    assert hot.max(axis=1).mean() < probs.max(axis=1).mean()


def test_temperature_one_is_identity():
    logits, _ = _calibrated(100)
    probs = _softmax(logits)
    np.testing.assert_allclose(TemperatureScaler(1.0).transform(probs), probs, atol=1e-6)


def test_dict_round_trip_through_json():
    scaler = TemperatureScaler(2.345678)
    restored = TemperatureScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert restored.temperature == scaler.temperature


@pytest.mark.parametrize("bad", [{}, {"temperature": -1}, {"temperature": "hot"},
                                 {"temperature": float("nan")}])
def test_from_dict_rejects_invalid_temperature(bad):
    with pytest.raises(ZooError, match="temperature"):
        TemperatureScaler.from_dict(bad)


def test_fit_on_empty_split_is_a_user_error():
    with pytest.raises(ZooError, match="validation"):
        TemperatureScaler().fit(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_fit_rejects_mismatched_labels():
    with pytest.raises(ValueError):
        TemperatureScaler().fit(np.full((4, 2), 0.5), np.array([0, 1, 0]))
    with pytest.raises(ValueError):
        TemperatureScaler().fit(np.full((2, 2), 0.5), np.array([0, 2]))


def test_ece_hand_computed():
    probs = np.array([[0.40, 0.30, 0.30],   # conf .40 bin 0, pred 0, y 0: right
                      [0.45, 0.35, 0.20],   # conf .45 bin 0, pred 0, y 1: wrong
                      [0.90, 0.05, 0.05],   # conf .90 bin 1, pred 0, y 0: right
                      [0.10, 0.20, 0.70]])  # conf .70 bin 1, pred 2, y 1: wrong
    y = np.array([0, 1, 0, 1])
    # bin 0: |0.5 - 0.425| = 0.075, bin 1: |0.5 - 0.8| = 0.3, each holding half the samples
    assert expected_calibration_error(y, probs, n_bins=2) == pytest.approx(0.1875)
    bins = reliability_bins(y, probs, n_bins=2)
    np.testing.assert_allclose(bins["edges"], [0, 0.5, 1])
    np.testing.assert_array_equal(bins["count"], [2, 2])
    np.testing.assert_allclose(bins["confidence"], [0.425, 0.8])
    np.testing.assert_allclose(bins["accuracy"], [0.5, 0.5])


def test_ece_bins_are_closed_on_the_right():
    probs = np.array([[0.5, 0.5], [1.0, 0.0]])
    bins = reliability_bins(np.array([0, 0]), probs, n_bins=2)
    np.testing.assert_array_equal(bins["count"], [1, 1])


def test_ece_zero_for_calibrated_constant_predictions():
    probs = np.tile([0.75, 0.25], (8, 1))
    y = np.array([0, 0, 0, 1, 0, 0, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0, abs=1e-12)


def test_empty_bins_are_nan_and_ignored():
    probs = np.tile([0.75, 0.25], (4, 1))
    bins = reliability_bins(np.array([0, 0, 0, 0]), probs, n_bins=4)
    assert np.isnan(bins["accuracy"][[0, 1, 3]]).all()
    assert expected_calibration_error(np.array([0, 0, 0, 0]), probs, n_bins=4) == \
        pytest.approx(0.25)


def test_min_temperature_keeps_fit_from_sharpening() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    soft = np.full((200, 3), 0.2)
    soft[np.arange(200), y] = 0.6  # always right, under-confident: the fit sharpens (T < 1)
    assert TemperatureScaler().fit(soft, y).temperature < 1
    floored = TemperatureScaler(min_temperature=1.0).fit(soft, y)
    assert floored.temperature == 1.0
    again = TemperatureScaler.from_dict(floored.to_dict())
    assert (again.temperature, again.min_temperature) == (1.0, 1.0)
    assert "min_temperature" not in TemperatureScaler().fit(soft, y).to_dict()


def test_recipe_calibration_section() -> None:
    from zoo.train.recipes import load_recipe

    recipe, _ = load_recipe("custom_cnn", ["calibration.temperature=1.3", "calibration.min_temperature=1"])
    assert (recipe.calibration.temperature, recipe.calibration.min_temperature) == (1.3, 1.0)
    plain, _ = load_recipe("custom_cnn")
    assert plain.digest() == recipe.digest()  # calibration does not change training
    for sets, message in ((["calibration.temperature=0.5", "calibration.min_temperature=1"], "below min_temperature"),
                          (["calibration.min_temperature=0"], "greater than or equal to 0.05"),
                          (["calibration.temprature=1"], "did you mean 'temperature'")):
        with pytest.raises(ZooError, match=message):
            load_recipe("custom_cnn", sets)
