"""End to end on real mineral photos (a few per class, from ZOO_TEST_DATA): train, reload,
rank, ensemble. Tiny images and 1-2 epochs: this checks behaviour, not accuracy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from zoo.cli import app
from zoo.data.cache import DecodeCache
from zoo.data.dataset import scan_dataset
from zoo.data.preprocessing import Preprocessing
from zoo.evaluate.predictor import load_predictor
from zoo.store.runs import load_predictions, read_meta

RUN_FILES = ["model.safetensors", "meta.json", "config.yaml", "history.csv",
             "predictions/val.npz", "predictions/test.npz", "plots/learning_curves.png",
             "plots/confusion_matrix.png", "plots/reliability.png"]


@pytest.fixture(scope="module")
def trained(real_subset: Path, real_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """custom_cnn and tf_efficientnet_lite0 (real ImageNet weights) trained on real photos."""
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_HOME", str(home))
    mp.setenv("ZOO_SPLITS_DIR", str(home / "splits"))
    mp.setenv("ZOO_DATA", str(real_subset))
    mp.setenv("ZOO_WEIGHTS_DIR", str(real_weights))
    mp.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    small = ["--set", "data.image_size=32", "--set", "data.batch_size=8", "--quiet"]
    for args in (["custom_cnn", "--name", "cnn", "--set", "train.epochs=2"],
                 ["tf_efficientnet_lite0", "--name", "lite0", "--set", "train.epochs=1",
                  "--set", "train.warmup.epochs=2"]):
        result = runner.invoke(app, ["train", *args, *small])
        assert result.exit_code == 0, result.output
    yield home, runner
    mp.undo()


def test_run_folder_has_everything(trained) -> None:
    home, _ = trained
    for run in ("cnn", "lite0"):
        for rel in RUN_FILES:
            assert (home / run / rel).is_file(), f"{run}/{rel} missing"
        meta = read_meta(home / run)
        assert meta["status"] == "finished" and len(meta["classes"]) == 7
        assert set(meta["metrics"]["test"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "nll", "ece"}
        assert meta["params"] > 0 and meta["fit_seconds"] > 0 and meta["infer_img_per_s"] > 0
    assert "tf_efficientnet_lite0.safetensors" in read_meta(home / "lite0")["weights_source"]


def test_checkpoint_round_trip_gives_same_predictions(trained, real_subset: Path) -> None:
    home, _ = trained
    for run in ("cnn", "lite0"):
        stored = load_predictions(home / run, "test")
        np.testing.assert_allclose(_reload(home, run, run, real_subset, stored), stored["probs"],
                                   atol=1e-5)


def test_leaderboard_lists_runs_with_contract_keys(trained) -> None:
    _, runner = trained
    result = runner.invoke(app, ["leaderboard", "--format", "json"])
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == {"cnn", "lite0"}
    for row in rows:
        assert {"name", "kind", "model", "test_accuracy", "val_accuracy", "test_nll"} <= set(row)
    accs = [r["test_accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True)


def test_resnet50_without_weights_explains_the_three_ways(trained) -> None:
    _, runner = trained
    result = runner.invoke(app, ["train", "resnet50", "--set", "data.image_size=32", "--quiet"])
    assert result.exit_code == 2
    for hint in ("--weights", "ZOO_WEIGHTS_DIR", "hub", "model.pretrained=false"):
        assert hint in result.output
    assert "Traceback" not in result.output


def test_resnet50_trains_from_scratch_when_asked(trained) -> None:
    home, runner = trained
    result = runner.invoke(app, ["train", "resnet50", "--set", "model.pretrained=false", "--set",
                                 "data.image_size=32", "--set", "train.epochs=1", "--quiet",
                                 "--name", "r50"])
    assert result.exit_code == 0, result.output
    assert read_meta(home / "r50")["weights_source"].startswith("random init")


@pytest.mark.parametrize("method", ["soft", "weighted", "stack"])
def test_ensemble_of_real_runs_is_ranked_and_reloadable(trained, real_subset: Path, method: str) -> None:
    home, runner = trained
    result = runner.invoke(app, ["ensemble", "--members", "cnn,lite0", "--method", method,
                                 "--name", f"ens-{method}"])
    assert result.exit_code == 0, result.output
    rows = json.loads(runner.invoke(app, ["leaderboard", "--format", "json"]).stdout)
    row = next(r for r in rows if r["name"] == f"ens-{method}")
    assert row["kind"] == "ensemble" and row["members"] == "cnn,lite0"
    stored = load_predictions(home / f"ens-{method}", "test")
    np.testing.assert_allclose(_reload(home, f"ens-{method}", "cnn", real_subset, stored),
                               stored["probs"], atol=1e-5)


def _reload(home: Path, run: str, like: str, root: Path, stored: dict) -> np.ndarray:
    """Predict the stored test images again through a freshly loaded predictor."""
    index = {it.path: it for it in scan_dataset(root).items}
    pre = Preprocessing.from_dict(read_meta(home / like)["preprocessing"])
    paths = stored["ids"].tolist()
    arrays = DecodeCache().get_many([root / p for p in paths], [index[p].sha256 for p in paths],
                                    pre.resize_side)
    return load_predictor(run, home).predict_arrays(arrays)
