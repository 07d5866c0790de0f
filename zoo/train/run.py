"""``zoo train``: recipe -> data -> model -> Trainer -> run folder -> leaderboard row.

Under torchrun every process runs ``train``; rank 0 alone writes the run folder, its resume
state, plots and leaderboard row (``zoo.train.distributed``)."""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo import __version__
from zoo.console import Reporter
from zoo.data.cache import DecodeCache
from zoo.data.dataset import DatasetIndex, resolve_data_root, scan_dataset
from zoo.data.preprocessing import Preprocessing
from zoo.data.splits import Split, get_split
from zoo.errors import ZooError
from zoo.evaluate.calibration import TemperatureScaler
from zoo.evaluate.metrics import classification_metrics
from zoo.fileio import write_text
from zoo.models.factory import build_model, count_params, preprocessing_of
from zoo.evaluate.trust import FEATURE_METHODS, OodScorer, Trust, fit_trust, selective_summary
from zoo.models.inference import predict_logits, predict_outputs
from zoo.models.runtime import Runtime
from zoo.models.weights import create_pretrained
from zoo.paths import runs_home
from zoo.store.leaderboard import record
from zoo.store.runs import (
    check_name_free,
    new_run,
    read_meta,
    run_dir,
    save_predictions,
    save_weights,
    write_history,
    write_meta,
)
from zoo.train.batches import SplitArrays
from zoo.train.distill import Teacher, load_teacher
from zoo.train.distributed import Cluster, lost_contact, write_rank_digest
from zoo.train.recipes import (
    CalibrationSection,
    Recipe,
    TrustSection,
    dump_recipe,
    read_recipe_file,
    validate_recipe,
)
from zoo.train.resume import check_state, clear_state, load_state, save_state
from zoo.train.trainer import ResumeState, Trainer

RANDOM_INIT = "random init (model.pretrained=false)"


@dataclass
class TrainOptions:
    data: str | None = None
    name: str | None = None
    weights: str | None = None
    device: str | None = None  # overrides the recipe's train.device
    home: Path = field(default_factory=runs_home)

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name_free(self.name, self.home)  # before any work; new_run claims it


@dataclass
class PreparedData:
    index: DatasetIndex
    split: Split
    notes: list[str]
    parts: dict[str, SplitArrays]


def create_for_recipe(recipe: Recipe, num_classes: int, weights: str | None) -> tuple[nn.Module, str]:
    """The recipe's model: pretrained backbone (or random init when asked) and a new head."""
    m = recipe.model
    if m.pretrained or weights:
        return create_pretrained(m.name, num_classes, weights or m.weights, **m.kwargs)
    return build_model(m.name, num_classes, **m.kwargs), RANDOM_INIT


def prepare_data(data: str | None, pre: Preprocessing, rep: Reporter) -> PreparedData:
    """Scan and split; decode every photo once (decode cache) at the model's resize side into
    the memory-mapped pack that the three parts read from."""
    index = scan_dataset(resolve_data_root(data))
    split, notes = get_split(index)
    notes += [f"skipped {path}: {reason}" for path, reason in index.skipped]
    by_path = {it.path: it for it in index.items}
    paths = {name: [p for p in split.paths(name) if p in by_path] for name in ("train", "val", "test")}
    photos = [by_path[p] for part in paths.values() for p in part]
    cache = DecodeCache()
    done, total = iter(range(1, len(photos) + 1)), len({it.sha256 for it in photos})
    pack = cache.pack([index.root / it.path for it in photos], [it.sha256 for it in photos],
                      pre.resize_side, on_done=lambda: rep.advance("decode", next(done), total))
    parts = {}
    for name, part in paths.items():
        labels = np.array([split.classes.index(by_path[p].label) for p in part], dtype=np.int64)
        parts[name] = SplitArrays(part, pack.subset([by_path[p].sha256 for p in part]), labels)
    notes += cache.notes + [f"decode cache: {cache.hits} hits, {cache.misses} decoded"]
    return PreparedData(index, split, notes, parts)


def inference_speed(model: nn.Module, arrays: list[np.ndarray], pre: Preprocessing,
                    runtime: Runtime = Runtime()) -> float:
    """Images per second for batched inference on decoded photos (after one untimed batch)."""
    sample = arrays[:32]
    predict_logits(model, sample[:4], pre, runtime=runtime)
    start = time.perf_counter()
    predict_logits(model, sample, pre, runtime=runtime)
    return len(sample) / (time.perf_counter() - start)


def _new_run(recipe: Recipe, opts: TrainOptions, data: PreparedData, pre: Preprocessing,
             model: nn.Module, source: str) -> tuple[Path, dict]:
    """Claim the run folder (atomically: a concurrent training never gets the same one), write
    its recipe and metadata, and list it on the leaderboard as running; all or nothing."""
    with new_run(opts.home, opts.name, recipe.model.name) as path:
        meta = start_meta(path.name, recipe, data, pre, model, source)
        write_text(path / "config.yaml", dump_recipe(recipe))
        write_meta(path, meta)
        record(meta, opts.home)
    return path, meta


def start_meta(name: str, recipe: Recipe, data: PreparedData, pre: Preprocessing,
               model: nn.Module, source: str) -> dict:
    return {
        "name": name, "kind": "model", "status": "running", "model": recipe.model.name,
        "model_kwargs": recipe.model.kwargs, "classes": data.split.classes,
        "preprocessing": pre.to_dict(), "weights_source": source, "dataset": data.index.name,
        "data_root": str(data.index.root), "split_id": data.split.id,
        "recipe_hash": recipe.digest(), "seed": recipe.seed, "params": count_params(model),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"zoo": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "notes": data.notes, "skipped_files": len(data.index.skipped), "fit_seconds": 0.0,
    }


def saved_recipe(path: Path) -> Recipe:
    """The resolved recipe a run was trained with (its ``config.yaml``), checked."""
    config = path / "config.yaml"
    return validate_recipe(read_recipe_file(config, "Saved recipe"), str(config))


def resume_target(run: str, home: Path) -> tuple[Path, dict, Recipe, ResumeState]:
    """An unfinished run's folder, metadata, its own saved recipe and its resume state."""
    path = run_dir(run, home)
    meta = read_meta(path)
    if meta.get("status") == "finished":
        raise ZooError(f"Run '{run}' already finished; nothing to resume.")
    try:
        recipe = saved_recipe(path)
    except ZooError as exc:
        raise ZooError(f"Run '{run}' has no usable config.yaml to resume from: {exc}") from exc
    pretrained = meta.get("weights_source") != RANDOM_INIT
    return path, meta, recipe, check_state(load_state(path), recipe, pretrained, path)


def train(recipe: Recipe, opts: TrainOptions, rep: Reporter, resume: str | None = None) -> Path:
    """Train a new run, or continue run ``resume`` from its last finished epoch; under torchrun,
    as one of the data-parallel processes."""
    cluster = Cluster.from_env()
    with cluster.session():
        return _train(recipe, opts, rep, resume, cluster)


def _train(recipe: Recipe, opts: TrainOptions, rep: Reporter, resume: str | None, cluster: Cluster) -> Path:
    torch.manual_seed(recipe.seed)
    state = None
    if resume:
        path, meta, recipe, state = cluster.from_main(lambda: resume_target(resume, opts.home))
    runtime = cluster.runtime(opts.device or recipe.train.device, recipe.train.precision)
    pre = preprocessing_of(build_model(recipe.model.name, 2, **recipe.model.kwargs), recipe.data.image_size)
    with cluster.main_first():
        data = prepare_data(opts.data or (meta["data_root"] if resume else None), pre, rep)
        if not resume:
            model, source = create_for_recipe(recipe, len(data.split.classes), opts.weights)
    if resume:
        if data.split.id != meta["split_id"]:
            raise ZooError(f"Run '{resume}' was trained on split {meta['split_id']}, but the data "
                           f"now gives split {data.split.id}; it cannot be resumed on other data.")
        model = build_model(recipe.model.name, len(data.split.classes), **recipe.model.kwargs)
        meta["status"] = "running"
    teacher = _teacher(recipe, opts.home, runtime, pre, data, rep)  # before a new run is claimed
    if not resume:
        path, meta = cluster.from_main(lambda: _new_run(recipe, opts, data, pre, model, source))
    if teacher is not None:
        meta["distill"] = {**teacher.describe(), **recipe.train.distill.model_dump(exclude={"teacher"})}
    meta.update(runtime.describe(), processes=cluster.world_size)
    for note in data.notes:
        rep.note(note)
    rep.log(f"run {meta['name']}{' (resumed)' if resume else ''}: {recipe.model.name} "
            f"({meta['params']:,} params, weights: {meta['weights_source']}), "
            f"{len(data.parts['train'])} train / {len(data.parts['val'])} val / "
            f"{len(data.parts['test'])} test images, {len(data.split.classes)} classes, on "
            f"{meta['device_name']} (precision {runtime.precision})"
            + (f" x {cluster.world_size} processes" if cluster.distributed else ""),
            bold=meta["name"])
    start = time.perf_counter()
    pretrained = meta["weights_source"] != RANDOM_INIT
    max_epochs = recipe.train.epochs + (recipe.train.warmup.epochs if pretrained and recipe.train.warmup else 0)
    hooks = dict(on_epoch=lambda row: (rep.epoch(row, max_epochs), write_history(path, trainer.history)),
                 on_batch=lambda stage, i, n: rep.advance(stage, i, n),
                 on_checkpoint=lambda st: save_state(path, st)) if cluster.main else {}
    trainer = Trainer(model, pre, recipe, data.parts["train"], data.parts["val"], runtime, cluster,
                      teacher, **hooks)
    try:
        history = trainer.fit(pretrained, state)
    except (KeyboardInterrupt, RuntimeError) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        if not cluster.main or not (interrupted or lost_contact(exc)):
            raise
        meta.update(status="interrupted", fit_seconds=meta["fit_seconds"] + time.perf_counter() - start)
        write_meta(path, meta)
        record(meta, opts.home)
        raise ZooError(f"{'Interrupted' if interrupted else 'Lost contact with another training process'}"
                       f". Run '{meta['name']}' keeps its last finished epoch; continue with: zoo train "
                       f"{recipe.model.name} --resume {meta['name']}", exit_code=130 if interrupted else 1) from None
    meta["fit_seconds"] += time.perf_counter() - start
    if trainer.wise_:
        meta["wise_ft"] = trainer.wise_
        rep.log(f"WiSE-FT: alpha {trainer.wise_['alpha']} (0: warmed-up, 1: fine-tuned) validates best")
    write_rank_digest(trainer.model, cluster)
    cluster.barrier()
    if cluster.main:
        finish_run(path, meta, trainer.model, pre, data, history, recipe.data.batch_size, runtime,
                   recipe.trust, recipe.calibration)
        clear_state(path)
    return path


def _teacher(recipe: Recipe, home: Path, runtime: Runtime, pre: Preprocessing, data: PreparedData,
             rep: Reporter) -> Teacher | None:
    """The recipe's ``train.distill`` teacher, loaded and checked (None without distillation)."""
    if recipe.train.distill is None:
        return None
    teacher = load_teacher(recipe.train.distill, home, runtime, pre, data.split)
    rep.log(f"distilling from {teacher.name} ({', '.join(m.name for m in teacher.models)}), "
            f"weight {recipe.train.distill.weight}, temperature {recipe.train.distill.temperature}")
    return teacher


def finish_run(path: Path, meta: dict, model: nn.Module, pre: Preprocessing, data: PreparedData,
               history: list[dict], batch_size: int, runtime: Runtime = Runtime(),
               trust: TrustSection | None = None, calibration: CalibrationSection | None = None) -> None:
    """``write_finished``, then rank the run."""
    write_finished(path, meta, model, pre, data, history, batch_size, runtime, trust, calibration)
    record(meta, path.parent)


def write_finished(path: Path, meta: dict, model: nn.Module, pre: Preprocessing, data: PreparedData,
                   history: list[dict], batch_size: int, runtime: Runtime = Runtime(),
                   trust: TrustSection | None = None, calibration: CalibrationSection | None = None) -> None:
    """Score val and test (on one device), calibrate on val, fit the trust thresholds on val
    (zoo.evaluate.trust; feature statistics from the training photos), save weights,
    predictions, plots and (last) ``meta.json`` as finished into ``path``. ``history``: the
    epochs trained (none for a model that was not trained, e.g. a soup: no learning curves)."""
    from zoo.report.plots import (
        plot_confusion_matrix,
        plot_learning_curves,
        plot_reliability,
        plot_risk_coverage,
    )

    trust, calibration = trust or TrustSection(), calibration or CalibrationSection()
    classes = meta["classes"]
    train, val, test = data.parts["train"], data.parts["val"], data.parts["test"]
    outputs = {split: [t.numpy() for t in predict_outputs(model, part.arrays, pre, batch_size, runtime=runtime)]
               for split, part in (("val", val), ("test", test))}
    uncalibrated = {split: torch.softmax(torch.from_numpy(logits), 1).numpy()
                    for split, (logits, _) in outputs.items()}
    scaler = TemperatureScaler(min_temperature=calibration.min_temperature)
    if calibration.temperature is None:
        scaler.fit(uncalibrated["val"], val.labels)
    else:
        scaler.temperature = calibration.temperature
    train_features = None
    if trust.ood_score in FEATURE_METHODS:  # eval views of the training photos: no augmentation
        train_features = predict_outputs(model, train.arrays, pre, batch_size, runtime=runtime)[1].numpy()
    scorer = OodScorer.fit(trust.ood_score, train_features, train.labels, len(classes),
                           scaler.temperature, trust.knn_k, seed=meta.get("seed", 0))
    ood = {split: scorer.score(*outputs[split]) for split in outputs}
    calibrated = {split: scaler.transform(uncalibrated[split]) for split in outputs}
    # Validation only: the test labels are never seen by the thresholds.
    fitted = fit_trust(calibrated["val"], val.labels, ood["val"], trust.target_precision,
                       trust.known_tpr, scorer.params(), level=trust.confidence_level)
    judge = Trust.from_meta(fitted)
    metrics = {}
    for split, part in (("val", val), ("test", test)):
        probs = calibrated[split]
        save_predictions(path, split, part.paths, part.labels, probs,
                         probs_uncalibrated=uncalibrated[split], ood=ood[split])
        metrics[split] = classification_metrics(part.labels, probs, classes)
        metrics[split]["ece_uncalibrated"] = classification_metrics(part.labels, uncalibrated[split],
                                                                    classes)["ece"]
        metrics[split]["selective"] = selective_summary(judge, probs, part.labels, ood[split], classes)
    scorer.write_to(path)
    save_weights(path / "model.safetensors", model)
    meta.update(status="finished", metrics=metrics, calibration=scaler.to_dict(), trust=fitted,
                infer_img_per_s=inference_speed(model, val.arrays, pre, runtime),
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if history:
        meta["epochs_run"] = len(history)
        plot_learning_curves(history, path / "plots" / "learning_curves.png")
    plot_confusion_matrix(np.array(metrics["test"]["confusion"]), classes, path / "plots" / "confusion_matrix.png")
    plot_reliability(test.labels, calibrated["test"], path / "plots" / "reliability.png")
    plot_risk_coverage(test.labels, calibrated["test"], fitted["confidence_threshold"],
                       path / "plots" / "risk_coverage.png", title=f"{meta['name']}: test split")
    write_meta(path, meta)
