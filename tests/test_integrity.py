"""Integrity and safety: atomic writes that report failures, unfinished runs never ranked, a
leaderboard that survives concurrent writers and can be rebuilt, and checkpoints that are never
unpickled."""
from __future__ import annotations

import ast
import errno
import json
import multiprocessing
import os
import pickle
import re
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import make_dataset
from zoo.cli import app
from zoo.errors import ZooError
from zoo.fileio import atomic_path, write_json
from zoo.store import leaderboard as lb
from zoo.store.runs import load_predictions, load_weights, save_predictions
from zoo.train.recipes import dump_recipe, load_recipe

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "zoo").rglob("*.py")) + sorted((ROOT / "ensembles").rglob("*.py"))
PRE = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bicubic", "crop_pct": 0.875}


def fake_meta(name: str, status: str = "finished", val: float = 0.5, **extra) -> dict:
    return {"name": name, "kind": "model", "status": status, "model": "custom_cnn", "model_kwargs": {},
            "dataset": "photos", "split_id": "s1", "classes": ["a", "b", "c"], "preprocessing": PRE,
            "metrics": {"val": {"accuracy": val}, "test": {"accuracy": val - 0.1, "nll": 1.0, "ece": 0.1,
                                                           "macro_f1": 0.3, "balanced_accuracy": 0.4}},
            "params": 1000, "fit_seconds": 1.0, "infer_img_per_s": 100.0,
            "created": "2026-01-01T00:00:00+00:00", **extra}


def fake_run(home: Path, name: str, **kwargs) -> Path:
    write_json(home / name / "meta.json", fake_meta(name, **kwargs))
    return home / name


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"ZOO_HOME": str(home), "COLUMNS": "1000"})
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, " ".join(result.output.split())


# ---- unfinished runs ------------------------------------------------------------------------

def test_unfinished_runs_are_listed_only_with_all(tmp_path):
    home = tmp_path / "runs"
    fake_run(home, "done", val=0.6)
    fake_run(home, "halfway", status="running", val=0.9)
    fake_run(home, "stopped", status="interrupted", val=0.95)
    code, stdout, _ = cli(home, "leaderboard", "--rebuild", "--format", "json")
    assert code == 0 and [r["name"] for r in json.loads(stdout)] == ["done"]
    code, stdout, _ = cli(home, "leaderboard", "--all", "--format", "json")
    assert {r["name"]: r["status"] for r in json.loads(stdout)} == {
        "done": "finished", "halfway": "running", "stopped": "interrupted"}
    assert lb.best_run(home) == "done"


# ---- the SQLite leaderboard -----------------------------------------------------------------

def _writer(home: str, worker: int, start) -> None:
    start.wait()
    for i in range(50):
        lb.record(fake_meta(f"w{worker}-{i:02d}", val=i / 100), Path(home))


def test_two_processes_writing_at_once_lose_no_rows(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, start)) for w in range(2)]
    for p in procs:
        p.start()
    start.set()  # both begin on a database that does not exist yet
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    names = {r["name"] for r in lb.rows(tmp_path)}
    assert names == {f"w{w}-{i:02d}" for w in range(2) for i in range(50)}


def test_a_leaderboard_locked_too_long_is_a_clear_error(tmp_path, monkeypatch):
    lb.record(fake_meta("first"), tmp_path)
    real_connect = sqlite3.connect
    monkeypatch.setattr(lb.sqlite3, "connect", lambda path, timeout: real_connect(path, timeout=0.2))
    holder = real_connect(lb.db_path(tmp_path))
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ZooError, match=r"leaderboard .*locked.*--rebuild"):
            lb.record(fake_meta("second"), tmp_path)
    finally:
        holder.rollback()
        holder.close()
    assert [r["name"] for r in lb.rows(tmp_path)] == ["first"]


def test_rebuild_after_deleting_the_database_gives_the_same_rows(tmp_path):
    home = tmp_path / "runs"
    metas = [fake_meta(name, val=0.3 + i / 10) for i, name in enumerate("abc")] + [
        fake_meta("ens", val=0.9, kind="ensemble", members=["a", "b"], model="soft ensemble"),
        fake_meta("r", status="running")]
    for meta in metas:
        write_json(home / meta["name"] / "meta.json", meta)
        lb.record(meta, home)
    before = cli(home, "leaderboard", "--all", "--format", "json")[1]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{lb.db_path(home)}{suffix}").unlink(missing_ok=True)
    code, after, output = cli(home, "leaderboard", "--rebuild", "--all", "--format", "json")
    assert code == 0 and "rebuilt 5 rows" in output
    assert json.loads(after) == json.loads(before) and len(json.loads(after)) == 5


def test_rebuild_names_rows_after_folders_and_skips_damaged_ones(tmp_path):
    home = tmp_path / "runs"
    fake_run(home, "good")
    write_json(home / "renamed" / "meta.json", fake_meta("original-name"))
    (home / "broken").mkdir()
    (home / "broken" / "meta.json").write_text('{"name": "broken", "status": ')
    code, stdout, output = cli(home, "leaderboard", "--rebuild", "--format", "json")
    assert code == 0 and "broken" in output and "damaged" in output
    assert sorted(r["name"] for r in json.loads(stdout)) == ["good", "renamed"]


# ---- atomic writes ----------------------------------------------------------------------------

def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_rename_is_reported_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    write_json(target, {"version": 1})

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(ZooError, match=r"Writing .*meta.json failed: No space left on device.*untouched"):
        write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1} and _leftovers(tmp_path) == []


def test_failed_write_is_reported_and_keeps_the_old_file(tmp_path, monkeypatch):
    ids, labels, probs = ["x", "y"], np.array([0, 1]), np.eye(2, dtype=np.float32)
    save_predictions(tmp_path, "val", ids, labels, probs)
    before = (tmp_path / "predictions" / "val.npz").read_bytes()

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(ZooError, match="No space left on device"):
        save_predictions(tmp_path, "val", ids, labels, probs[::-1])
    assert (tmp_path / "predictions" / "val.npz").read_bytes() == before
    assert _leftovers(tmp_path / "predictions") == []


def test_unwritable_target_folder_is_reported(tmp_path):
    (tmp_path / "runs").write_text("a file where the run root should be")
    with pytest.raises(ZooError, match=r"Cannot write .*runs is a file, not a folder"):
        write_json(tmp_path / "runs" / "x" / "meta.json", {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_reported(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(ZooError, match="Permission denied"):
        write_json(folder / "meta.json", {})


def test_other_errors_propagate_and_leave_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "meta.json", {"not json": object()})
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644


WRITERS = {"write_text", "write_bytes", "save_file", "savez", "savez_compressed", "save", "savefig"}
NOT_RUN_FILES = {  # (file, function): why a direct write is fine there
    ("plots.py", "_save"): "figures are regenerated from history.csv and predictions",
    ("__init__.py", "_log_traceback"): "the crash log, outside any run",
    ("export.py", "_export_onnx"): "writes the temporary path that atomic_path gives export_run",
    ("export.py", "_export_torchscript"): "writes the temporary path that atomic_path gives export_run",
    ("heatmaps.py", "png_bytes"): "encodes into memory; write_heatmaps writes it through atomic_path",
    ("tflite.py", "write_metadata"): "rewrites the temporary path that atomic_path gives export_run "
                                     "and quantize_export",
    ("quantize.py", "quantize_onnx"): "writes the temporary path that atomic_path gives quantize_export",
    ("webapp.py", "_build"): "fills a temporary folder that export_web renames into place",
    ("webapp.py", "_copy_checked"): "fills a temporary folder that export_web renames into place",
}


def _direct_writers() -> set[tuple[str, str]]:
    found = set()
    for file in SOURCES:
        text = file.read_text()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, ast.FunctionDef):
                continue
            nodes = [c for c in ast.walk(fn) if isinstance(c, ast.Call)]
            calls = {c.func.attr for c in nodes if isinstance(c.func, ast.Attribute)}
            opens = [c for c in nodes if getattr(c.func, "id", "") == "open" and len(c.args) > 1
                     and re.search("[wax]", getattr(c.args[1], "value", ""))]
            body = ast.get_source_segment(text, fn)
            if (calls & WRITERS or opens) and "atomic_path" not in body:
                found.add((file.name, fn.name))
    return found


def test_every_run_file_is_written_atomically():
    assert _direct_writers() <= set(NOT_RUN_FILES), _direct_writers() - set(NOT_RUN_FILES)


# ---- safety: nothing is ever unpickled --------------------------------------------------------

class Payload:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def evil_run(home: Path, marker: Path, status: str = "finished") -> Path:
    run = fake_run(home, "evil", status=status)
    payload = pickle.dumps(Payload(marker))
    for name in ("model.safetensors", "model.pt", "model.pkl", "model.pth", "checkpoint.bin"):
        (run / name).write_bytes(payload)
    recipe, _ = load_recipe("custom_cnn", ["data.image_size=32", "train.epochs=2"])
    (run / "config.yaml").write_text(dump_recipe(recipe))  # so --resume gets to the state file
    (run / "resume").mkdir()
    (run / "resume" / "state.safetensors").write_bytes(payload)
    (run / "predictions").mkdir()
    for split in ("val", "test"):
        np.savez(run / "predictions" / f"{split}.npz", ids=np.array([Payload(marker)], dtype=object),
                 labels=np.array([0]), probs=np.ones((1, 3), dtype=np.float32) / 3)
    return run


def test_payload_is_live(tmp_path):
    pickle.loads(pickle.dumps(Payload(tmp_path / "proof")))
    assert (tmp_path / "proof").is_dir()


def test_fake_safetensors_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"
    run = evil_run(tmp_path / "runs", marker)
    with pytest.raises(ZooError, match="not a readable safetensors file.*never loads pickled"):
        load_weights(run / "model.safetensors")
    with pytest.raises(ZooError, match="predictions"):
        load_predictions(run, "val")
    assert not marker.exists()


def test_load_predictor_refuses_fake_checkpoint(tmp_path):
    from zoo.evaluate.predictor import load_predictor

    marker = tmp_path / "PWNED"
    evil_run(tmp_path / "runs", marker)
    with pytest.raises(ZooError, match="model.safetensors"):
        load_predictor("evil", tmp_path / "runs")
    assert not marker.exists()


@pytest.mark.parametrize("args", [
    ["predict", "evil", "PHOTO"], ["evaluate", "evil"], ["export", "evil"],
    ["ensemble", "--members", "evil,twin"], ["leaderboard", "--rebuild", "--all"],
    ["train", "custom_cnn", "--resume", "evil"],
])
def test_cli_never_unpickles_run_files(tmp_path, args):
    marker = tmp_path / "PWNED"
    home = tmp_path / "runs"
    evil_run(home, marker, status="interrupted" if "--resume" in args else "finished")
    fake_run(home, "twin")
    save_predictions(home / "twin", "val", ["x"], np.array([0]), np.ones((1, 3), np.float32) / 3)
    photo = make_dataset(tmp_path / "photos", per_class=1) / "pyrite" / "000.png"
    result = CliRunner().invoke(app, [str(photo) if a == "PHOTO" else a for a in args],
                                env={"ZOO_HOME": str(home), "ZOO_DATA": str(tmp_path / "photos"),
                                     "ZOO_SPLITS_DIR": str(tmp_path / "splits"), "COLUMNS": "1000"})
    assert not marker.exists()
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if args[0] != "leaderboard":
        assert result.exit_code == 2, result.output


def test_no_code_path_can_unpickle():
    for file in SOURCES:
        text = file.read_text()
        unpickling = r"\bimport pickle\b|\bpickle\.loads?\(|torch\.load\(|joblib|allow_pickle\s*=\s*True"
        assert not re.search(unpickling, text), file
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{file}: {call}"
