"""`zoo tune`: search spaces fail clearly, a tiny study writes the study, the tuned recipe and a
ranked run without decoding a test photo, Ctrl-C and kill -9 leave a study that resumes, and two
processes share one SQLite study."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers_eval import invoke

from zoo.console import Reporter
from zoo.errors import ZooError
from zoo.train.recipes import load_recipe

optuna = pytest.importorskip("optuna")

from zoo.tune.objective import worker_id  # noqa: E402
from zoo.tune.space import SearchSpace  # noqa: E402
from zoo.tune.storage import load_study  # noqa: E402
from zoo.tune.study import Search, TuneOptions, fail_abandoned, finish, run_trials  # noqa: E402

TINY = {"base": "custom_cnn", "model": {"kwargs": {"widths": [8, 16]}},
        "data": {"image_size": 32, "batch_size": 8}, "train": {"epochs": 1},
        "tune": {"train.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "data.batch_size": [4, 8],
                 # keys inherited from custom_cnn's space, dropped
                 "train.epochs": None, "train.weight_decay": None, "model.kwargs.drop_rate": None,
                 "train.label_smoothing": None}}


def tiny_recipe(folder: Path, name: str = "tiny", **train: object) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], **train}}))
    return str(path)


def space_error(tune: dict) -> str:
    recipe, _ = load_recipe("custom_cnn")
    with pytest.raises(ZooError) as info:
        SearchSpace.of(recipe.model_copy(update={"tune": tune}), "custom_cnn")
    return str(info.value)


@pytest.mark.parametrize("tune, expected", [
    ({"train.lrr": [1e-3]}, "unknown recipe key 'train.lrr'. Did you mean 'train.lr'?"),
    ({"train.lr": {"low": 1e-2, "high": 1e-3}}, "train.lr: empty range"),
    ({"train.epochs": {"low": 5, "high": 5}}, "train.epochs: empty range"),
    ({"data.batch_size": []}, "data.batch_size: no choices"),
    ({"data.batch_size": [16, [32]]}, "data.batch_size: choices must be"),
    ({"data.batch_size": [16, 16]}, "data.batch_size: a choice is listed twice"),
    ({"train.lr": {"low": 1e-3, "high": 20}}, "train.lr=20"),
    ({"train.lr": {"low": 0, "high": 1e-2, "log": True}}, "train.lr: a log range needs low > 0"),
    ({"train.epochs": {"low": 2.5, "high": 9}}, "train.epochs is a whole number"),
    ({"train.warmup.lr": {"low": 1e-3, "high": 1e-2}}, "no train.warmup section (it is null)"),
    ({"train.early_stopping": [1, 2]}, "train.early_stopping is a section"),
    ({"train.lr": 0.001}, "train.lr: expected a range"),
    ({"train.lr": None}, "has no search space"),
])
def test_bad_search_spaces_name_the_key(tune: dict, expected: str) -> None:
    assert expected in space_error(tune)


def test_space_samples_valid_recipes_and_starts_from_the_recipe() -> None:
    recipe, _ = load_recipe("custom_cnn")
    space = SearchSpace.of(recipe, "custom_cnn")
    assert {d.key for d in space.dims} >= {"train.lr", "data.batch_size", "model.kwargs.drop_rate"}
    assert space.baseline()["train.lr"] == recipe.train.lr
    trial = optuna.create_study().ask()
    sampled = space.recipe_for(space.sample(trial))
    assert sampled.train.lr == trial.params["train.lr"]
    assert isinstance(sampled.train.epochs, int)


def test_cli_refuses_a_bad_space_with_exit_2(zoo_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "tune": {"train.nope": {"low": 1, "high": 2}}}))
    result = invoke(["tune", str(path), "--quiet"])
    assert result.exit_code == 2 and "train.nope" in result.said


def test_missing_optuna_is_a_clear_exit_2(zoo_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    result = invoke(["tune", "custom_cnn"])
    assert result.exit_code == 2 and "pip install 'mineral-zoo[tune]'" in result.said


def test_tiny_study_never_decodes_test_photos_and_ranks_the_tuned_run(
        zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.data.cache import DecodeCache

    decoded: list[Path] = []
    real_get = DecodeCache.get
    monkeypatch.setattr(DecodeCache, "get", lambda self, file, sha, side: decoded.append(file) or real_get(
        self, file, sha, side))
    opts = TuneOptions(tiny_recipe(tmp_path), trials=3, folds=2)
    search = Search.open(opts)
    run_trials(search, Reporter(quiet=True), None)
    data = Path(os.environ["ZOO_DATA"])
    test_photos = {data / p for p in search.cv.split.paths("test")}
    assert decoded and not test_photos & set(decoded)

    result = finish(search, Reporter(quiet=True))
    study = load_study("tiny", opts.storage_url)
    assert (zoo_env / "tune.db").is_file() and len(study.trials) == 3
    assert all(len(t.user_attrs["folds"]) == 2 if t.state.name == "COMPLETE" else "pruned_at" in t.user_attrs
               for t in study.trials)
    assert result.recipe == zoo_env / "recipes" / "tiny-tuned.yaml"
    tuned, _ = load_recipe("tiny-tuned")  # found under ZOO_HOME/recipes
    assert tuned.train.lr == pytest.approx(result.best.params["train.lr"], rel=1e-3)
    meta = json.loads((result.run / "meta.json").read_text())
    assert meta["kind"] == "model" and meta["study"]["name"] == "tiny"
    assert meta["study"]["trial"] == result.best.number
    board = json.loads(invoke(["leaderboard", "--format", "json"]).stdout)
    assert [r["name"] for r in board] == [result.run.name]
    assert (result.run / "plots" / "tune_history.png").is_file()
    shown = invoke(["tune", "--show", "tiny"])
    assert shown.exit_code == 0 and f"best: trial {result.best.number}" in shown.said


def test_ctrl_c_stops_with_the_study_saved(zoo_env: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.train.trainer import Trainer

    calls = iter(range(100))
    real_fit = Trainer.fit

    def fit(self: Trainer, *args: object) -> list[dict]:
        if next(calls) == 1:
            raise KeyboardInterrupt
        return real_fit(self, *args)

    monkeypatch.setattr(Trainer, "fit", fit)
    result = invoke(["tune", tiny_recipe(tmp_path), "--trials", "3", "--folds", "1", "--quiet"])
    assert result.exit_code == 130 and "saved with 1 finished trials" in result.said
    states = [t.state for t in load_study("tiny", f"sqlite:///{zoo_env / 'tune.db'}").trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_trials_of_dead_processes_on_this_machine_are_failed(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for worker in (f"{worker_id().rpartition(':')[0]}:{dead.pid}", worker_id(), f"elsewhere:{dead.pid}"):
        study.ask().set_user_attr("worker", worker)
    assert fail_abandoned(study) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "RUNNING"]


def _wait_for(study_db: Path, ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll the study that ``proc`` writes until ``ready(trials)``."""
    deadline, study = time.time() + timeout, None
    while time.time() < deadline and proc.poll() is None:
        try:
            study = study or load_study("tiny", f"sqlite:///{study_db}")
            if ready(study.get_trials(deepcopy=False)):
                return
        except ZooError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"study never got ready: {proc.stdout.read().decode()[-2000:]}")


def test_killed_study_resumes_in_two_processes(zoo_env: Path, tmp_path: Path) -> None:
    """kill -9 mid-trial; the study continues with its finished trial kept, and `--jobs 2`
    runs the remaining trials in two processes sharing the SQLite study."""
    recipe = tiny_recipe(tmp_path, epochs=12, early_stopping={"patience": 100})
    args = ["tune", recipe, "--trials", "3", "--folds", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=os.environ.copy())

    def second_trial_running(trials: list) -> bool:
        last = trials[-1] if trials else None
        return bool(last and last.number == 1 and last.state.name == "RUNNING" and "worker" in last.user_attrs)

    _wait_for(zoo_env / "tune.db", second_trial_running, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = load_study("tiny", f"sqlite:///{zoo_env / 'tune.db'}").trials[0]

    result = invoke([*args, "--jobs", "2"])
    assert result.exit_code == 0, result.said
    trials = load_study("tiny", f"sqlite:///{zoo_env / 'tune.db'}").trials
    states = [t.state.name for t in trials]
    assert states[:2] == ["COMPLETE", "FAIL"] and {*states[2:]} <= {"COMPLETE", "PRUNED"} and len(states) == 4
    assert trials[0].value == first.value and trials[0].params == first.params
    assert len({trials[2].user_attrs["worker"], trials[3].user_attrs["worker"]}) == 2
