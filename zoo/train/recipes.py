"""YAML recipes: ``base:`` inheritance, ``--set key=value`` overrides, strict validation."""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zoo.errors import UnsafeFileError, ZooError, clip, short
from zoo.fileio import read_text
from zoo.paths import runs_home

RECIPE_MAX_BYTES = 2**20  # a recipe is a few hundred bytes
MAX_VALUES = 10_000       # values once aliases are expanded: a recipe has a few hundred
MAX_ALIASES = 100
MAX_DEPTH = 32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class ModelSection(_Strict):
    name: str = Field(max_length=200)
    pretrained: bool = True
    weights: Optional[str] = Field(None, max_length=4096)  # weights file or folder; --weights overrides
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataSection(_Strict):
    image_size: int = Field(224, ge=16, le=1024)
    batch_size: int = Field(32, ge=1, le=4096)
    # Processes that augment training batches (0: in the training process); see loader_workers.
    workers: Union[int, Literal["auto"]] = "auto"

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 0):
            return value
        raise ValueError(f"must be 'auto' or a whole number >= 0 (got {value!r})")

    def loader_workers(self, cuda: bool) -> int:
        """The worker processes to use: ``workers``, or for "auto" min(8, CPUs) when training
        on CUDA and 0 on a CPU, where the model needs every core (in-process measured fastest)."""
        if self.workers != "auto":
            return self.workers
        return min(8, os.cpu_count() or 1) if cuda else 0


class EarlyStopping(_Strict):
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    mode: Optional[Literal["min", "max"]] = None  # derived from monitor when left out
    patience: int = Field(3, ge=1, le=10000)
    min_delta: float = Field(0.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _mode(self) -> "EarlyStopping":
        if self.mode is None:
            self.mode = "min" if self.monitor == "val_loss" else "max"
        return self


class WarmupStage(_Strict):
    """Frozen-backbone stage: only the new head trains (on cached features when allowed)."""

    epochs: int = Field(20, ge=1, le=10000)
    lr: float = Field(3e-3, gt=0, le=10)
    cached_features: bool = True
    views: int = Field(2, ge=1, le=32)  # augmented views per training image for cached features


class WiseFT(_Strict):
    """Weight-space ensembling of the warmed-up and the fine-tuned model (WiSE-FT, Wortsman et
    al. 2022): after fine-tuning the weights become ``(1 - alpha) * warmed_up + alpha * fine_tuned``
    with the ``alpha`` of this list that validates best (as early stopping ranks epochs; ties: the
    earlier in the list). One value fixes the mix. 0 is the warmed-up model, 1 the fine-tuned one."""

    alphas: list[float] = Field(default_factory=lambda: [round(a / 10, 1) for a in range(11)],
                                min_length=1, max_length=101)

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, value: list[float]) -> list[float]:
        if any(not 0 <= a <= 1 for a in value) or len(set(value)) < len(value):
            raise ValueError(f"must be distinct numbers from 0 to 1 (got {short(value)})")
        return value


class MixupSection(_Strict):
    """Mixup and CutMix of the fine-tuning stage's photo batches: the arguments of timm's
    ``timm.data.Mixup`` (its label smoothing is ``train.label_smoothing``)."""

    mixup_alpha: float = Field(0.0, ge=0, le=100)  # blend two photos, weight ~ Beta(alpha, alpha); 0: never
    cutmix_alpha: float = Field(0.0, ge=0, le=100)  # paste a box of one photo into another; 0: never
    prob: float = Field(1.0, gt=0, le=1)  # share of batches (photos or pairs in elem or pair mode) mixed
    switch_prob: float = Field(0.5, ge=0, le=1)  # with both alphas > 0: share of mixes that are CutMix
    mode: Literal["batch", "pair", "elem"] = "batch"  # one mix per batch, per pair, per photo

    @model_validator(mode="after")
    def _some_mixing(self) -> "MixupSection":
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("mixup_alpha and cutmix_alpha are both 0: set one above 0 (e.g. "
                             "mixup_alpha: 0.2), or train.mixup: null to mix nothing")
        return self


class DistillSection(_Strict):
    """Knowledge distillation into this recipe's model (zoo/train/distill.py): in the fine-tuning
    stage the loss is ``(1 - weight) * loss on the labels + weight * T^2 * KL(teacher || student)``,
    both softened by the temperature T. The teacher is a finished run or ensemble of the same split."""

    teacher: str = Field(min_length=1, max_length=200)  # a run or ensemble name (zoo leaderboard)
    weight: float = Field(0.5, gt=0, le=1)  # share of the loss that follows the teacher
    temperature: float = Field(1.0, gt=0, le=20)  # softens teacher and student alike (Hinton et al.)


class TrainSection(_Strict):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(5e-4, gt=0, le=10)
    weight_decay: float = Field(0.02, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    epochs: int = Field(8, ge=0, le=10000)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps_pct: float = Field(0.1, ge=0, lt=1)  # linear lr warm-up inside cosine
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    warmup: Optional[WarmupStage] = Field(default_factory=WarmupStage)
    # Fine-tune all but the first N layer groups (timm's group_matcher order: stem, then each
    # stage). Frozen early layers keep their ImageNet filters and batch-norm statistics and
    # cost no backward pass, which is most of a CPU epoch's time at full resolution.
    frozen_groups: int = Field(0, ge=0, le=1000)
    # Keep every batch-norm layer's ImageNet running statistics while fine-tuning (its scale and
    # shift still train): small batches of a small dataset give noisy batch statistics.
    freeze_bn_stats: bool = False
    # Layer-wise learning rates for fine-tuning (timm's group_matcher order): the head trains at
    # lr, each layer group before it at layer_decay times the next one's. 1.0: one lr for all.
    layer_decay: float = Field(1.0, gt=0, le=1)
    # Fine-tuning validates, keeps and saves an exponential moving average of the weights (timm
    # ModelEmaV3 with decay warm-up) instead of the raw ones; 0: off.
    ema_decay: float = Field(0.0, ge=0, lt=1)
    # Mix the fine-tuned weights with the warmed-up ones (needs the train.warmup stage); null: off.
    wise_ft: Optional[WiseFT] = None
    # Mixup / CutMix of the fine-tuning batches with soft-target cross entropy; null: off.
    mixup: Optional[MixupSection] = None
    # Class balance (zoo/train/balance.py), in every stage: sampler (each epoch draws as many
    # photos as the split has, with replacement, with probability 1 / photos of their class) or
    # loss (cross-entropy class weights n / (K * n_c); validation loss stays unweighted).
    balance: Literal["none", "sampler", "loss"] = "none"
    # Learn from a teacher's probabilities as well as the labels, in the fine-tuning stage; null: off.
    distill: Optional[DistillSection] = None
    channels_last: bool = True
    # Where to train: auto (a GPU when there is one), cpu, cuda, cuda:N or mps; --device overrides.
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?|mps)$")
    # 32 (fp32); bf16 (bf16 autocast: on CPU it helps some CNNs, e.g. resnet50, not EfficientNet);
    # 16-mixed (fp16 autocast with a gradient scaler, CUDA only).
    precision: Literal["32", "bf16", "16-mixed"] = "32"

    @model_validator(mode="before")
    @classmethod
    def _precision(cls, data: Any) -> Any:
        """``precision: 32`` may be a YAML number; ``bf16: true`` is the deprecated spelling of
        ``precision: bf16``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("precision"), int):
            data["precision"] = str(data["precision"])
        bf16 = data.pop("bf16", False)
        if bf16 not in (True, False):
            raise ValueError(f"bf16 must be true or false (got {bf16!r}); better, use precision: bf16")
        if bf16:
            if data.setdefault("precision", "bf16") != "bf16":
                raise ValueError(f"bf16: true contradicts precision: {data['precision']}; drop bf16 "
                                 "(deprecated) and keep precision")
            warnings.warn("recipe field train.bf16 is deprecated: write train.precision: bf16",
                          FutureWarning, stacklevel=2)
        return data

    @model_validator(mode="after")
    def _some_training(self) -> "TrainSection":
        if self.epochs == 0 and self.warmup is None:
            raise ValueError("nothing to train: train.epochs is 0 and there is no train.warmup stage")
        if self.wise_ft is not None and (self.warmup is None or self.epochs == 0):
            raise ValueError("wise_ft mixes the warmed-up model with the fine-tuned one: it needs a "
                             "train.warmup stage and train.epochs > 0 (or set train.wise_ft: null)")
        if self.distill is not None and self.epochs == 0:
            raise ValueError("distill teaches the fine-tuning stage: it needs train.epochs > 0 (or "
                             "set train.distill: null)")
        return self


class TrustSection(_Strict):
    """Selective prediction and unknown-mineral detection (zoo/evaluate/trust.py), fitted on the
    validation photos after training. They do not change training, so digest() leaves them out."""

    # The confidence threshold is the lowest whose precision on validation reaches this.
    target_precision: float = Field(0.95, gt=0, le=1)
    # ... with this confidence: the one-sided Clopper-Pearson lower bound of the validation
    # precision must reach the target (0: the plain ratio, which the test split often misses).
    confidence_level: float = Field(0.9, ge=0, lt=1)
    # Share of the known classes' validation photos kept below the unknown-mineral threshold.
    known_tpr: float = Field(0.95, gt=0, lt=1)
    # The OOD score (benchmarks/open_set.py compares them): knn | mahalanobis (pooled features),
    # energy | maxlogit | msp (logits).
    ood_score: Literal["knn", "mahalanobis", "energy", "maxlogit", "msp"] = "knn"
    knn_k: int = Field(5, ge=1, le=1000)  # the k-th nearest training photo (ood_score: knn)


class CalibrationSection(_Strict):
    """Temperature scaling after training (zoo/evaluate/calibration.py). It does not change
    training, so digest() leaves it out."""

    # A fixed temperature (e.g. benchmarks/recipe_cv.py's out-of-fold fit on all train+val
    # photos) instead of one fitted on the validation photos; null: fit on validation.
    temperature: Optional[float] = Field(None, ge=0.05, le=20)
    # The fitted temperature is at least this (1: it may soften, never sharpen).
    min_temperature: float = Field(0.05, ge=0.05, le=20)

    @model_validator(mode="after")
    def _fixed_above_floor(self) -> "CalibrationSection":
        if self.temperature is not None and self.temperature < self.min_temperature:
            raise ValueError(f"temperature {self.temperature} is below min_temperature "
                             f"{self.min_temperature}: lower min_temperature or raise temperature")
        return self


class Recipe(_Strict):
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    # The default train augmentation (recipes/defaults.yaml has none of its own). Minerals have no
    # up or down, so flips and quarter turns are safe; hue is a mineral's identity: keep it.
    augment: dict[str, list[dict[str, dict[str, Any]]]] = Field(default_factory=lambda: {
        "train": [{"RandomResizedCrop": {"scale": [0.35, 1.0]}}, {"HorizontalFlip": {}},
                  {"VerticalFlip": {}}, {"RandomRotate90": {}},
                  {"ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.1,
                                   "hue": 0.0}}]})
    train: TrainSection = Field(default_factory=TrainSection)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    description: str = Field("", max_length=10_000)
    # `zoo tune`'s search space: recipe key -> {low, high[, log, step]} or a list of choices
    # (checked by zoo/tune/space.py). It does not change training, so digest() leaves it out.
    tune: dict[str, Any] = Field(default_factory=dict)
    trust: TrustSection = Field(default_factory=TrustSection)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)

    @model_validator(mode="after")
    def _warmup_needs_pretrained(self) -> "Recipe":
        if self.train.epochs == 0 and not self.model.pretrained:
            raise ValueError("nothing to train: train.epochs is 0 and model.pretrained is false "
                             "(the train.warmup stage only runs on a pretrained backbone)")
        if self.train.wise_ft is not None and not self.model.pretrained:
            raise ValueError("train.wise_ft needs model.pretrained: true (it mixes in the warmed-up "
                             "pretrained model); set train.wise_ft: null")
        return self

    def digest(self) -> str:
        config = json.dumps(self.model_dump(exclude={"tune", "trust", "calibration"}), sort_keys=True)
        return hashlib.sha256(config.encode()).hexdigest()[:12]


def recipe_dirs() -> list[Path]:
    """ZOO_RECIPES, ./recipes, the run root's recipes (written by `zoo tune`), the shipped ones."""
    dirs = [Path(os.environ["ZOO_RECIPES"])] if os.environ.get("ZOO_RECIPES") else []
    return dirs + [Path("recipes"), runs_home() / "recipes", Path(__file__).resolve().parents[2] / "recipes"]


def find_recipe(name: str) -> Path | None:
    """A recipe by file path or by name in the recipe folders."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    return next((d / f"{name}.yaml" for d in recipe_dirs() if (d / f"{name}.yaml").is_file()), None)


def list_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(recipe_dirs()):
        found.update({p.stem: p for p in sorted(d.glob("*.yaml"))})
    return dict(sorted(found.items()))


def _children(node: yaml.Node, source: str) -> list[yaml.Node]:
    """A node's children; a mapping's keys must be unique (YAML would keep the last silently)."""
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if not isinstance(node, yaml.MappingNode):
        return []
    seen: set[str] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                raise ZooError(f"{source}: key {short(key.value)} appears twice "
                               f"(line {key.start_mark.line + 1}); keep one.")
            seen.add(key.value)
    return [n for pair in node.value for n in pair]


def _check_size(root: yaml.Node, source: str) -> None:
    """Refuse, before any object is built, a document that expands to more than ``MAX_VALUES``
    values (nested aliases: a "billion laughs" of a few hundred bytes), nests deeper than
    ``MAX_DEPTH``, uses more than ``MAX_ALIASES`` aliases or contains itself."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    aliases = 0

    def size(node: yaml.Node) -> int:
        nonlocal aliases
        if id(node) in sizes:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ZooError(f"{source} uses more than {MAX_ALIASES} aliases (*name); write the "
                               "values out.")
            return sizes[id(node)]
        if id(node) in open_nodes or len(open_nodes) >= MAX_DEPTH:
            raise ZooError(f"{source} nests deeper than {MAX_DEPTH} levels or contains itself "
                           f"(line {node.start_mark.line + 1}).")
        open_nodes.add(id(node))
        sizes[id(node)] = total = 1 + sum(size(child) for child in _children(node, source))
        open_nodes.discard(id(node))
        if total > MAX_VALUES:
            raise ZooError(f"{source} expands to more than {MAX_VALUES:,} values (nested aliases?); "
                           "a recipe needs a few hundred.")
        return total

    size(root)


def load_yaml(text: str, source: str) -> Any:
    """Plain data from YAML ``text``, checked for size and duplicate keys before any object is
    built (``source`` names it in messages: "Recipe x.yaml", "--set a=b")."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ZooError(f"{source} is not valid YAML; fix the line shown:\n{clip(str(exc), 1000)}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ZooError(f"{source} cannot be read: {type(exc).__name__} ({clip(str(exc), 200)}); keep "
                       "values short and nesting shallow.") from exc
    finally:
        loader.dispose()


def read_recipe_file(path: Path, what: str = "Recipe") -> dict:
    """A recipe file's mapping of sections (at most ``RECIPE_MAX_BYTES``, a regular file)."""
    try:
        data = load_yaml(read_text(path, RECIPE_MAX_BYTES), f"{what} {path}") or {}
    except UnsafeFileError as exc:
        raise ZooError(f"{what} {path} is refused: {exc.reason}.") from exc
    except UnicodeDecodeError as exc:
        raise ZooError(f"{what} {path} is not a UTF-8 text file ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise ZooError(f"Cannot read {what.lower()} {path}: {exc.strerror}.") from exc
    if not isinstance(data, dict):
        raise ZooError(f"{what} {path} must be a mapping of sections (model, data, train, ...).")
    return data


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else value
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.resolve() in seen:
        raise ZooError(f"Recipe {path} inherits from itself (base: chain {' -> '.join(map(str, seen))}).")
    data = read_recipe_file(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = find_recipe(str(base)) or (path.parent / f"{base}.yaml")
    if not base_path.is_file():
        raise ZooError(f"Recipe {path}: base '{base}' not found (looked in "
                       f"{', '.join(map(str, recipe_dirs()))}).")
    return deep_merge(_load_raw(base_path, seen + (path.resolve(),)), data)


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.lr=3e-4", "model.pretrained=false"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ZooError(f"--set {short(pair)} must look like section.field=value, e.g. --set train.lr=3e-4")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ZooError(f"--set {clip(pair)}: an earlier --set gave '{part}' a plain value; "
                               "set either the section or its fields, not both.")
        node[leaf] = load_yaml(value, f"--set {clip(pair)}")
    return out


def _section(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model of the recipe section at ``loc`` (None for free-form sections)."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        field = model.model_fields.get(str(part)) if model else None
        if field is None:
            return None
        kinds = (field.annotation, *get_args(field.annotation))
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
    return model


def _unknown_field(loc: tuple) -> str:
    """'unknown field' with the closest allowed name and the list of allowed ones."""
    section = _section(loc[:-1])
    if section is None:
        return "unknown field"
    allowed = list(section.model_fields) + (["base"] if section is Recipe else [])
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    key, colon, value = str(loc[-1]).partition(":")
    if colon and key in allowed:  # {a:1} is the YAML key 'a:1'
        hint = f"; YAML needs a space after the colon: '{key}: {value}'."
    return f"unknown field{hint} Allowed: {', '.join(allowed)}"


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"Invalid recipe {source}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: {_unknown_field(err['loc'])}")
        elif err["type"] == "value_error":
            lines.append(f"  {field}: {err['ctx']['error']}")
        else:
            lines.append(f"  {field}: {err['msg']} (got {short(err.get('input'))})")
    lines.append("The 'Recipes' section of README.md describes every field.")
    return "\n".join(lines)


def _check_model(recipe: Recipe) -> None:
    """What the schema cannot see: the model name exists (else the closest known names), its
    kwargs are allowed, the augmentation builds."""
    from zoo.data.transforms import build_train_transform
    from zoo.models.factory import check_model_kwargs, check_model_name

    try:
        check_model_name(recipe.model.name)
    except ZooError as exc:
        raise ZooError(f"field model.name: {exc}") from exc
    check_model_kwargs(recipe.model.kwargs)
    build_train_transform(recipe.augment.get("train", []), recipe.data.image_size, recipe.seed)


def validate_recipe(raw: dict, source: str) -> Recipe:
    """The recipe in ``raw`` (from ``source``), checked field by field."""
    try:
        recipe = Recipe.model_validate(raw)
        _check_model(recipe)
    except ValidationError as exc:
        raise ZooError(_format_errors(source, exc)) from exc
    except ZooError as exc:
        raise ZooError(f"Invalid recipe {source}: {exc}") from exc
    except (RecursionError, MemoryError) as exc:
        raise ZooError(f"Invalid recipe {source}: {type(exc).__name__}; keep values short and "
                       "nesting shallow.") from exc
    return recipe


def load_recipe(name: str, overrides: list[str] | None = None) -> tuple[Recipe, str]:
    """Resolve a recipe name, a YAML path, or a bare model name (registry defaults).

    Returns the validated recipe and a description of where it came from.
    """
    path = find_recipe(name)
    if path is not None:
        raw, source = _load_raw(path), str(path)
    elif name.endswith((".yaml", ".yml")):
        raise ZooError(f"Recipe file not found: {clip(name)}")
    else:
        default = find_recipe("defaults")
        raw = _load_raw(default) if default else {}
        raw = deep_merge(raw, {"model": {"name": name}})
        source = f"defaults for model {short(name)}"
    raw = deep_merge(raw, parse_overrides(overrides or []))
    shown = f"{source} (with --set {clip(' '.join(overrides), 200)})" if overrides else source
    return validate_recipe(raw, shown), source


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(), sort_keys=False)


@dataclass(frozen=True)
class ModelEntry:
    """One line of `zoo models`: a recipe (None for a registry model without one) and its model."""

    recipe: str | None
    model: str
    pretrained: bool
    weights: str            # where pretrained weights would come from (``availability``)
    image_size: int | None  # None without a recipe


def model_table() -> list[ModelEntry]:
    """Every recipe (but ``defaults``), then the registry's models that no recipe uses."""
    from zoo.models.registry import zoo_model_names
    from zoo.models.weights import availability

    entries = []
    for name in list_recipes():
        if name != "defaults":
            rec, _ = load_recipe(name)
            entries.append(ModelEntry(name, rec.model.name, rec.model.pretrained,
                                      availability(rec.model.name), rec.data.image_size))
    used = {e.model for e in entries}
    return entries + [ModelEntry(None, m, False, availability(m), None)
                      for m in zoo_model_names() if m not in used]
