"""Save and load a ``ResumeState`` without pickle: tensors in safetensors, the rest in JSON."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zoo.errors import ZooError
from zoo.fileio import atomic_path
from zoo.train.trainer import ResumeState

STATE_DIR = "resume"
STATE_FILE = "state.safetensors"


def _split_optimizer(opt: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, slots in opt.get("state", {}).items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{pid}/{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": opt.get("param_groups", []), "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    if not info.get("param_groups"):
        return {}
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, pid, key = name.split("/", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, slots in info["scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    return {"state": state, "param_groups": info["param_groups"]}


def save_state(run: Path, state: ResumeState) -> None:
    """One atomic file: tensors, with the rest as JSON in the safetensors header metadata."""
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in state.model.items()}
    tensors |= {f"best/{k}": v.detach().contiguous() for k, v in state.best_model.items()}
    tensors |= {f"ema/{k}": v.detach().contiguous() for k, v in state.ema.items()}
    opt_tensors, opt_info = _split_optimizer(state.optimizer)
    tensors |= opt_tensors
    info = {"stage": state.stage, "epoch": state.epoch, "best": state.best,
            "bad_epochs": state.bad_epochs, "best_tiebreak": state.best_tiebreak,
            "history": state.history, "optimizer": opt_info, "scaler": state.scaler,
            "scheduler": json.loads(json.dumps(state.scheduler, default=lambda o: None))}
    with atomic_path(run / STATE_DIR / STATE_FILE, durable=True) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(info)})


def load_state(run: Path) -> ResumeState:
    file = run / STATE_DIR / STATE_FILE
    try:
        with safe_open(str(file), framework="pt") as fh:
            info = json.loads(fh.metadata()["state"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ZooError(f"Run '{run.name}' has no usable resume state in {file} ({exc}); it "
                       "stopped before its first epoch ended. Start it again without --resume.") from exc

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    return ResumeState(info["stage"], info["epoch"], info["best"], info["bad_epochs"],
                       info.get("best_tiebreak"), info["history"], part("model/"), part("best/"),
                       _join_optimizer(tensors, info["optimizer"]), info["scheduler"], part("ema/"),
                       info.get("scaler", {}))


def clear_state(run: Path) -> None:
    shutil.rmtree(run / STATE_DIR, ignore_errors=True)
