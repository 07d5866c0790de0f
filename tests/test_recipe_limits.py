"""Recipes an attacker or a careless user sends: YAML bombs, huge files, duplicate keys, values the
schema must bound, model arguments that are not the recipe's to set. Each is refused through the
CLI with exit 2, quickly, naming the file and field, before any run folder exists."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from zoo.cli import app
from zoo.errors import ZooError
from zoo.train.recipes import load_recipe, read_recipe_file

GOOD = "model: {name: custom_cnn, pretrained: false}\n"
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
BOMB = "l0: &l0 [lol]\n" + LAUGHS  # about 450 bytes; 9**9 values once expanded


def cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"ZOO_HOME": str(tmp_path / "runs"), "ZOO_SPLITS_DIR": str(tmp_path / "splits"),
           "ZOO_DATA": str(tmp_path / "no-data"), "COLUMNS": "1000"}
    result = CliRunner().invoke(app, list(args), env=env)
    output = " ".join(result.output.split())
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, output


def refusal_seconds(path: str, *sets: str) -> float:
    """How long load_recipe takes to refuse ``path`` (the CLI's imports not counted)."""
    start = time.perf_counter()
    with pytest.raises(ZooError):
        load_recipe(path, list(sets))
    return time.perf_counter() - start


def recipe(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


@pytest.mark.parametrize("where", [
    "model: {name: custom_cnn, pretrained: false, kwargs: {x: *l9}}\n",
    GOOD + "seed: *l9\n",
    GOOD + "augment: {train: *l9}\n",
])
def test_billion_laughs_is_refused_at_once(tmp_path, where):
    path = recipe(tmp_path, BOMB + where)
    code, output = cli(tmp_path, "train", path)
    assert code == 2 and "r.yaml" in output and "aliases" in output
    assert not (tmp_path / "runs").exists()
    assert refusal_seconds(path) < 2


def test_a_few_nested_aliases_expanding_too_far_are_refused(tmp_path):
    laughs = "a0: &a0 [" + ", ".join(["x"] * 30) + "]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 30)}]\n" for i in range(1, 4))
    code, output = cli(tmp_path, "train", recipe(tmp_path, laughs + GOOD + "seed: *a3\n"))
    assert code == 2 and "expands to more than 10,000 values" in output


def test_anchors_used_sparingly_still_work(tmp_path):
    text = GOOD + "train: {lr: &lr 0.01, warmup: {lr: *lr}, early_stopping: {<<: {patience: 4}}}\n"
    rec, _ = load_recipe(recipe(tmp_path, text))
    assert rec.train.warmup.lr == rec.train.lr == 0.01 and rec.train.early_stopping.patience == 4


def test_a_50_mb_recipe_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "w") as fh:
        fh.write(GOOD + "description: [")
        fh.truncate(50 * 2**20)
    code, output = cli(tmp_path, "train", str(path))
    assert code == 2 and "big.yaml" in output and "1,048,576-byte limit" in output
    assert refusal_seconds(str(path)) < 2


def test_a_long_list_under_the_size_cap_is_refused_by_count(tmp_path):
    text = GOOD + "description: [" + ", ".join(["1"] * 200_000) + "]\n"
    code, output = cli(tmp_path, "train", recipe(tmp_path, text))
    assert code == 2 and "expands to more than" in output


@pytest.mark.parametrize("text, expected", [
    (GOOD + "seed: 1\nseed: 2\n", ["'seed' appears twice", "line 3"]),
    ("model: {name: custom_cnn, name: resnet50}\n", ["'name' appears twice"]),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n" + GOOD, ["r.yaml"]),
    ("x: " + "[" * 40 + "]" * 40 + "\n" + GOOD, ["nests deeper than 32"]),
    ("x: &a [*a]\n" + GOOD, ["contains itself"]),
    (GOOD + "seed: " + "9" * 5000 + "\n", ["r.yaml", "cannot be read"]),
])
def test_malformed_yaml_is_a_clear_error(tmp_path, text, expected):
    code, output = cli(tmp_path, "train", recipe(tmp_path, text))
    assert code == 2, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from: {output}"


def test_a_pipe_as_recipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    code, output = cli(tmp_path, "train", str(fifo))
    assert code == 2 and "pipe.yaml" in output
    with pytest.raises(ZooError, match="pipe.yaml is refused: not a regular file"):
        read_recipe_file(fifo)


def test_a_bomb_in_a_set_value_is_refused(tmp_path):
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x, x]"] + ["*a"] * 200) + "]"
    code, output = cli(tmp_path, "train", recipe(tmp_path, GOOD), "--set", f"description={bomb}")
    assert code == 2 and "--set description=" in output and "aliases" in output


def test_messages_show_huge_values_shortly(tmp_path):
    text = GOOD + "data: {image_size: [" + ", ".join(["1"] * 5000) + "]}\n"
    code, output = cli(tmp_path, "train", recipe(tmp_path, text))
    assert code == 2 and "data.image_size" in output and len(output) < 1000


@pytest.mark.parametrize("setting, field, fragment", [
    ("seed=-1", "seed", "greater than or equal to 0"),
    ("seed=10000000000000000000000000", "seed", "less than or equal to 4294967295"),
    ("train.weight_decay=1e308", "train.weight_decay", "less than or equal to 1"),
    ("train.early_stopping.patience=1000000000", "train.early_stopping.patience", "less than"),
    ("train.warmup.epochs=99999999", "train.warmup.epochs", "less than"),
    ("model.kwargs.num_classes=5", "model.kwargs", "number of classes comes from the dataset"),
    ("model.kwargs.pretrained=true", "model.kwargs", "use model.pretrained"),
    ("model.kwargs.checkpoint_path=/etc/passwd", "model.kwargs", "safetensors only"),
    ("model.kwargs.pretrained_cfg_overlay={file: /x.pth}", "model.kwargs", "pretrained configuration"),
    ("model.kwargs.features_only=true", "model.kwargs", "classifiers"),
    ("model.kwargs.in_chans=1", "model.kwargs", "RGB"),
    ("model.kwargs.drop_rate={a: 1}", "model.kwargs", "must be a number"),
    ("augment.train=[{NoSuchTransform: {}}]", "augment.train", "not an albumentations transform"),
])
def test_values_the_schema_must_bound(tmp_path, monkeypatch, setting, field, fragment):
    def never(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", never)
    code, output = cli(tmp_path, "train", recipe(tmp_path, GOOD), "--set", setting)
    assert code == 2, output
    assert "r.yaml" in output and field in output and fragment in output, output
    assert not (tmp_path / "runs").exists()


def test_model_arguments_that_cannot_build_fail_before_the_run_folder(tmp_path):
    code, output = cli(tmp_path, "train", recipe(tmp_path, GOOD), "--set", "model.kwargs.widths=[1, -3]")
    assert code == 2 and "cannot be built with model.kwargs" in output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
