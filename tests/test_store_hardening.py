"""The store under concurrent or careless use: run folders created atomically, names the store
keeps for itself, a leaderboard rebuilt in one transaction from schema-checked run folders, an
older leaderboard upgraded, unfinished runs listed from their start, checkpoints readable by all."""
from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_integrity import fake_meta, fake_run
from zoo.cli import app
from zoo.errors import ZooError
from zoo.fileio import write_json
from zoo.models.factory import build_model
from zoo.store import leaderboard as lb
from zoo.store.runs import new_run, save_weights

TINY_SETS = ["--set", "data.image_size=32", "--set", "train.epochs=1", "--set", "data.batch_size=8",
             "--set", "model.kwargs.widths=[8,16]", "--quiet"]


def cli(home: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"ZOO_HOME": str(home), "COLUMNS": "1000", **env})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, " ".join(result.output.split())


# ---- 1. run folders are claimed atomically ------------------------------------------------------

def _claim_runs(home: str, name: str | None, count: int, start, out) -> None:
    start.wait()
    for _ in range(count):
        try:
            with new_run(Path(home), name, "custom_cnn") as path:
                out.put(path.name)
        except ZooError as exc:
            out.put(f"refused: {exc}")


def _race(home: Path, name: str | None, workers: int, count: int) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim_runs, args=(str(home), name, count, start, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    start.set()
    got = [out.get(timeout=60) for _ in range(workers * count)]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * workers
    return got


def test_trainings_started_together_never_share_a_run_folder(tmp_path):
    names = _race(tmp_path, None, workers=4, count=10)
    assert sorted(names) == sorted(f"custom_cnn-{n}" for n in range(1, 41))


def test_the_same_explicit_name_goes_to_exactly_one_training(tmp_path):
    got = _race(tmp_path, "mine", workers=4, count=1)
    assert got.count("mine") == 1
    assert sum("A run named 'mine' already exists" in g for g in got) == 3


def test_a_failed_start_leaves_no_run_folder(tmp_path):
    with pytest.raises(RuntimeError), new_run(tmp_path, None, "custom_cnn") as path:
        (path / "config.yaml").write_text("half")
        raise RuntimeError("disk gone")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["zoo.db", "zoo.db-wal", "zoo.db-shm", "ZOO.DB-journal", "tune.db",
                                  "tune.db-wal", "cache", ".cache"])
@pytest.mark.parametrize("command", [["train", "custom_cnn"], ["ensemble", "--members", "a,b"]])
def test_the_store_s_own_file_names_are_no_run_names(tmp_path, name, command):
    code, _, output = cli(tmp_path, *command, "--name", name)
    assert code == 2 and "Invalid run name" in output, output
    assert not (tmp_path / name).exists()


# ---- 2. rebuild: one transaction, schema-checked meta.json --------------------------------------

def test_rebuild_skips_and_names_a_meta_json_of_the_wrong_shape(tmp_path):
    fake_run(tmp_path, "good")
    write_json(tmp_path / "bad" / "meta.json", {**fake_meta("bad"), "metrics": []})
    write_json(tmp_path / "odd" / "meta.json", {**fake_meta("odd"), "classes": "abc", "params": -5})
    code, stdout, output = cli(tmp_path, "leaderboard", "--rebuild", "--format", "json")
    assert code == 0 and [r["name"] for r in json.loads(stdout)] == ["good"]
    assert f"{tmp_path / 'bad' / 'meta.json'} is damaged: metrics" in output
    assert "odd" in output and "classes" in output and "params" in output
    assert "rebuilt 1 rows" in output


def test_rebuild_that_fails_halfway_keeps_the_old_rows(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        fake_run(tmp_path, name)
        lb.record(fake_meta(name), tmp_path)
    fake_run(tmp_path, "d")
    real_put = lb._put

    def flaky(con, table, row):
        if row["name"] == "c":
            raise sqlite3.OperationalError("disk I/O error")
        real_put(con, table, row)

    monkeypatch.setattr(lb, "_put", flaky)
    code, _, output = cli(tmp_path, "leaderboard", "--rebuild")
    assert code == 2 and "disk I/O error" in output and "unchanged" in output
    assert sorted(r["name"] for r in lb.rows(tmp_path)) == ["a", "b", "c"]


def test_a_damaged_stored_evaluation_is_listed_not_fatal(tmp_path):
    run = fake_run(tmp_path, "good")
    write_json(run / "evaluations" / "museum.json", {"run": "good", "on": "museum", "metrics": {}})
    code, stdout, output = cli(tmp_path, "leaderboard", "--rebuild", "--format", "json")
    assert code == 0 and "museum.json is damaged" in output and len(json.loads(stdout)) == 1


# ---- 7. a versioned leaderboard; unfinished runs listed from their start -------------------------

OLD_COLUMNS = "name TEXT PRIMARY KEY, kind TEXT, model TEXT, test_accuracy REAL, val_accuracy REAL"


@pytest.mark.parametrize("command", [["leaderboard"], ["leaderboard", "--rebuild"]])
def test_a_leaderboard_from_an_older_zoo_is_rebuilt_saying_so(tmp_path, command):
    fake_run(tmp_path, "kept", val=0.7)
    with sqlite3.connect(lb.db_path(tmp_path)) as con:
        con.execute(f"CREATE TABLE runs ({OLD_COLUMNS})")
        con.execute("INSERT INTO runs VALUES ('kept', 'model', 'custom_cnn', 0.6, 0.7)")
    con.close()
    code, stdout, output = cli(tmp_path, *command, "--format", "json")
    assert code == 0, output
    assert "came from an older mineral-zoo; rebuilt it from the run folders (1 rows)" in output
    assert [r["name"] for r in json.loads(stdout)] == ["kept"]
    assert lb.best_run(tmp_path) == "kept"  # what `zoo serve` asks first
    assert cli(tmp_path, "leaderboard")[0] == 0 and "older" not in cli(tmp_path, "leaderboard")[2]


def test_a_leaderboard_from_a_newer_zoo_is_refused_not_changed(tmp_path):
    with sqlite3.connect(lb.db_path(tmp_path)) as con:
        con.execute("PRAGMA user_version = 99")
    con.close()
    code, _, output = cli(tmp_path, "leaderboard")
    assert code == 2 and "newer mineral-zoo (schema 99" in output


def test_unfinished_runs_are_listed_below_finished_ones(tmp_path):
    for meta in (fake_meta("done", val=0.5), fake_meta("stopped", status="interrupted", val=0.99)):
        lb.record(meta, tmp_path)
    board = json.loads(cli(tmp_path, "leaderboard", "--all", "--format", "json")[1])
    assert [r["name"] for r in board] == ["done", "stopped"]


def test_a_training_is_on_the_board_from_its_start_and_when_interrupted(zoo_env, monkeypatch):
    from zoo.train import trainer

    seen = {}

    def interrupted_fit(self, pretrained, state=None):
        seen["running"] = {r["name"]: r["status"] for r in lb.rows(zoo_env, include_unfinished=True)}
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "fit", interrupted_fit)
    result = CliRunner().invoke(app, ["train", "custom_cnn", *TINY_SETS, "--name", "halted"])
    assert result.exit_code == 130 and "--resume halted" in " ".join(result.output.split())
    assert seen["running"] == {"halted": "running"}
    board = json.loads(CliRunner().invoke(app, ["leaderboard", "--all", "--format", "json"]).stdout)
    assert [(r["name"], r["status"]) for r in board] == [("halted", "interrupted")]
    assert json.loads(CliRunner().invoke(app, ["leaderboard", "--format", "json"]).stdout) == []


def test_a_start_that_cannot_reach_the_leaderboard_leaves_no_run_folder(zoo_env, monkeypatch):
    from zoo.train import run

    def locked(meta, home=None):
        raise ZooError("Could not add it to the leaderboard: database is locked.")

    monkeypatch.setattr(run, "record", locked)
    result = CliRunner().invoke(app, ["train", "custom_cnn", *TINY_SETS])
    assert result.exit_code == 2 and "locked" in result.output
    assert [p.name for p in zoo_env.iterdir() if not p.name.startswith(".")] == []


# ---- 8. checkpoints readable like every other run file ------------------------------------------

def test_checkpoints_get_the_same_permissions_as_other_run_files(tmp_path):
    old = os.umask(0o022)
    try:
        save_weights(tmp_path / "model.safetensors", build_model("custom_cnn", 3, widths=[4, 8]))
        write_json(tmp_path / "meta.json", {})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"model.safetensors": 0o644, "meta.json": 0o644}
