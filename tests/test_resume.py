"""Interrupted trainings: kill -9 loses at most the current epoch, and --resume ends exactly
where an uninterrupted run with the same seed ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from zoo.cli import app
from zoo.errors import ZooError
from zoo.store.runs import load_predictions
from zoo.train.resume import load_state

TRAIN = ["train", "custom_cnn", "--quiet", "--set", "data.image_size=32", "--set", "data.batch_size=4",
         "--set", "train.epochs=12", "--set", "train.early_stopping.patience=50"]


def _zoo(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=os.environ.copy())


def _wait_for_epoch(run: Path, epoch: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if load_state(run).epoch >= epoch:
                return
        except ZooError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"run never reached epoch {epoch}: {proc.stdout.read().decode()[-2000:]}")


def test_kill9_then_resume_matches_uninterrupted_run(zoo_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, [*TRAIN, "--name", "straight"]).exit_code == 0

    proc = _zoo(*TRAIN, "--name", "killed")
    _wait_for_epoch(zoo_env / "killed", 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = json.loads((zoo_env / "killed" / "meta.json").read_text())
    assert meta["status"] == "running"  # never ranked as finished
    board = runner.invoke(app, ["leaderboard", "--format", "json"])
    assert [r["name"] for r in json.loads(board.stdout)] == ["straight"]

    resumed = runner.invoke(app, ["train", "custom_cnn", "--resume", "killed", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    a, b = load_predictions(zoo_env / "straight", "test"), load_predictions(zoo_env / "killed", "test")
    np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-5)
    assert not (zoo_env / "killed" / "resume").exists()
    history = (zoo_env / "killed" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 12


def test_resume_refuses_finished_runs_and_overrides(zoo_env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, [*TRAIN[:-6], "--set", "train.epochs=1", "--name", "done"]).exit_code == 0
    result = runner.invoke(app, ["train", "custom_cnn", "--resume", "done"])
    assert result.exit_code == 2 and "already finished" in result.output
    result = runner.invoke(app, ["train", "custom_cnn", "--resume", "done", "--set", "train.lr=1"])
    assert result.exit_code == 2 and "drop --set" in result.output


def test_same_seed_same_data_gives_same_metrics(zoo_env: Path) -> None:
    runner = CliRunner()
    short = [*TRAIN[:-6], "--set", "train.epochs=2"]
    for name in ("a", "b"):
        assert runner.invoke(app, [*short, "--name", name]).exit_code == 0
    a, b = load_predictions(zoo_env / "a", "test"), load_predictions(zoo_env / "b", "test")
    np.testing.assert_array_equal(a["probs"], b["probs"])
    meta_a = json.loads((zoo_env / "a" / "meta.json").read_text())
    meta_b = json.loads((zoo_env / "b" / "meta.json").read_text())
    assert meta_a["metrics"] == meta_b["metrics"] and meta_a["seed"] == 0
