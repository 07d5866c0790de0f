"""The study storage of ``zoo tune`` (an SQLAlchemy URL: SQLite by default, PostgreSQL or MySQL to
share a study between machines) and what ``zoo tune --show`` reads from it."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo.errors import ZooError
from zoo.paths import runs_home

HEARTBEAT_S = 60  # a trial without a heartbeat for 3 intervals (a dead machine) is marked failed


def default_storage(home: Path) -> str:
    return f"sqlite:///{(home / 'tune.db').resolve()}"


def shown_url(url: str) -> str:
    """A storage URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a URL at all: shown as given, nothing to hide)
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats; SQLite waits up to a minute for a lock."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=3 * HEARTBEAT_S)
    except ImportError as exc:
        raise ZooError(f"The study storage {shown_url(url)} needs a database driver: {exc} (for "
                       "postgresql://: pip install psycopg2-binary).") from exc
    except Exception as exc:  # noqa: BLE001  (SQLAlchemy and Optuna raise many kinds)
        raise ZooError(f"Cannot open the study storage {shown_url(url)}: {exc}. --storage takes an "
                       "SQLAlchemy URL: sqlite:///path/tune.db or postgresql://user@host/db.") from exc


def quiet_optuna() -> None:
    """Trial lines come from ``trial_line``; Optuna's own log would repeat them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def load_study(name: str, url: str) -> optuna.Study:
    """An existing study, or an error listing the studies the storage holds."""
    quiet_optuna()
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ZooError(f"No study named '{name}' in {shown_url(url)}; it holds: "
                       f"{', '.join(names) or 'no studies yet'}.") from None


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None



@dataclass
class StudySummary:
    """``zoo tune --show``: every trial, the best one and the parameter importances."""

    name: str
    setup: dict
    trials: list[dict]
    best: dict | None
    importances: dict[str, float]
    importance_note: str = ""


def _row(trial: FrozenTrial) -> dict:
    end, start = trial.datetime_complete, trial.datetime_start
    seconds = (end - start).total_seconds() if end and start else None
    return {"trial": trial.number, "state": trial.state.name.lower(), "score": trial.value,
            "accuracy": trial.user_attrs.get("accuracy"), "nll": trial.user_attrs.get("nll"),
            "folds": trial.user_attrs.get("folds", []), "seconds": seconds,
            "pruned_at": trial.user_attrs.get("pruned_at"), "params": trial.params}


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances, or none and why."""
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}, "importances need at least 2 complete trials"
    try:
        return dict(optuna.importance.get_param_importances(study)), ""
    except (RuntimeError, ValueError) as exc:
        return {}, f"importances unavailable: {exc}"


def summarize(name: str, storage: str | None, home: Path | None = None) -> StudySummary:
    home = home or runs_home()
    if storage is None and not (home / "tune.db").is_file():
        raise ZooError(f"No studies in {home / 'tune.db'} yet: `zoo tune RECIPE` makes one "
                       "(or name another storage with --storage).")
    study = load_study(name, storage or default_storage(home))
    best = best_trial(study)
    found, note = importances(study)
    return StudySummary(name, study.user_attrs.get("setup", {}), [_row(t) for t in study.trials],
                        _row(best) if best else None, found, note)
