"""`zoo soup`: weight averages of tiny runs trained here. A soup of one run is that run; a uniform
soup of two is their element-wise mean; greedy never keeps an ingredient that makes the soup worse
on validation; refusals are clear; an interrupted soup leaves no run and re-running completes it;
the soup is a run like any other (evaluate, predict, ensemble)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers_cli import private_zoo, zoo
from zoo.cli import app
from zoo.models.factory import build_model
from zoo.store.leaderboard import rows
from zoo.store.runs import load_predictions, load_weights, save_weights
from zoo.train.soup import Ingredient, build_soup, greedy_state

TINY = ["--set", "data.image_size=32", "--set", "train.epochs=2", "--set", "data.batch_size=8",
        "--set", "model.kwargs.widths=[8,16]", "--quiet"]


def _copy(home: Path, src: str, dst: str, **meta_over) -> Path:
    """A copy of run ``src`` named ``dst``, with meta.json fields replaced."""
    shutil.copytree(home / src, home / dst)
    meta = json.loads((home / dst / "meta.json").read_text())
    (home / dst / "meta.json").write_text(json.dumps({**meta, "name": dst, **meta_over}))
    return home / dst


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A private zoo with tiny custom_cnn runs ``a`` and ``b`` (seeds 0 and 1) trained here."""
    with private_zoo(tmp_path_factory.mktemp("soup"), TINY, {"a": 0, "b": 1}) as runs:
        yield runs


def _names(home: Path) -> set[str]:
    return {r["name"] for r in rows(home, include_unfinished=True)}


def test_a_uniform_soup_of_one_run_is_that_run(home: Path) -> None:
    path = build_soup(["a"], "uniform", "one", home, min_ingredients=1)
    soup, run = load_weights(path / "model.safetensors"), load_weights(home / "a" / "model.safetensors")
    assert soup.keys() == run.keys()
    for key in run:
        assert torch.equal(soup[key], run[key]), key
    for split in ("val", "test"):
        mine, theirs = load_predictions(path, split), load_predictions(home / "a", split)
        np.testing.assert_array_equal(mine["ids"], theirs["ids"])
        np.testing.assert_array_equal(mine["probs_uncalibrated"], theirs["probs_uncalibrated"])
        np.testing.assert_array_equal(mine["probs"], theirs["probs"])
    meta, original = (json.loads((p / "meta.json").read_text()) for p in (path, home / "a"))
    assert meta["calibration"] == original["calibration"] and meta["trust"] == original["trust"]
    assert meta["metrics"]["test"] == original["metrics"]["test"]
    assert meta["kind"] == "model"
    assert meta["soup"] == {"method": "uniform", "ingredients": ["a"], "kept": ["a"]}


def test_a_uniform_soup_of_two_runs_is_their_mean_and_is_ranked(home: Path) -> None:
    code, said = zoo("soup", "a", "b")
    assert code == 0, said
    assert "soup-custom_cnn-1: uniform soup of a, b" in said and "test_acc" in said
    assert "random initialisation" in said  # these tiny runs were not fine-tuned from one start
    a, b = (load_weights(home / r / "model.safetensors") for r in ("a", "b"))
    soup = load_weights(home / "soup-custom_cnn-1" / "model.safetensors")
    for key, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2, msg=key)
        else:  # num_batches_tracked: the first ingredient's
            assert torch.equal(value, a[key]), key
    assert any(not v.is_floating_point() for v in soup.values())
    assert not torch.equal(soup["stem.0.0.weight"], a["stem.0.0.weight"])
    board = json.loads(CliRunner().invoke(app, ["leaderboard", "--format", "json"]).stdout)
    row = next(r for r in board if r["name"] == "soup-custom_cnn-1")
    assert row["kind"] == "model" and row["model"] == "custom_cnn" and row["members"] == "a,b"
    meta = json.loads((home / "soup-custom_cnn-1" / "meta.json").read_text())
    assert meta["status"] == "finished" and set(meta["metrics"]) == {"val", "test"}
    assert meta["soup"]["method"] == "uniform" and meta["soup"]["kept"] == ["a", "b"]
    assert (home / "soup-custom_cnn-1" / "config.yaml").is_file()
    assert not [p.name for p in home.iterdir() if p.name.endswith(".partial")]


class _Fake(Ingredient):
    """An ingredient whose checkpoint is one number."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__(name, Path(name), {})
        self.value = value

    def weights(self) -> dict[str, torch.Tensor]:
        return {"w": torch.tensor([self.value], dtype=torch.float32),
                "num_batches_tracked": torch.tensor(len(self.name))}


class _Scores:
    """Validation scores (right answers of 10, NLL) handed out in turn; records the soup's weight
    each time it is asked."""

    n = 10

    def __init__(self, scores: list[tuple[int, float]]) -> None:
        self.scores, self.seen = iter(scores), []

    def __call__(self, state: dict[str, torch.Tensor]) -> tuple[int, float]:
        self.seen.append(round(float(state["w"]), 4))
        return next(self.scores)


def test_greedy_keeps_an_ingredient_only_when_the_soup_does_not_get_worse() -> None:
    ingredients = [_Fake("best", 4.0), _Fake("helps", 2.0), _Fake("hurts", -9.0),
                   _Fake("same_acc_lower_nll", 3.0), _Fake("same_acc_higher_nll", 7.0),
                   _Fake("no_change", 3.0)]
    score = _Scores([(7, 0.50),   # best alone
                     (8, 0.60),   # + helps: accuracy up (NLL up too): kept
                     (6, 0.10),   # + hurts: accuracy down (NLL down): left out
                     (8, 0.55),   # + same_acc_lower_nll: kept
                     (8, 0.70),   # + same_acc_higher_nll: left out
                     (8, 0.55)])  # + no_change: accuracy and NLL unchanged: kept
    state, steps = greedy_state(ingredients, score)
    assert [s["run"] for s in steps if s["kept"]] == ["best", "helps", "same_acc_lower_nll", "no_change"]
    # the candidate soups scored: the mean of the kept weights and the next ingredient's
    assert score.seen == [4.0, 3.0, round((4 + 2 - 9) / 3, 4), 3.0, 4.0, 3.0]
    assert float(state["w"]) == pytest.approx((4 + 2 + 3 + 3) / 4)
    assert int(state["num_batches_tracked"]) == len("best")  # integer buffers: the first's
    assert [s["val_accuracy"] for s in steps] == [0.7, 0.8, 0.6, 0.8, 0.8, 0.8]
    kept = [s for s in steps if s["kept"]]
    for before, after in zip(kept, kept[1:]):  # the soup never got worse on validation
        assert (after["val_accuracy"], -after["val_nll"]) >= (before["val_accuracy"], -before["val_nll"])


def test_greedy_soup_leaves_out_a_damaged_ingredient(home: Path) -> None:
    noisy = _copy(home, "b", "noisy", metrics={**json.loads((home / "b" / "meta.json").read_text())[
        "metrics"], "val": {"accuracy": 0.0, "nll": 9.0}})
    torch.manual_seed(7)
    model = build_model("custom_cnn", 3, drop_rate=0.3, widths=[8, 16])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0).add_(torch.randn_like(p) * 50)
    save_weights(noisy / "model.safetensors", model)
    try:
        code, said = zoo("soup", "noisy", "a", "b", "--method", "greedy", "--name", "greedy")
        assert code == 0, said
        meta = json.loads((home / "greedy" / "meta.json").read_text())
        steps = meta["soup"]["steps"]
        assert meta["soup"]["ingredients"][-1] == "noisy"  # sorted by stored validation accuracy
        assert "noisy" not in meta["soup"]["kept"] and "left out" in said
        assert meta["members"] == meta["soup"]["kept"]
        best = steps[0]["val_accuracy"]
        assert meta["metrics"]["val"]["accuracy"] >= best
        kept = [s for s in steps if s["kept"]]
        assert kept[-1]["val_accuracy"] == pytest.approx(meta["metrics"]["val"]["accuracy"])
    finally:
        shutil.rmtree(noisy)


@pytest.mark.parametrize("case, args, words", [
    ("one run", ["a"], "at least 2 runs"),
    ("twice", ["a", "a"], "more than once"),
    ("missing", ["a", "nope"], "No run named 'nope'"),
    ("ensemble", ["a", "ens"], "'ens' is an ensemble"),
    ("other model", ["a", "other_model"], "'other_model' is a resnet18 but 'a' is a custom_cnn"),
    ("other architecture", ["a", "wider"], "different architectures cannot be averaged"),
    ("other classes", ["a", "shuffled"], "must be trained on the same classes"),
    ("other image size", ["a", "bigger"], "must share the image size"),
    ("other split", ["a", "elsewhere"], "must share a split"),
    ("unfinished", ["a", "halted"], "did not finish training"),
    ("bad method", ["a", "b", "--method", "mean"], "Unknown soup method 'mean'"),
])
def test_refusals_exit_non_zero_with_a_clear_message(home: Path, case: str, args: list[str],
                                                     words: str) -> None:
    meta = json.loads((home / "a" / "meta.json").read_text())
    fakes = {"other_model": {"model": "resnet18"},
             "wider": {"model_kwargs": {"drop_rate": 0.3, "widths": [8, 32]}},
             "shuffled": {"classes": meta["classes"][::-1]},
             "bigger": {"preprocessing": {**meta["preprocessing"], "image_size": 64}},
             "elsewhere": {"split_id": "another-split"},
             "halted": {"status": "interrupted"}}
    if "ens" in args:
        assert zoo("ensemble", "--members", "a,b", "--name", "ens")[0] == 0
    made = [_copy(home, "a", fake, **fakes[fake]) for fake in args if fake in fakes]
    before = {p.name for p in home.iterdir()}
    try:
        code, said = zoo("soup", *args, "--name", "refused")
        assert code == 2, said
        assert words in said, said
        assert {p.name for p in home.iterdir()} == before  # nothing written
    finally:
        for path in made:
            shutil.rmtree(path)
        if "ens" in args:
            shutil.rmtree(home / "ens")


@pytest.mark.parametrize("where", ["zoo.train.run.save_weights", "zoo.train.soup.record"])
def test_an_interrupted_soup_leaves_no_run_and_running_it_again_completes(
        home: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    module, name = where.rsplit(".", 1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(f"{module}.{name}", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build_soup(["a", "b"], "uniform", "again", home)
    assert not (home / "again").exists() and "again" not in _names(home)
    assert not [p.name for p in home.iterdir() if p.name.startswith(".again")]  # no temporary folder

    build_soup(["a", "b"], "uniform", "again", home)
    reference = build_soup(["a", "b"], "uniform", None, home)  # uninterrupted
    try:
        mine, theirs = (load_weights(p / "model.safetensors") for p in (home / "again", reference))
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
        for split in ("val", "test"):
            np.testing.assert_array_equal(load_predictions(home / "again", split)["probs"],
                                          load_predictions(reference, split)["probs"])
        assert "again" in _names(home)
    finally:
        for path in (home / "again", reference):
            shutil.rmtree(path)
        from zoo.store.leaderboard import rebuild
        rebuild(home)


def test_a_soup_is_a_run_like_any_other(home: Path) -> None:
    path = build_soup(["a", "b"], "uniform", "usable", home)
    code, said = zoo("evaluate", "usable")
    assert code == 0 and "accuracy" in said.lower(), said
    photo = next((Path(json.loads((path / "meta.json").read_text())["data_root"]) / "pyrite").iterdir())
    result = CliRunner().invoke(app, ["predict", "usable", str(photo), "--format", "json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)[0]
    assert answer["predictions"] and answer["status"] in ("confident", "unsure", "unknown")
    code, said = zoo("report", "usable")
    assert code == 0 and (path / "report.html").is_file(), said
    assert "uniform soup of a, b" in (path / "report.html").read_text()
    code, said = zoo("ensemble", "--members", "usable,a", "--name", "soup-and-a")
    assert code == 0, said


def test_a_soup_of_fp16_runs_is_scored_in_fp32_off_cuda() -> None:
    from zoo.train.recipes import Recipe
    from zoo.train.soup import _runtime

    recipe = Recipe.model_validate({"model": {"name": "custom_cnn", "pretrained": False},
                                    "train": {"precision": "16-mixed"}})
    runtime = _runtime("cpu", recipe)
    assert (runtime.device.type, runtime.precision) == ("cpu", "32")
    recipe = Recipe.model_validate({"model": {"name": "custom_cnn", "pretrained": False},
                                    "train": {"precision": "bf16"}})
    assert _runtime("cpu", recipe).precision == "bf16"
