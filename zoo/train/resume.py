"""Save and load a ``ResumeState`` without pickle: tensors in safetensors, the rest in JSON."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zoo.errors import ZooError
from zoo.fileio import atomic_path, open_regular
from zoo.store.runs import WEIGHTS_MAX_BYTES
from zoo.store.schema import schema_problem
from zoo.train.recipes import Recipe
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
    tensors |= {f"anchor/{k}": v.detach().contiguous() for k, v in state.anchor.items()}
    opt_tensors, opt_info = _split_optimizer(state.optimizer)
    tensors |= opt_tensors
    info = {"stage": state.stage, "epoch": state.epoch, "best": state.best,
            "bad_epochs": state.bad_epochs, "best_tiebreak": state.best_tiebreak,
            "history": state.history, "optimizer": opt_info, "scaler": state.scaler,
            "scheduler": json.loads(json.dumps(state.scheduler, default=lambda o: None))}
    with atomic_path(run / STATE_DIR / STATE_FILE, durable=True) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(info)})


class _Row(BaseModel):
    """One history row (``Trainer._run``); other keys are kept."""

    model_config = ConfigDict(extra="allow")
    epoch: int = Field(ge=1)
    stage: str = Field(max_length=40)


class _Info(BaseModel):
    """The JSON half of a resume state, checked before any of it is used."""

    model_config = ConfigDict(extra="allow")
    stage: int = Field(ge=0)
    epoch: int = Field(ge=0)
    best: Optional[float]
    bad_epochs: int = Field(ge=0)
    best_tiebreak: Optional[float] = None
    history: list[_Row]
    optimizer: dict
    scheduler: dict


def load_state(run: Path) -> ResumeState:
    file = run / STATE_DIR / STATE_FILE
    try:
        open_regular(file, WEIGHTS_MAX_BYTES).close()  # no pipe (a read would hang), no giant
        with safe_open(str(file), framework="pt") as fh:
            info = json.loads(fh.metadata()["state"])
            _Info.model_validate(info)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except ValidationError as exc:
        raise ZooError(f"The resume state {file} is damaged: {schema_problem(exc)}. Start the run "
                       "again without --resume.") from exc
    except (OSError, ValueError, KeyError, TypeError, SafetensorError, RecursionError) as exc:
        raise ZooError(f"Run '{run.name}' has no usable resume state in {file} ({str(exc)[:200]}); "
                       "it stopped before its first epoch ended. Start it again without --resume.") from exc

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    return ResumeState(info["stage"], info["epoch"], info["best"], info["bad_epochs"],
                       info.get("best_tiebreak"), info["history"], part("model/"), part("best/"),
                       _join_optimizer(tensors, info["optimizer"]), info["scheduler"], part("ema/"),
                       info.get("scaler", {}), part("anchor/"))


def check_state(state: ResumeState, recipe: Recipe, pretrained: bool, run: Path) -> ResumeState:
    """``state`` if the run's own recipe could have saved it: a hand-edited stage, epoch or history
    beyond the recipe's schedule (which would skip training and rank an untrained model) is refused."""
    cfg = recipe.train
    stages = [cfg.warmup.epochs] if pretrained and cfg.warmup else []
    stages += [cfg.epochs] if cfg.epochs > 0 else []
    limit = stages[state.stage] if state.stage < len(stages) else 1  # past the last: epoch 0
    if state.stage > len(stages) or state.epoch >= limit or len(state.history) > sum(stages) \
            or state.bad_epochs > sum(stages):
        raise ZooError(f"The resume state in {run / STATE_DIR / STATE_FILE} does not fit the run's "
                       f"recipe (stage {state.stage}, epoch {state.epoch}, {len(state.history)} "
                       f"history rows; the recipe has {len(stages)} stage(s) of {stages} epochs). "
                       "It was changed by hand: start the run again without --resume.")
    return state


def clear_state(run: Path) -> None:
    shutil.rmtree(run / STATE_DIR, ignore_errors=True)
