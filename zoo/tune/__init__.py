"""Tune: hyperparameter search over a recipe's ``tune:`` space with Optuna (``zoo tune``).
May import every layer up to ``zoo.train``. Optuna is an optional extra (``.[tune]``):
``require_optuna`` turns its absence into a clear error."""
from __future__ import annotations

from zoo.errors import ZooError


def require_optuna() -> None:
    """Raise a user error (exit 2) naming the install command when Optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise ZooError("zoo tune needs Optuna, an optional extra: pip install 'mineral-zoo[tune]' "
                       "(or pip install 'optuna>=4').") from exc
