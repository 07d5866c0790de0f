"""The search space of ``zoo tune``: a recipe's ``tune:`` section, checked against the recipe
schema, sampled by an Optuna trial and applied to the recipe.

    tune:
      train.lr: {low: 5.0e-5, high: 2.0e-3, log: true}   # a range (log scale); int fields give ints
      train.epochs: {low: 4, high: 12, step: 2}           # step: optional, not with log
      data.batch_size: [16, 24, 32]                       # choices (numbers, strings, booleans, null)
      train.weight_decay: null                            # drop a key inherited from the base recipe
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from zoo.errors import ZooError
from zoo.train.recipes import Recipe, deep_merge

if TYPE_CHECKING:
    import optuna

FREE_FORM = ("model.kwargs",)  # sections whose keys the recipe schema does not list
RANGE_KEYS = {"low", "high", "log", "step"}
SCALARS = (bool, int, float, str, type(None))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Dimension:
    """One tuned recipe key: a numeric range or a list of choices."""

    key: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this dimension can sample (on the step grid, if any)."""
        if self.choices:
            return any(type(value) is type(c) and value == c for c in self.choices)
        if not _is_number(value) or not self.low <= value <= self.high:
            return False
        steps = (value - self.low) / self.step if self.step else 0.0
        return abs(steps - round(steps)) < 1e-9

    def extremes(self) -> list:
        """The values that bound what can be sampled: every choice, or both ends of the range."""
        return list(self.choices) or [self.low, self.high]


def as_sections(params: dict[str, Any]) -> dict:
    """``{"train.lr": 1e-3, "train.epochs": 5}`` -> ``{"train": {"lr": 1e-3, "epochs": 5}}``."""
    nested = [reduce(lambda inner, part: {part: inner}, reversed(key.split(".")), value)
              for key, value in params.items()]
    return reduce(deep_merge, nested, {})


def apply(recipe: Recipe, params: dict[str, Any]) -> Recipe:
    """``recipe`` with ``params`` (dotted key -> value) set, validated by the recipe schema."""
    try:
        return Recipe.model_validate(deep_merge(recipe.model_dump(), as_sections(params)))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'recipe'}: {e['msg']}" for e in exc.errors())
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ZooError(f"tune: {shown} does not make a valid recipe ({problems}).") from exc


def _current(key: str, resolved: dict) -> Any:
    """The recipe's value at dotted ``key`` (None for a free-form key that the recipe leaves out)."""
    node: Any = resolved
    done: list[str] = []
    for part in key.split("."):
        where = ".".join(done)
        if node is None:
            raise ZooError(f"tune: {key}: the recipe has no {where} section (it is null); give it "
                           f"one in the recipe, or drop the key with `{key}: null`.")
        if not isinstance(node, dict):
            raise ZooError(f"tune: {key}: {where} is a single value, not a section.")
        if part not in node:
            if where in FREE_FORM:
                return None
            close = difflib.get_close_matches(part, list(node), n=1)
            hint = f" Did you mean '{'.'.join(done + close)}'?" if close else ""
            raise ZooError(f"tune: unknown recipe key '{key}'.{hint} Keys are dotted recipe fields, "
                           "e.g. train.lr or data.batch_size (README, 'Recipes').")
        node, done = node[part], done + [part]
    if isinstance(node, (dict, list)):
        raise ZooError(f"tune: {key} is a {'section' if isinstance(node, dict) else 'list'}, not a "
                       "single value; tune one of its fields instead.")
    return node


def _range(key: str, spec: dict, current: Any) -> Dimension:
    if set(spec) - RANGE_KEYS or not {"low", "high"} <= set(spec):
        raise ZooError(f"tune: {key}: a range is {{low, high}} with optional log and step; got {spec}.")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    if not (_is_number(low) and _is_number(high) and (step is None or _is_number(step))
            and isinstance(log, bool)):
        raise ZooError(f"tune: {key}: low, high and step must be numbers and log true or false; got {spec}.")
    if low >= high:
        raise ZooError(f"tune: {key}: empty range: low ({low}) must be below high ({high}).")
    if log and (low <= 0 or step is not None):
        raise ZooError(f"tune: {key}: a log range needs low > 0 and no step; got {spec}.")
    if step is not None and not 0 < step <= high - low:
        raise ZooError(f"tune: {key}: step must be above 0 and at most high - low; got {step}.")
    if isinstance(current, str) or isinstance(current, bool):
        raise ZooError(f"tune: {key} is not a number in the recipe ({current!r}); list its choices instead.")
    integer = isinstance(current, int) if current is not None else all(
        isinstance(v, int) for v in (low, high, step or 1))
    if integer and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ZooError(f"tune: {key} is a whole number: low, high and step must be integers; got {spec}.")
    return Dimension(key, low, high, log, step, integer)


def _choices(key: str, spec: list) -> Dimension:
    if not spec:
        raise ZooError(f"tune: {key}: no choices (an empty list).")
    bad = [c for c in spec if not isinstance(c, SCALARS)]
    if bad:
        raise ZooError(f"tune: {key}: choices must be numbers, strings, true/false or null; got {bad[0]!r}.")
    if len({(type(c), c) for c in spec}) < len(spec):
        raise ZooError(f"tune: {key}: a choice is listed twice in {spec}.")
    return Dimension(key, choices=tuple(spec))


def _dimension(key: str, spec: Any, resolved: dict) -> Dimension:
    current = _current(key, resolved)
    if isinstance(spec, list):
        return _choices(key, spec)
    if isinstance(spec, dict):
        return _range(key, spec, current)
    raise ZooError(f"tune: {key}: expected a range {{low: ..., high: ...}} or a list of choices, got {spec!r}.")


@dataclass(frozen=True)
class SearchSpace:
    """A recipe and the dimensions of its ``tune:`` section (keys set to null are left out)."""

    recipe: Recipe
    dims: tuple[Dimension, ...]

    @classmethod
    def of(cls, recipe: Recipe, source: str) -> SearchSpace:
        """Parse and check ``recipe.tune``: every key exists, every range or choice list is
        well formed, and both ends of each range (every choice) make a valid recipe."""
        if recipe.train.distill is not None:
            raise ZooError(f"Recipe {source} distills from '{recipe.train.distill.teacher}', which "
                           "zoo tune cannot do: its cross-validation folds would score photos that "
                           "teacher trained on. Tune without it: --set train.distill=null.")
        resolved = recipe.model_dump(exclude={"tune"})
        dims = tuple(_dimension(str(k), spec, resolved) for k, spec in recipe.tune.items() if spec is not None)
        if not dims:
            raise ZooError(f"Recipe {source} has no search space: add a tune: section, e.g.\n"
                           "  tune:\n    train.lr: {low: 1.0e-4, high: 3.0e-3, log: true}\n"
                           "    data.batch_size: [16, 32]\n(README, 'zoo tune').")
        for dim in dims:
            for value in dim.extremes():
                apply(recipe, {dim.key: value})
        return cls(recipe, dims)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {d.key: d.suggest(trial) for d in self.dims}

    def recipe_for(self, params: dict[str, Any]) -> Recipe:
        return apply(self.recipe, params)

    def baseline(self) -> dict[str, Any]:
        """The recipe's own values of the keys whose current value the space can sample."""
        resolved = self.recipe.model_dump(exclude={"tune"})
        current = {d.key: _current(d.key, resolved) for d in self.dims}
        return {d.key: current[d.key] for d in self.dims if d.contains(current[d.key])}
