"""``zoo soup``: average the weights of several fine-tunes of one recipe model into one model
(Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time"), then finish it exactly as ``zoo train`` finishes a
run (``zoo.train.run.write_finished``: val and test scored, temperature and trust thresholds fitted
on validation, checkpoint, predictions, plots, meta.json) and rank it.

- ``uniform``: the mean of every floating-point parameter and buffer of the ingredients' final
  checkpoints (summed in float64); integer buffers (BatchNorm's ``num_batches_tracked``) are the
  first ingredient's.
- ``greedy`` (the paper's Recipe 1): ingredients sorted by their stored validation accuracy (ties:
  lower validation NLL); the soup starts as the best one and each next one is kept only if the
  soup's validation accuracy does not drop (at equal accuracy: if its validation NLL does not
  rise). Only validation photos choose; the test split is scored at the end, never consulted.

The soup is a plain model run (kind ``model``, named ``soup-<model>-<n>``; its ``members`` are the
ingredients kept, ``soup`` in meta.json says how it was made), so every command that takes a run
takes it. It is written into a hidden temporary folder beside the run folders and renamed into
place once complete, then ranked: an interrupted ``zoo soup`` leaves no run behind.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.console import Reporter
from zoo.data.preprocessing import Preprocessing
from zoo.errors import ZooError
from zoo.fileio import atomic_folder, write_text
from zoo.models.factory import build_model
from zoo.models.inference import predict_logits
from zoo.models.runtime import Runtime, resolve_device
from zoo.paths import runs_home
from zoo.store.checkpoints import verify_checkpoint
from zoo.store.leaderboard import record
from zoo.store.runs import check_name_free, load_weights, new_run, read_meta, run_dir
from zoo.train.batches import SplitArrays
from zoo.train.recipes import Recipe, dump_recipe
from zoo.train.run import RANDOM_INIT, prepare_data, saved_recipe, start_meta, write_finished

METHODS = ("uniform", "greedy")
# Model kwargs that only regularise training (dropout rates): fine-tunes that differ in them have
# the same architecture and can be averaged; any other kwarg must match.
TRAINING_ONLY_KWARGS = frozenset({"drop_rate", "drop_path_rate", "drop_block_rate",
                                  "attn_drop_rate", "proj_drop_rate", "pos_drop_rate"})

State = dict[str, torch.Tensor]


@dataclass
class Ingredient:
    name: str
    path: Path
    meta: dict

    @property
    def val_accuracy(self) -> float:
        return self.meta["metrics"]["val"]["accuracy"]

    @property
    def val_nll(self) -> float:
        nll = self.meta["metrics"]["val"].get("nll")
        return float("inf") if nll is None else nll

    def weights(self) -> State:
        return load_weights(self.path / "model.safetensors")


# ---- which runs can be averaged ---------------------------------------------------------------

def _architecture(meta: dict) -> dict:
    return {k: v for k, v in (meta.get("model_kwargs") or {}).items() if k not in TRAINING_ONLY_KWARGS}


def _check_same(first: Ingredient, other: Ingredient) -> None:
    a, b = first.meta, other.meta
    why = "a soup averages fine-tunes of one recipe model (different seeds or hyper-parameters)"
    if b.get("model") != a.get("model"):
        raise ZooError(f"'{other.name}' is a {b.get('model')} but '{first.name}' is a "
                       f"{a.get('model')}: {why}, so every ingredient must be the same model.")
    if _architecture(b) != _architecture(a):
        raise ZooError(f"'{other.name}' was built with model kwargs {_architecture(b)} but "
                       f"'{first.name}' with {_architecture(a)}: different architectures cannot be "
                       f"averaged ({why}).")
    if b["classes"] != a["classes"]:
        raise ZooError(f"'{other.name}' has classes {b['classes']} but '{first.name}' has "
                       f"{a['classes']}: ingredients must be trained on the same classes.")
    if b.get("preprocessing") != a.get("preprocessing"):
        raise ZooError(f"'{other.name}' uses preprocessing {b.get('preprocessing')} but "
                       f"'{first.name}' uses {a.get('preprocessing')}: ingredients must share the "
                       "image size and normalisation (data.image_size in the recipe).")
    if b.get("split_id") != a.get("split_id"):
        raise ZooError(f"'{other.name}' was trained on split {b.get('split_id')} but "
                       f"'{first.name}' on split {a.get('split_id')}: ingredients must share a "
                       "split (the soup is scored on its validation and test photos).")


def load_ingredients(runs: list[str], home: Path, min_count: int = 2) -> list[Ingredient]:
    """The runs to average, checked: each a finished model run, all of one architecture, classes,
    preprocessing and split, with checkpoints that fit their meta.json."""
    dupes = sorted({r for r in runs if runs.count(r) > 1})
    if dupes:
        raise ZooError(f"{', '.join(dupes)} listed more than once; name each run once.")
    if len(runs) < min_count:
        raise ZooError(f"A soup averages at least {min_count} runs, got {len(runs)}"
                       f"{' (' + ', '.join(runs) + ')' if runs else ''}. Name several fine-tunes of "
                       "one recipe model, e.g. zoo soup tf_efficientnet_lite0-1 tf_efficientnet_lite0-2.")
    found = []
    for run in runs:
        path = run_dir(run, home)
        meta = read_meta(path)
        if meta.get("kind") != "model":
            raise ZooError(f"'{run}' is an ensemble (of {', '.join(meta.get('members', []))}); a soup "
                           "averages the weights of trained models. Name the runs themselves.")
        if meta.get("status") != "finished":
            raise ZooError(f"'{run}' did not finish training (status: {meta.get('status')}); finish "
                           f"it first with `zoo train {meta.get('model')} --resume {run}`.")
        found.append(Ingredient(run, path, meta))
    for other in found[1:]:
        _check_same(found[0], other)
    for ing in found:
        try:
            verify_checkpoint(ing.path, ing.meta)
        except ZooError as exc:
            raise ZooError(f"'{ing.name}' cannot be used: {exc}") from exc
    return found


def by_validation(ingredients: list[Ingredient]) -> list[Ingredient]:
    """Best first: higher stored validation accuracy, then lower validation NLL (stable)."""
    return sorted(ingredients, key=lambda i: (-i.val_accuracy, i.val_nll))


# ---- averaging --------------------------------------------------------------------------------

def _sums(state: State) -> State:
    return {k: v.double() for k, v in state.items() if v.is_floating_point()}


def _added(sums: State, state: State) -> State:
    return {k: v + state[k].double() for k, v in sums.items()}


def _mean(sums: State, count: int, first: State) -> State:
    """The average (floating-point tensors) in each tensor's own dtype; the rest from ``first``."""
    return {k: (sums[k] / count).to(v.dtype) if k in sums else v.clone() for k, v in first.items()}


def _check_fits(first: Ingredient, first_state: State, other: Ingredient, state: State) -> None:
    want = {k: (tuple(v.shape), v.dtype) for k, v in first_state.items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    if got != want:
        diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise ZooError(f"The checkpoints of '{other.name}' and '{first.name}' hold different "
                       f"tensors (e.g. {', '.join(diff[:3])}): they cannot be averaged.")


def uniform_state(ingredients: list[Ingredient]) -> State:
    """The element-wise mean of the ingredients' checkpoints (one loaded at a time)."""
    first = ingredients[0].weights()
    sums = _sums(first)
    for ing in ingredients[1:]:
        state = ing.weights()
        _check_fits(ingredients[0], first, ing, state)
        sums = _added(sums, state)
    return _mean(sums, len(ingredients), first)


@dataclass
class Scorer:
    """Validation accuracy (as a count of right answers: no float ties) and NLL of a state."""

    model: nn.Module
    pre: Preprocessing
    val: SplitArrays
    batch_size: int
    runtime: Runtime
    channels_last: bool

    @property
    def n(self) -> int:
        return len(self.val.labels)

    def __call__(self, state: State) -> tuple[int, float]:
        self.model.load_state_dict(state)
        logits = predict_logits(self.model, self.val.arrays, self.pre, self.batch_size,
                                self.channels_last, self.runtime)
        labels = torch.as_tensor(self.val.labels)
        nll = float(F.cross_entropy(logits, labels))
        return int((logits.argmax(1) == labels).sum()), nll if math.isfinite(nll) else math.inf


def greedy_state(ingredients: list[Ingredient], score: Scorer,
                 rep: Reporter | None = None) -> tuple[State, list[dict]]:
    """Recipe 1 of the paper over ``ingredients`` in the order given (best first): each next
    ingredient joins if the soup's validation accuracy does not drop and, at equal accuracy, its
    validation NLL does not rise. Returns the soup and one step per ingredient (the candidate
    soup's validation scores and whether the ingredient was kept)."""
    n = score.n
    first = ingredients[0].weights()
    sums, count = _sums(first), 1
    right, nll = score(first)
    steps = [_step(ingredients[0].name, True, right / n, nll)]
    _say(rep, steps[0], None)
    for ing in ingredients[1:]:
        state = ing.weights()
        _check_fits(ingredients[0], first, ing, state)
        trial = _added(sums, state)
        del state
        trial_right, trial_nll = score(_mean(trial, count + 1, first))
        kept = trial_right > right or (trial_right == right and trial_nll <= nll)
        steps.append(_step(ing.name, kept, trial_right / n, trial_nll))
        _say(rep, steps[-1], (right / n, nll))
        if kept:
            sums, count, right, nll = trial, count + 1, trial_right, trial_nll
    return _mean(sums, count, first), steps


def _step(run: str, kept: bool, accuracy: float, nll: float) -> dict:
    return {"run": run, "kept": kept, "val_accuracy": accuracy,
            "val_nll": nll if math.isfinite(nll) else None}  # JSON has no infinity


def _say(rep: Reporter | None, step: dict, before: tuple[float, float] | None) -> None:
    if rep is None:
        return
    scores = f"val_acc {step['val_accuracy']:.4f}  val_nll {_num(step['val_nll'])}"
    if before is None:
        rep.log(f"greedy: start from {step['run']} ({scores})")
    else:
        verdict = "kept" if step["kept"] else "left out"
        rep.log(f"greedy: + {step['run']}: {scores} (soup had {before[0]:.4f} / "
                f"{_num(before[1])}): {verdict}")


def _num(value: float | None) -> str:
    return "inf" if value is None or not math.isfinite(value) else f"{value:.4f}"


# ---- the soup run -----------------------------------------------------------------------------

def _notes(ingredients: list[Ingredient]) -> list[str]:
    """Why a soup of these ingredients may disappoint (said, and kept in meta.json)."""
    sources = {i.meta.get("weights_source") for i in ingredients}
    seeds = {i.meta.get("seed") for i in ingredients}
    if RANDOM_INIT in sources and (len(sources) > 1 or len(seeds) > 1):
        return ["the ingredients do not share their starting weights (trained from random "
                "initialisation, model.pretrained=false, with other seeds or beside pretrained "
                "ones): weight averaging assumes fine-tunes of the same pretrained weights, and an "
                "average of independently initialised models is usually far worse than each of them"]
    if len(sources) > 1:
        return [f"the ingredients started from different pretrained weights "
                f"({', '.join(sorted(map(str, sources)))}); a soup assumes fine-tunes of the same ones"]
    return []


def _recipe(first: Ingredient, target_precision: float | None) -> Recipe:
    try:
        recipe = saved_recipe(first.path)
    except ZooError as exc:
        raise ZooError(f"'{first.name}' has no usable config.yaml (its recipe): {exc}") from exc
    if target_precision is not None:
        recipe = recipe.model_copy(update={"trust": recipe.trust.model_copy(
            update={"target_precision": target_precision})})
    return recipe


def _runtime(device: str | None, recipe: Recipe) -> Runtime:
    """``device`` (default auto), in the precision the runs were trained and scored in (fp16 needs
    CUDA: elsewhere fp32)."""
    where = resolve_device(device or "auto")
    precision = recipe.train.precision
    if precision == "16-mixed" and where.type != "cuda":
        precision = "32"
    return Runtime.create(str(where), precision)


def _data_root(first: Ingredient, data: str | None) -> str:
    if data:
        return data
    root = first.meta.get("data_root")
    if not root or not Path(root).is_dir():
        raise ZooError(f"The photos that '{first.name}' was trained on are not at {root} any more; "
                       "a soup is scored on their validation and test split: pass --data DIR.")
    return root


def _describe(method: str, ingredients: list[Ingredient], kept: list[str]) -> str:
    if method == "uniform":
        return f"uniform soup of {', '.join(kept)}"
    left = [i.name for i in ingredients if i.name not in kept]
    return (f"greedy soup of {', '.join(kept)} (kept {len(kept)} of {len(ingredients)}"
            + (f"; left out {', '.join(left)})" if left else ")"))


def build_soup(runs: list[str], method: str = "uniform", name: str | None = None,
               home: Path | None = None, data: str | None = None, device: str | None = None,
               target_precision: float | None = None, rep: Reporter | None = None,
               min_ingredients: int = 2) -> Path:
    """Average ``runs`` into a new run (``name``, default ``soup-<model>-<n>``) and rank it."""
    home = home or runs_home()
    rep = rep or Reporter(quiet=True)
    if method not in METHODS:
        raise ZooError(f"Unknown soup method '{method}': use {' or '.join(METHODS)}.")
    if name is not None:
        check_name_free(name, home)
    ingredients = load_ingredients(runs, home, min_ingredients)
    if method == "greedy":
        ingredients = by_validation(ingredients)
    first = ingredients[0]
    recipe = _recipe(first, target_precision)
    runtime = _runtime(device, recipe)
    pre = Preprocessing.from_dict(first.meta["preprocessing"])
    start = time.perf_counter()
    prepared = prepare_data(_data_root(first, data), pre, rep)
    if prepared.split.id != first.meta["split_id"] or prepared.split.classes != first.meta["classes"]:
        raise ZooError(f"The ingredients were trained on split {first.meta['split_id']}, but the "
                       f"photos at {prepared.index.root} now give split {prepared.split.id}: the "
                       "soup must be scored on the ingredients' own validation and test photos.")
    model = build_model(first.meta["model"], len(first.meta["classes"]),
                        **first.meta.get("model_kwargs", {})).to(runtime.device)
    if recipe.train.channels_last:  # as the Trainer holds the model when training scores it
        model = model.to(memory_format=torch.channels_last)
    rep.log(f"soup ({method}) of {len(ingredients)} {first.meta['model']} runs: "
            f"{', '.join(i.name for i in ingredients)}", bold=method)
    steps = None
    if method == "uniform":
        state, kept = uniform_state(ingredients), [i.name for i in ingredients]
    else:
        score = Scorer(model, pre, prepared.parts["val"], recipe.data.batch_size, runtime,
                       recipe.train.channels_last)
        state, steps = greedy_state(ingredients, score, rep)
        kept = [s["run"] for s in steps if s["kept"]]
    model.load_state_dict(state)
    notes = _notes(ingredients)
    for note in notes:
        rep.note(note)
    soup = {"method": method, "ingredients": [i.name for i in ingredients], "kept": kept}
    if steps is not None:
        soup["steps"] = steps
    fit_seconds = sum(i.meta.get("fit_seconds") or 0 for i in ingredients) + time.perf_counter() - start
    with new_run(home, name, f"soup-{first.meta['model']}") as path:
        meta = start_meta(path.name, recipe, prepared, pre, model, f"{method} soup of {', '.join(kept)}")
        meta.update(runtime.describe(), soup=soup, members=kept,
                    description=_describe(method, ingredients, kept),
                    model_kwargs=first.meta.get("model_kwargs", {}), seed=first.meta.get("seed", 0),
                    fit_seconds=fit_seconds,  # as an ensemble counts it: the trainings and its own
                    notes=meta["notes"] + notes)
        with atomic_folder(path) as tmp:  # an interruption leaves no half run
            write_text(tmp / "config.yaml", dump_recipe(recipe))
            write_finished(tmp, meta, model, pre, prepared, [], recipe.data.batch_size, runtime, recipe.trust,
                           recipe.calibration)
        record(meta, home)  # if this fails, new_run removes the folder: all or nothing
    return path
