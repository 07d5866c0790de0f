"""benchmarks/recipe_cv.py, ensemble_cv.py and shift.py --folds together on tiny runs: two
variants trained on two folds, their soft vote built per fold with `zoo ensemble`, a variant that
distills each fold from that fold's ensemble (``{fold}`` in a --variant), and the shift benchmark
on every fold's validation photos."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_dataset
from zoo.errors import ZooError
from zoo.store.runs import load_predictions


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = "data.image_size=32 data.batch_size=8 train.epochs=1 model.kwargs.widths=[8,16]"


def test_fold_ensembles_score_and_teach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, work = make_dataset(tmp_path / "photos", per_class=10), tmp_path / "cv"
    recipe_cv, ensemble_cv = _module("recipe_cv"), _module("ensemble_cv")
    recipe_cv.main(["custom_cnn", "--data", str(data), "--folds", "2", "--work", str(work),
                    "--variant", f"a {TINY} seed=0", "--variant", f"b {TINY} seed=1"])
    ensemble_cv.main(["--work", str(work), "--members", "a", "b", "--folds", "2",
                      "--json", str(tmp_path / "ens.json")])
    scores = json.loads((tmp_path / "ens.json").read_text())
    assert set(scores) == {"a", "b", "soft-a-b"}
    runs = work / "runs"
    for k in range(2):
        a, b = (load_predictions(runs / f"{m}-fold{k}", "val") for m in ("a", "b"))
        vote = (a["probs"] + b["probs"]) / 2
        accuracy = float(np.mean(vote.argmax(1) == a["labels"]))
        assert scores["soft-a-b"]["folds"][k]["accuracy"] == pytest.approx(accuracy)
    recipe_cv.main(["custom_cnn", "--data", str(data), "--folds", "2", "--work", str(work),
                    "--variant", f"kd {TINY} train.distill.teacher=soft-a-b-fold{{fold}}"])
    for k in range(2):
        meta = json.loads((runs / f"kd-fold{k}" / "meta.json").read_text())
        assert meta["distill"]["teacher"] == f"soft-a-b-fold{k}"
        assert meta["distill"]["models"] == [f"a-fold{k}", f"b-fold{k}"]
    shift = _module("shift")
    out = tmp_path / "shift.json"
    assert shift.main(["a", "kd", "soft-a-b", "--folds", "2", "--home", str(runs), "--photos", "1",
                       "--shifts", "jpeg", "--strengths", "mild", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "val" and [sorted(f) for f in result["folds"]] == [
        ["a-fold0", "kd-fold0", "soft-a-b-fold0"], ["a-fold1", "kd-fold1", "soft-a-b-fold1"]]
    clean = [result["folds"][k]["kd-fold" + str(k)]["clean"]["accuracy"] for k in range(2)]
    assert result["mean"]["kd"]["clean"]["accuracy"] == pytest.approx(sum(clean) / 2)
    assert set(result["mean"]) == {"a", "kd", "soft-a-b"}
    with pytest.raises(ZooError, match="No run named 'a-fold2'"):  # checked before any photo is changed
        shift.main(["a", "--folds", "3", "--home", str(runs), "--quiet"])
