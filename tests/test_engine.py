"""The engine on the CPU: devices, precision, and data-parallel training in 2 processes (gloo)
on real photos at 32 px. One 2-process run loses a rank to SIGKILL after its first checkpoint,
then ``--resume`` finishes it: the launcher names the run and how to resume, nothing is left
half-written, and the finished run has one folder, one leaderboard row, the same weights on
both ranks, and metrics that agree with the validation logits the ranks gathered."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from zoo.cli import app
from zoo.data.preprocessing import Preprocessing
from zoo.errors import ZooError
from zoo.evaluate.metrics import classification_metrics
from zoo.models.runtime import Runtime
from zoo.store.leaderboard import rows
from zoo.store.runs import load_predictions, read_meta
from zoo.train.batches import PhotoBatches, SplitArrays
from zoo.train.distributed import DIGEST_DIR_ENV, Cluster
from zoo.train.recipes import load_recipe
from zoo.train.resume import load_state

SMALL = ["--set", "data.image_size=32", "--set", "data.batch_size=8", "--set", "model.kwargs.widths=[8,16]",
         "--set", "train.epochs=8", "--set", "train.early_stopping.patience=8", "--quiet"]
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def _said(result) -> str:  # noqa: ANN001
    return " ".join(result.output.split())


# ---- devices and precision --------------------------------------------------------------------
@NO_GPU
@pytest.mark.parametrize("args", [["train", "custom_cnn"], ["train", "custom_cnn", "--devices", "2"],
                                  ["predict", "some-run", "photo.jpg"], ["evaluate", "some-run"],
                                  ["export", "some-run"]])
def test_missing_device_exits_2_naming_what_this_machine_has(args: list[str], zoo_env: Path) -> None:
    result = CliRunner().invoke(app, [*args, "--device", "cuda"])
    assert result.exit_code == 2, result.output
    assert "not available here; this machine has: cpu" in _said(result)
    assert not zoo_env.exists()  # refused before anything was written


def test_precision_fp16_needs_cuda_and_bf16_autocasts_on_cpu() -> None:
    with pytest.raises(ZooError, match="needs a CUDA GPU"):
        Runtime.create("cpu", "16-mixed")
    runtime = Runtime.create("cpu", "bf16")
    with runtime.autocast():
        assert torch.ones(2, 2).mm(torch.ones(2, 2)).dtype == torch.bfloat16
    assert not runtime.grad_scaler().is_enabled()
    assert Runtime.create("cpu").describe()["precision"] == "32"


def test_bf16_recipe_flag_is_a_deprecated_alias_and_built_in_recipes_use_precision() -> None:
    with pytest.warns(FutureWarning, match="train.precision"):
        recipe, _ = load_recipe("custom_cnn", ["train.bf16=true"])
    assert recipe.train.precision == "bf16"
    assert load_recipe("custom_cnn", ["train.precision=32"])[0].train.precision == "32"
    assert load_recipe("resnet50")[0].train.precision == "bf16"
    with pytest.raises(ZooError, match="contradicts precision"):
        load_recipe("custom_cnn", ["train.bf16=true", "train.precision=16-mixed"])


def test_ranks_get_equal_training_shares_and_contiguous_validation_blocks() -> None:
    part = SplitArrays([f"p{i}" for i in range(11)], [np.zeros((20, 20, 3), np.uint8)] * 11, np.arange(11))
    recipe, _ = load_recipe("custom_cnn", ["data.batch_size=4"])
    pre = Preprocessing(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    shares = [PhotoBatches(part, pre, recipe, rank, 2) for rank in range(2)]
    orders = [[int(y) for _, ys in share.train_batches(0) for y in ys] for share in shares]
    assert len(orders[0]) == len(orders[1]) == 6 and set(orders[0] + orders[1]) == set(range(11))
    assert len(shares[1]) == 2
    blocks = [Cluster(r, 3).shard(part).paths for r in range(3)]
    assert sum(blocks, []) == part.paths and [len(b) for b in blocks] == [3, 4, 4]


# ---- two processes ----------------------------------------------------------------------------
def _rank_pid(launcher: int, rank: int) -> int:
    """The pid of the worker process of ``rank`` among the launcher's children (Linux /proc)."""
    for task in os.listdir(f"/proc/{launcher}/task"):
        for child in Path(f"/proc/{launcher}/task/{task}/children").read_text().split():
            if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
                return int(child)
    raise AssertionError(f"no worker of rank {rank}")


def _files(run: Path) -> set[str]:
    return {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def ddp(real_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``zoo train custom_cnn --devices 2``, rank 1 SIGKILLed after the first checkpoint, then
    ``--resume`` on 2 processes."""
    root = tmp_path_factory.mktemp("ddp")
    home, digests = root / "runs", root / "digests"
    digests.mkdir()
    env = {**os.environ, "ZOO_HOME": str(home), "ZOO_SPLITS_DIR": str(root / "splits"),
           "ZOO_DATA": str(real_subset), "HF_HUB_OFFLINE": "1", "COLUMNS": "1000"}
    command = [sys.executable, "-m", "zoo", "train", "custom_cnn", "--devices", "2"]
    proc = subprocess.Popen([*command, "--name", "ddp", *SMALL], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = home / "ddp" / "resume" / "state.safetensors"
    deadline = time.time() + 300
    while not state.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.01)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    killed = {"code": proc.wait(timeout=120), "said": " ".join(proc.stdout.read().split()),
              "files": _files(home / "ddp"), "meta": read_meta(home / "ddp"),
              "epoch": load_state(home / "ddp").epoch}
    resumed = subprocess.run([*command, "--resume", "ddp", "--quiet"], capture_output=True, text=True,
                             env={**env, DIGEST_DIR_ENV: str(digests)}, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return {"home": home, "killed": killed, "digests": digests, "said": resumed.stdout}


def test_killed_rank_stops_the_launcher_naming_the_run_and_how_to_resume(ddp: dict) -> None:
    killed = ddp["killed"]
    assert killed["code"] == 1, killed["said"]
    assert "Training process 1 of 2 was killed (SIGKILL)" in killed["said"]
    assert "zoo train custom_cnn --resume ddp --devices 2" in killed["said"]
    assert killed["meta"]["status"] in ("interrupted", "running") and killed["epoch"] >= 1
    assert not [f for f in killed["files"] if f.endswith(".tmp") or "/." in f or f.startswith(".")]
    assert {"meta.json", "config.yaml", "history.csv", "resume/state.safetensors"} <= killed["files"]


def test_resumed_two_process_run_has_one_folder_one_row_and_the_same_weights_on_both_ranks(ddp: dict) -> None:
    home = ddp["home"]
    assert sorted(p.name for p in home.iterdir() if p.is_dir() and p.name != ".cache") == ["ddp"]
    assert [r["name"] for r in rows(home)] == ["ddp"]
    assert ddp["said"].count("ddp: test_acc") == 1  # rank 0 alone reports
    meta = read_meta(home / "ddp")
    assert meta["status"] == "finished" and meta["processes"] == 2 and meta["device"] == "cpu"
    assert meta["precision"] == "32" and meta["device_name"].startswith("CPU")
    assert not (home / "ddp" / "resume").exists()
    digests = {p.name: p.read_text() for p in ddp["digests"].iterdir()}
    assert set(digests) == {"rank0.sha256", "rank1.sha256"} and len(set(digests.values())) == 1


def test_metrics_agree_with_the_validation_logits_gathered_from_both_ranks(ddp: dict) -> None:
    run = ddp["home"] / "ddp"
    meta, val = read_meta(run), load_predictions(run, "val")
    assert meta["metrics"]["val"]["accuracy"] == classification_metrics(
        val["labels"], val["probs"], meta["classes"])["accuracy"]
    with open(run / "history.csv", newline="") as fh:
        restored = [row for row in csv.DictReader(fh) if row["best"] == "True"][-1]
    raw = val["probs_uncalibrated"]  # rank 0 alone, one device, the restored weights
    assert float(restored["val_accuracy"]) == pytest.approx((raw.argmax(1) == val["labels"]).mean())
    nll = -np.log(raw[np.arange(len(raw)), val["labels"]]).mean()
    assert float(restored["val_loss"]) == pytest.approx(nll, abs=1e-4)
    assert json.loads((run / "meta.json").read_text())["epochs_run"] == 8
