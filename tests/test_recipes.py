"""Broken recipes fail through the CLI with exit code 2, the file, the field and what is allowed,
and never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zoo.cli import app
from zoo.train.recipes import load_recipe

GOOD = "model: {name: custom_cnn, pretrained: false}\n"

# (file name, content, fragments the message must contain: file, field, what is allowed)
BAD_RECIPES = [
    ("tab.yaml", "model:\n  name: custom_cnn\n\tdata: 3\n", ["tab.yaml", "not valid YAML", "line 3"]),
    ("unclosed.yaml", "model: {name: custom_cnn\n", ["unclosed.yaml", "not valid YAML", "line"]),
    ("list.yaml", "- model\n- train\n", ["list.yaml", "must be a mapping"]),
    ("binary.yaml", b"\xff\xfe\x00\x01model", ["binary.yaml", "not a UTF-8 text file"]),
    ("unknown_top.yaml", GOOD + "trian: {epochs: 3}\n",
     ["unknown_top.yaml", "trian", "did you mean 'train'", "Allowed:"]),
    ("unknown_nested.yaml", GOOD + "train: {lrr: 0.1}\n", ["train.lrr", "did you mean 'lr'", "weight_decay"]),
    ("unknown_deep.yaml", GOOD + "train: {early_stopping: {patiense: 2}}\n",
     ["train.early_stopping.patiense", "did you mean 'patience'"]),
    ("type_int.yaml", GOOD + "data: {image_size: big}\n", ["data.image_size", "valid integer", "'big'"]),
    ("type_frac.yaml", GOOD + "train: {epochs: 2.5}\n", ["train.epochs", "fractional"]),
    ("type_section.yaml", GOOD + "train: 5\n", ["type_section.yaml", "train", "(got 5)"]),
    ("type_choice.yaml", GOOD + "train: {optimizer: adam}\n", ["train.optimizer", "'adamw' or 'sgd'"]),
    ("negative_lr.yaml", GOOD + "train: {lr: -0.001}\n", ["train.lr", "greater than 0"]),
    ("nan_lr.yaml", GOOD + "train: {lr: .nan}\n", ["train.lr", "finite number"]),
    ("inf_decay.yaml", GOOD + "train: {weight_decay: .inf}\n", ["train.weight_decay", "finite number"]),
    ("patience0.yaml", GOOD + "train: {early_stopping: {patience: 0}}\n",
     ["train.early_stopping.patience", "greater than or equal to 1"]),
    ("tiny_image.yaml", GOOD + "data: {image_size: 4}\n", ["data.image_size", "greater than or equal to 16"]),
    ("no_epochs.yaml", GOOD + "train: {epochs: 0, warmup: null}\n", ["no_epochs.yaml", "nothing to train"]),
    ("warmup_only_scratch.yaml", GOOD + "train: {epochs: 0}\n",
     ["model.pretrained is false", "nothing to train"]),
    ("no_model.yaml", "data: {image_size: 64}\n", ["no_model.yaml", "model", "Field required"]),
    ("bad_model.yaml", "model: {name: resnet5O}\n", ["bad_model.yaml", "model.name", "resnet50"]),
    ("bad_base.yaml", "base: nowhere\n" + GOOD, ["bad_base.yaml", "base 'nowhere' not found"]),
    ("loop.yaml", "base: loop\n" + GOOD, ["loop.yaml", "inherits from itself"]),
]


def _invoke(args: list[str], tmp_path: Path) -> tuple[int, str]:
    env = {"ZOO_HOME": str(tmp_path / "runs"), "ZOO_SPLITS_DIR": str(tmp_path / "splits"),
           "ZOO_DATA": str(tmp_path / "no-data"), "ZOO_RECIPES": str(tmp_path / "recipes"),
           "COLUMNS": "1000"}  # rich folds long paths at the terminal width
    result = CliRunner().invoke(app, args, env=env)
    return result.exit_code, " ".join(result.output.split())


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / "recipes" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("name,content,expected", BAD_RECIPES, ids=[r[0] for r in BAD_RECIPES])
def test_bad_recipe_is_a_clear_error(tmp_path, name, content, expected):
    path = _write(tmp_path, name, content)
    code, output = _invoke(["train", str(path)], tmp_path)
    assert code == 2, output
    assert "Traceback" not in output and output.startswith("error:")
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from: {output}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("sets,expected", [
    (["train.lr"], ["--set 'train.lr'", "section.field=value"]),
    (["=3"], ["section.field=value"]),
    (["train.lrr=3"], ["with --set train.lrr=3", "train.lrr", "did you mean 'lr'"]),
    (["train.epochs=[1"], ["--set train.epochs=[1", "not valid YAML"]),
    (["train=5", "train.lr=3"], ["--set train.lr=3", "plain value"]),
    (["model.name=custom_cn"], ["model.name", "Did you mean: custom_cnn"]),
])
def test_bad_set_override_is_a_clear_error(tmp_path, sets, expected):
    path = _write(tmp_path, "ok.yaml", GOOD)
    code, output = _invoke(["train", str(path)] + [a for s in sets for a in ("--set", s)], tmp_path)
    assert code == 2 and "Traceback" not in output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from: {output}"


def test_unknown_model_name_suggests_close_names(tmp_path):
    code, output = _invoke(["train", "custom_cn"], tmp_path)
    assert code == 2 and "Unknown model 'custom_cn'" in output and "Did you mean: custom_cnn" in output


def test_missing_recipe_file(tmp_path):
    code, output = _invoke(["train", str(tmp_path / "nope.yaml")], tmp_path)
    assert code == 2 and "Recipe file not found" in output and "nope.yaml" in output


def test_valid_recipe_with_base_and_overrides_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_RECIPES", str(tmp_path / "recipes"))
    _write(tmp_path, "parent.yaml", GOOD + "data: {image_size: 64}\ntrain: {lr: 0.01, warmup: null}\n")
    child = _write(tmp_path, "child.yaml", "base: parent\ntrain: {epochs: 2}\n")
    recipe, source = load_recipe(str(child), ["data.batch_size=4"])
    assert (recipe.model.name, recipe.data.image_size, recipe.data.batch_size) == ("custom_cnn", 64, 4)
    assert (recipe.train.lr, recipe.train.epochs) == (0.01, 2) and source == str(child)


def test_real_entry_point_exits_2_without_traceback(tmp_path):
    path = _write(tmp_path, "bad.yaml", GOOD + "train: {lr: -1}\n")
    proc = subprocess.run([sys.executable, "-m", "zoo", "train", str(path)], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                       "ZOO_HOME": str(tmp_path / "runs"), "COLUMNS": "1000"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "train.lr" in proc.stderr and "bad.yaml" in " ".join(proc.stderr.split())
