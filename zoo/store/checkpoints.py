"""A run's checkpoint checked against its ``meta.json`` from the safetensors header alone, before
any model is built: a hand-edited architecture or a checkpoint of another model is refused with a
short summary, never after allocating a model of the wrong (possibly enormous) size."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from zoo.errors import ZooError
from zoo.fileio import open_regular
from zoo.models.factory import state_shapes
from zoo.models.weights import Shapes, state_mismatch
from zoo.store.runs import WEIGHTS_MAX_BYTES

HEADER_MAX_BYTES = 16 * 2**20
SLACK = 2.0  # buffers (batch-norm statistics) on top of the parameters: far less than this


def read_header(file: Path) -> Shapes:
    """Tensor names and shapes from a safetensors header (nothing else is read)."""
    try:
        with open_regular(file, WEIGHTS_MAX_BYTES) as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > HEADER_MAX_BYTES:
                raise ValueError(f"a {size:,}-byte header")
            header = json.loads(fh.read(size))
        header.pop("__metadata__", None)
        shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}
        if not all(isinstance(d, int) and d >= 0 for shape in shapes.values() for d in shape):
            raise ValueError("a tensor with an invalid shape")
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ZooError(f"Checkpoint {file} is not a readable safetensors file ({str(exc)[:200]}). "
                       "mineral-zoo never loads pickled checkpoints; retrain the run or restore "
                       "the file.") from exc
    return shapes


def verify_checkpoint(run: Path, meta: dict) -> None:
    """Refuse ``run``'s model.safetensors unless it holds about ``meta['params']`` values (checked
    first) and exactly the tensors of ``meta``'s architecture (built on the meta device)."""
    file = run / "model.safetensors"
    found = read_header(file)
    values, params = sum(math.prod(s) for s in found.values()), meta.get("params")
    if params is not None and not params <= values <= SLACK * params:
        raise ZooError(f"Checkpoint {file} holds {values:,} values but {run / 'meta.json'} says the "
                       f"model has {params:,} parameters: one of the two files was changed. "
                       "Restore them or retrain the run.")
    try:
        expected = state_shapes(meta["model"], len(meta["classes"]), **meta.get("model_kwargs", {}))
    except ZooError as exc:
        raise ZooError(f"{run / 'meta.json'} names a model that cannot be built: {exc}") from exc
    problem = state_mismatch(expected, found)
    if problem:
        raise ZooError(f"Checkpoint {file} does not fit the model in {run / 'meta.json'} "
                       f"({meta['model']}): {problem}. Restore the files or retrain the run.")
