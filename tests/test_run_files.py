"""Run folders edited by hand or by an attacker: every file is checked before it is used. A
meta.json of the wrong shape, a resume state beyond the recipe, an ensemble that contains itself,
a checkpoint that does not fit meta.json's architecture, a pipe, a huge file or a zip bomb among
the run files: each ends in a short message naming the file and exit 2, never a hang, a giant
allocation or a traceback."""
from __future__ import annotations

import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_eval import invoke, private_copy

from zoo.errors import ZooError
from zoo.evaluate import predictor as predictor_module
from zoo.models.factory import build_model
from zoo.models.weights import load_state_into
from zoo.store.runs import PREDICTIONS_MAX_BYTES, load_weights, save_weights
from zoo.train.resume import load_state, save_state
from zoo.train.trainer import ResumeState


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # rich folds long paths at the terminal width
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


@pytest.fixture
def photo(zoo_copy) -> str:
    return str(next(zoo_copy.data.rglob("*.png")))


def edit_meta(run: Path, **changes) -> None:
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, **changes}))


def within(seconds: float, fn, *args):
    """``fn(*args)`` in a daemon thread: the test fails (instead of hanging) if it blocks."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=fn(*args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__}{args} still running after {seconds} s"
    return box["result"]


# ---- meta.json ------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, fragment", [
    ({"metrics": []}, "metrics"),
    ({"classes": "abc"}, "classes"),
    ({"preprocessing": {"image_size": 10**9, "mean": [0, 0, 0], "std": [1, 1, 1]}}, "image_size"),
    ({"status": "done"}, "status"),
    ({"params": "many"}, "params"),
])
def test_a_meta_json_of_the_wrong_shape_names_the_file_and_field(zoo_copy, photo, changes, fragment):
    edit_meta(zoo_copy.home / "tiny", **changes)
    for args in (["predict", "tiny", photo], ["evaluate", "tiny"], ["report", "tiny"]):
        res = invoke(args)
        assert res.exit_code == 2 and "tiny/meta.json is damaged" in res.said and fragment in res.said, res.said


# ---- resume states bounded by the run's recipe ----------------------------------------------------

@pytest.mark.parametrize("stage, epoch", [(0, 10**18), (7, 0), (0, 1)])
def test_a_resume_state_beyond_the_recipe_is_refused(zoo_copy, stage, epoch):
    run = zoo_copy.home / "tiny"
    edit_meta(run, status="interrupted")
    weights = load_weights(run / "model.safetensors")
    best = {k: v.clone() for k, v in weights.items()}
    save_state(run, ResumeState(stage, epoch, 0.5, 0, None, [], weights, best, {}, {}))
    res = invoke(["train", "custom_cnn", "--resume", "tiny"])
    assert res.exit_code == 2 and "does not fit the run's recipe" in res.said, res.said
    assert f"stage {stage}, epoch {epoch}" in res.said


def test_a_resume_state_with_damaged_fields_is_refused(zoo_copy):
    run = zoo_copy.home / "tiny"
    edit_meta(run, status="interrupted")
    weights = load_weights(run / "model.safetensors")
    best = {k: v.clone() for k, v in weights.items()}
    save_state(run, ResumeState(0, 0, None, -3, None, [{"epoch": "x"}], weights, best, {}, {}))
    with pytest.raises(ZooError, match="resume state .* is damaged: bad_epochs"):
        load_state(run)
    res = invoke(["train", "custom_cnn", "--resume", "tiny"])
    assert res.exit_code == 2 and "is damaged" in res.said


def test_a_bombed_config_yaml_is_refused_on_resume(zoo_copy):
    run = zoo_copy.home / "tiny"
    edit_meta(run, status="interrupted")
    laughs = "b0: &b0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]\n" for i in range(1, 6))
    (run / "config.yaml").write_text(laughs)
    res = invoke(["train", "custom_cnn", "--resume", "tiny"])
    assert res.exit_code == 2 and "tiny/config.yaml" in res.said and "nested aliases" in res.said


# ---- ensembles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("members, fragment", [(["duo", "tiny"], "the ensemble itself"),
                                               (["tiny", "mix"], "an ensemble")])
def test_an_ensemble_that_contains_itself_or_an_ensemble_is_refused(zoo_copy, photo, members, fragment):
    shutil.copytree(zoo_copy.home / "duo", zoo_copy.home / "mix")
    edit_meta(zoo_copy.home / "mix", name="mix")
    edit_meta(zoo_copy.home / "duo", members=members)
    res = invoke(["predict", "duo", photo])
    assert res.exit_code == 2 and fragment in res.said and "duo/meta.json" in res.said, res.said


def test_an_ensemble_member_with_a_foreign_checkpoint_is_refused(zoo_copy):
    model = build_model("custom_cnn", 3, widths=[4, 8])
    save_weights(zoo_copy.home / "tiny2" / "model.safetensors", model)
    res = invoke(["ensemble", "--members", "tiny,tiny2", "--name", "again"])
    assert res.exit_code == 2 and "Member 'tiny2'" in res.said and not (zoo_copy.home / "again").exists()


# ---- checkpoints checked from their header, before a model is built --------------------------------

@pytest.mark.parametrize("changes, fragment", [
    ({"model": "vit_giant_patch14_224", "model_kwargs": {}}, "does not fit the model"),
    ({"model_kwargs": {"widths": [4096, 4096, 4096]}}, "does not fit the model"),
    ({"params": 10**9}, "but"),
    ({"model_kwargs": {"checkpoint_path": "/tmp/evil.pth"}}, "checkpoint_path"),
])
def test_a_hand_edited_architecture_is_refused_before_building_it(zoo_copy, photo, monkeypatch,
                                                                  changes, fragment):
    built = []
    monkeypatch.setattr(predictor_module, "build_model", lambda *a, **k: built.append(a))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    edit_meta(zoo_copy.home / "tiny", **changes)
    res = invoke(["predict", "tiny", photo])
    assert res.exit_code == 2 and fragment in res.said and built == [], res.said
    assert len(res.said) < 800


def test_a_checkpoint_of_another_architecture_gets_a_short_summary(tmp_path):
    other = tmp_path / "other.safetensors"
    save_weights(other, build_model("resnet18", 3))
    with pytest.raises(ZooError) as err:
        load_state_into(build_model("resnet34", 3), other)
    message = str(err.value)
    assert len(message) < 600 and "missing (e.g. layer1.2.conv1.weight" in message
    assert "another architecture" in message


# ---- pipes, giants and zip bombs among the run files -----------------------------------------------

def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize("file, args", [
    ("tiny/meta.json", ["leaderboard", "--rebuild"]),
    ("tiny/predictions/test.npz", ["evaluate", "tiny"]),
    ("tiny/config.yaml", ["report", "tiny"]),
    ("tiny/model.safetensors", ["evaluate", "tiny", "--tta"]),
    ("tiny/evaluations/x.json", ["report", "tiny"]),
])
@pytest.mark.parametrize("kind", ["pipe", "giant"])
def test_a_pipe_or_a_giant_run_file_cannot_hang_or_exhaust_a_command(zoo_copy, file, args, kind):
    path = zoo_copy.home / file
    path.parent.mkdir(exist_ok=True)
    if kind == "pipe":
        _fifo(path)
    else:
        with open(path, "r+b" if path.exists() else "wb") as fh:
            fh.truncate(2**35)  # sparse: 32 GiB that would take minutes and all memory to read
    res = within(60, invoke, args)
    if args[0] == "leaderboard":
        assert res.exit_code == 0 and "skipped" in res.said and "tiny/meta.json" in res.said
    elif file.endswith("x.json"):
        assert res.exit_code == 0  # a stored evaluation that cannot be read is left out
    else:
        assert res.exit_code == 2 and file in res.said, res.said


def test_predictions_that_would_decompress_to_gigabytes_are_refused(zoo_copy):
    file = zoo_copy.home / "tiny" / "predictions" / "test.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 3), np.float32))
    header["shape"] = (PREDICTIONS_MAX_BYTES, 3)
    with zipfile.ZipFile(file, "w") as zf, zf.open("probs.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    res = invoke(["evaluate", "tiny"])
    assert res.exit_code == 2 and "test.npz" in res.said and "limit" in res.said, res.said
