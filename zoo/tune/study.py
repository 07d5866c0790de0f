"""``zoo tune``: an Optuna study over a recipe's search space, kept in an RDB storage (default
SQLite ``<ZOO_HOME>/tune.db``) so that it resumes after an interruption and several processes or
machines can work on it at once; then the best trial becomes a recipe, trained once and ranked.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from rich.markup import escape

from zoo.console import Reporter, err
from zoo.errors import ZooError
from zoo.fileio import write_text
from zoo.paths import runs_home
from zoo.store.leaderboard import record
from zoo.store.runs import (
    check_run_name,
    new_run_name,
    read_meta,
    run_names,
    write_meta,
)
from zoo.train.recipes import deep_merge, find_recipe, load_recipe, parse_overrides
from zoo.train.run import TrainOptions, train
from zoo.tune.objective import CrossValidation, Objective, epochs_per_fold, worker_id
from zoo.tune.space import SearchSpace, as_sections
from zoo.tune.storage import best_trial, default_storage, open_storage, quiet_optuna, shown_url

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STARTUP_TRIALS = 5  # random trials (the recipe's own values first) before TPE models the space


def _is_file_name(recipe: str) -> bool:
    return recipe.endswith((".yaml", ".yml"))


@dataclass
class TuneOptions:
    recipe: str
    overrides: list[str] = field(default_factory=list)
    data: str | None = None
    trials: int = 20            # stop when the study holds this many finished trials
    timeout_min: float | None = None
    folds: int = 5
    jobs: int = 1
    study: str | None = None    # default: the recipe's name
    storage: str | None = None  # default: sqlite:///<home>/tune.db
    home: Path = field(default_factory=runs_home)

    @property
    def study_name(self) -> str:
        default = Path(self.recipe).stem if _is_file_name(self.recipe) else self.recipe
        return check_run_name(self.study or default)

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        self.home.mkdir(parents=True, exist_ok=True)
        return default_storage(self.home)


@dataclass
class Search:
    """A study with what its trials need: the search space and the cross-validation folds."""

    opts: TuneOptions
    space: SearchSpace
    cv: CrossValidation
    study: optuna.Study
    abandoned: list[int]  # trials of dead processes, marked failed on opening

    @classmethod
    def open(cls, opts: TuneOptions) -> Search:
        """Check the space, load the folds, create or continue the study (same setup only)."""
        quiet_optuna()
        recipe, source = load_recipe(opts.recipe, opts.overrides)
        space = SearchSpace.of(recipe, source)
        cv = CrossValidation.load(opts.data, opts.folds)
        setup = {"recipe": opts.recipe, "set": list(opts.overrides), "folds": opts.folds,
                 "split": cv.split.id, "space": recipe.tune}
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=epochs_per_fold(recipe) // 2)
        study = optuna.create_study(storage=open_storage(opts.storage_url), study_name=opts.study_name,
                                    direction="maximize", load_if_exists=True, pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS,
                                                                       constant_liar=True))
        _check_setup(study, setup, opts)
        if not study.trials:
            study.enqueue_trial(space.baseline(), skip_if_exists=True)
        return cls(opts, space, cv, study, fail_abandoned(study))


def _check_setup(study: optuna.Study, setup: dict, opts: TuneOptions) -> None:
    """Record a new study's setup; refuse to continue one made with another (its scores would
    not compare)."""
    stored = study.user_attrs.get("setup")
    if stored is None:
        study.set_user_attr("setup", setup)
        return
    setup = json.loads(json.dumps(setup))
    differ = [k for k in setup if stored.get(k) != setup[k]]
    if differ:
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in differ)
        raise ZooError(f"Study '{opts.study_name}' in {shown_url(opts.storage_url)} was made with {was}; "
                       f"now {', '.join(f'{k}={setup[k]!r}' for k in differ)}. Its scores would not "
                       "compare: continue it as it was made, or start another with --study NAME.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_abandoned(study: optuna.Study) -> list[int]:
    """Mark as failed the running trials of processes on this machine that no longer exist
    (kill -9, a crash). Other machines' dead trials fail by heartbeat after 3 minutes."""
    host = worker_id().rpartition(":")[0]
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
        if where == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            dead.append(trial.number)
    return dead


def trials_left(study: optuna.Study, wanted: int) -> int:
    """Trials still to start: ``wanted`` minus the finished and running ones."""
    return wanted - len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """``trial 3: train.lr=0.0003 data.batch_size=16 | folds 0.91 0.93 | acc 0.9200 nll 0.310 |
    best 0.9197 (trial 1)``."""
    params = " ".join(f"{k}={_value(v)}" for k, v in trial.params.items())
    folds = " ".join(f"{a:.3f}" for a in trial.user_attrs.get("folds", [])) or "-"
    if trial.state == TrialState.COMPLETE:
        outcome = f"acc {trial.user_attrs['accuracy']:.4f} nll {trial.user_attrs['nll']:.3f}"
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned at {trial.user_attrs.get('pruned_at', '?')}"
    else:
        outcome = "failed"
    best = best_trial(study)
    so_far = f"best {best.value:.4f} (trial {best.number})" if best else "no best yet"
    return f"trial {trial.number}: {params} | folds {folds} | {outcome} | {so_far}"


def run_trials(search: Search, rep: Reporter, timeout_s: float | None) -> None:
    """Run trials in this process until the study has ``--trials`` finished ones or time is up."""
    wanted = search.opts.trials

    def after(study: optuna.Study, trial: FrozenTrial) -> None:
        rep.log(trial_line(study, trial), style="dim" if trial.state != TrialState.COMPLETE else "",
                bold=f"trial {trial.number}")
        if trials_left(study, wanted) <= 0:
            study.stop()

    if trials_left(search.study, wanted) > 0:
        search.study.optimize(Objective(search.space, search.cv, rep), timeout=timeout_s,
                              callbacks=[after], gc_after_trial=True)


def _worker(opts: TuneOptions, threads: int, timeout_s: float | None, start: threading.Barrier) -> None:
    """One of ``--jobs`` processes: trials on the shared study, torch threads divided out. The
    processes start their first trials together, so that each takes one."""
    torch.set_num_threads(threads)
    try:
        search = Search.open(opts)
        start.wait(timeout=600)
        run_trials(search, Reporter(), timeout_s)
    except threading.BrokenBarrierError:  # another process failed to start: its error says why
        sys.exit(1)
    except ZooError as exc:
        start.abort()
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(search: Search, timeout_s: float | None) -> None:
    """``--jobs`` processes (spawned: a fresh interpreter each) working on the one study."""
    jobs = max(1, min(search.opts.jobs, trials_left(search.study, search.opts.trials)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(jobs)
    procs = [ctx.Process(target=_worker, args=(search.opts, threads, timeout_s, start)) for _ in range(jobs)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        for proc in procs:
            proc.join()
        raise
    codes = [p.exitcode for p in procs if p.exitcode]
    if 130 in codes or -signal.SIGINT in codes:
        raise KeyboardInterrupt
    if codes:
        raise ZooError(f"{len(codes)} of {jobs} tuning processes failed (their errors are above).",
                       exit_code=codes[0] if codes[0] > 0 else 1)


@dataclass
class TuneResult:
    study: str
    best: FrozenTrial
    recipe: Path  # the tuned recipe
    run: Path     # its training run


def tuned_recipe_text(opts: TuneOptions, best: FrozenTrial) -> str:
    """``base: <recipe>``, the --set overrides and the best trial's values (4 significant digits)."""
    path = find_recipe(opts.recipe)
    base = "defaults" if path is None else str(path.resolve()) if _is_file_name(opts.recipe) else opts.recipe
    params = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in best.params.items()}
    body = deep_merge(parse_overrides(opts.overrides), as_sections(params))
    if path is None:
        body = deep_merge({"model": {"name": opts.recipe}}, body)
    folds = f"{opts.folds}-fold CV" if opts.folds > 1 else "the validation split"
    description = (f"{opts.recipe} tuned by zoo tune (study {opts.study_name}, trial {best.number}, "
                   f"val accuracy {best.user_attrs['accuracy']:.4f} on {folds})")
    return yaml.safe_dump({"description": description, "base": base, **body}, sort_keys=False)


def _trainbest_trial(search: Search, best: FrozenTrial, recipe_path: Path, rep: Reporter) -> Path:
    """Train the tuned recipe on the full train split, rank it, note the study in its meta.json."""
    opts = search.opts
    recipe, _ = load_recipe(str(recipe_path))
    rep.log(f"training the best trial ({best.number}) as recipe {recipe_path}", bold=str(recipe_path))
    path = train(recipe, TrainOptions(data=opts.data, name=new_run_name(f"{opts.study_name}-tuned", opts.home),
                                      home=opts.home), rep)
    meta = read_meta(path)
    meta["study"] = {"name": opts.study_name, "storage": shown_url(opts.storage_url), "trial": best.number,
                     "score": best.value, "cv_accuracy": best.user_attrs["accuracy"],
                     "cv_nll": best.user_attrs["nll"], "folds": opts.folds, "params": best.params,
                     "recipe": str(recipe_path)}
    write_meta(path, meta)
    record(meta, opts.home)
    trained = search.study.user_attrs.get("trained", {})
    search.study.set_user_attr("trained", {**trained, str(best.number): path.name})
    return path


def finish(search: Search, rep: Reporter) -> TuneResult:
    """Write the best trial as ``<home>/recipes/<study>-tuned.yaml``, train it once (unless this
    trial was trained before) and draw the study's plots into the run's plots/."""
    from zoo.report.plots import plot_study

    opts, best = search.opts, best_trial(search.study)
    if best is None:
        raise ZooError(f"No trial of study '{opts.study_name}' has finished yet, so there is nothing to "
                       "train; run zoo tune again to continue it.")
    recipe_path = opts.home / "recipes" / f"{opts.study_name}-tuned.yaml"
    write_text(recipe_path, tuned_recipe_text(opts, best))
    earlier = search.study.user_attrs.get("trained", {}).get(str(best.number))
    if earlier in run_names(opts.home):
        rep.log(f"the best trial ({best.number}) was already trained as run {earlier}")
        path = opts.home / earlier
    else:
        path = _trainbest_trial(search, best, recipe_path, rep)
    plot_study(search.study, path / "plots")
    return TuneResult(opts.study_name, best, recipe_path, path)


def tune(opts: TuneOptions, rep: Reporter) -> TuneResult:
    """Search (in this process, or in ``--jobs`` processes), then train the best trial.
    Ctrl-C stops with the study saved (the trial in progress is marked failed)."""
    search = Search.open(opts)
    for note in search.cv.notes:
        rep.note(note)
    for number in search.abandoned:
        rep.note(f"trial {number} was left running by a process that no longer exists: marked failed")
    done = len(search.study.get_trials(deepcopy=False, states=FINISHED))
    folds = f"{opts.folds} folds of train+val" if opts.folds > 1 else "the validation split"
    rep.log(f"study {opts.study_name} ({shown_url(opts.storage_url)}): {len(search.space.dims)} keys, "
            f"{done} of {opts.trials} trials finished, scored on {folds}", bold=opts.study_name)
    timeout_s = opts.timeout_min * 60 if opts.timeout_min else None
    try:
        if opts.jobs > 1:
            run_workers(search, timeout_s)
        else:
            run_trials(search, rep, timeout_s)
    except KeyboardInterrupt:
        done = len(search.study.get_trials(deepcopy=False, states=FINISHED))
        raise ZooError(f"Interrupted. Study '{opts.study_name}' is saved with {done} finished trials in "
                       f"{shown_url(opts.storage_url)}; run the same command to continue it.",
                       exit_code=130) from None
    return finish(search, rep)
