"""The shape of a run folder's JSON files (``meta.json``, ``evaluations/*.json``), checked on every
read: a damaged or hand-edited file is refused naming the file and the field, never half-used.

Files are read with a size cap and only when they are regular files (``zoo.fileio.read_text``),
so a pipe or a huge file inside a run folder cannot hang or exhaust a command.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zoo.errors import ZooError, short
from zoo.fileio import read_text

JSON_MAX_BYTES = 32 * 2**20  # meta.json holds per-class scores and notes: far below this
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

RunName = Annotated[str, Field(pattern=RUN_NAME.pattern)]
Text = Annotated[str, Field(max_length=4096)]
Fraction = Annotated[float, Field(ge=0, le=1)]


class _Checked(BaseModel):
    """Known fields are checked; others (notes, versions, ...) are kept as they are."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Scores(_Checked):
    """One split's scores (``zoo.evaluate.metrics.classification_metrics``)."""

    accuracy: Fraction
    balanced_accuracy: Optional[Fraction] = None
    macro_f1: Optional[Fraction] = None
    nll: Optional[float] = None
    ece: Optional[float] = None


class FullScores(Scores):
    """Scores of a stored evaluation: every ranked column is there."""

    balanced_accuracy: Fraction
    macro_f1: Fraction
    nll: float
    ece: float
    n: int = Field(ge=0)


class PreprocessingMeta(_Checked):
    image_size: int = Field(ge=16, le=1024)
    mean: tuple[float, float, float]
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    interpolation: Annotated[str, Field(max_length=20)] = "bicubic"
    crop_pct: float = Field(0.875, gt=0.1, le=1.5)


Finite = Annotated[float, Field(allow_inf_nan=False)]


class MemberNorm(_Checked):
    """How an ensemble puts one member's OOD score on the common scale."""

    run: RunName
    median: Finite
    threshold: Finite


class OodMeta(_Checked):
    """The unknown-mineral check of a run (``zoo.evaluate.trust``)."""

    method: Literal["knn", "mahalanobis", "energy", "maxlogit", "msp", "members"]
    threshold: Finite
    median: Finite
    known_tpr: Annotated[float, Field(gt=0, lt=1)]
    temperature: Optional[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = None
    k: Optional[int] = Field(None, ge=1, le=100_000)
    file: Optional[Literal["ood.safetensors"]] = None
    members: list[MemberNorm] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _complete(self) -> "OodMeta":
        if self.method in ("knn", "mahalanobis") and self.file is None:
            raise ValueError(f"the {self.method} score needs its feature statistics 'file'")
        if self.method == "members" and len(self.members) < 2:
            raise ValueError("an ensemble's OOD score needs its members' 'members' scales")
        return self


class TrustMeta(_Checked):
    """Thresholds fitted on validation: selective prediction and the unknown-mineral check."""

    target_precision: Annotated[float, Field(gt=0, le=1)]
    confidence_threshold: Optional[Annotated[float, Field(ge=0, le=1)]]
    fitted_on: Optional[Text] = None
    ood: Optional[OodMeta] = None


class RunMeta(_Checked):
    """``meta.json`` of a model run or an ensemble."""

    name: RunName
    kind: Literal["model", "ensemble"] = "model"
    status: Literal["running", "interrupted", "finished"]
    model: Optional[Annotated[str, Field(max_length=200)]] = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    classes: list[Annotated[str, Field(max_length=500)]] = Field(min_length=2, max_length=100_000)
    preprocessing: Optional[PreprocessingMeta] = None
    metrics: dict[Literal["val", "test"], Scores] = Field(default_factory=dict)
    members: list[RunName] = Field(default_factory=list, max_length=1000)
    params: Optional[int] = Field(None, ge=0, le=10**11)
    fit_seconds: Optional[float] = Field(None, ge=0)
    infer_img_per_s: Optional[float] = Field(None, gt=0)
    epochs_run: Optional[int] = Field(None, ge=0, le=10**6)
    dataset: Optional[Text] = None
    split_id: Optional[Text] = None
    data_root: Optional[Text] = None
    created: Optional[Text] = None
    weights_source: Optional[Text] = None
    evaluated_on: Optional[Text] = None
    trust: Optional[TrustMeta] = None
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> "RunMeta":
        if self.kind == "ensemble" and len(self.members) < 2:
            raise ValueError("an ensemble needs at least 2 members")
        if self.kind == "model" and self.status == "finished" and None in (
                self.model, self.preprocessing, self.infer_img_per_s):
            raise ValueError("a finished model run needs 'model', 'preprocessing' and 'infer_img_per_s'")
        if self.status == "finished" and set(self.metrics) != {"val", "test"}:
            raise ValueError("a finished run needs 'metrics' for 'val' and 'test'")
        return self


class StoredEvaluation(_Checked):
    """``evaluations/<name>.json``: a run scored on a folder or with test-time augmentation."""

    run: RunName
    on: Optional[Text]
    tta: bool
    views: int = Field(ge=1, le=64)
    source: Text
    created: Text
    metrics: FullScores
    val_metrics: Optional[Scores] = None
    missing: list[str] = Field(default_factory=list)
    unknown: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    unreadable: list[Any] = Field(default_factory=list)


Schema = TypeVar("Schema", bound=BaseModel)


def schema_problem(exc: ValidationError, limit: int = 3) -> str:
    """The first few field errors of ``exc``, one short line each."""
    errors = exc.errors()
    parts = [f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']} (got {short(e.get('input'))})"
             for e in errors[:limit]]
    more = f"; and {len(errors) - limit} more" if len(errors) > limit else ""
    return "; ".join(parts) + more


def read_checked(file: Path, schema: type[Schema], max_bytes: int = JSON_MAX_BYTES) -> dict:
    """The JSON object in ``file``, bounded in size and checked against ``schema``."""
    try:
        data = json.loads(read_text(file, max_bytes))
        schema.model_validate(data)
    except ValidationError as exc:
        raise ZooError(f"Run file {file} is damaged: {schema_problem(exc)}.") from exc
    except OSError as exc:
        raise ZooError(f"Run file {file} is missing or unreadable ({exc.strerror}).") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ZooError(f"Run file {file} is damaged ({str(exc)[:200]}).") from exc
    return data
