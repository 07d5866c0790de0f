"""Data-parallel training on several processes with plain ``torch.distributed``, launched by
torchrun (``zoo.train.launch`` runs it for ``zoo train --devices N``). Each process reads its
place (RANK, WORLD_SIZE, LOCAL_RANK) from torchrun's environment; one process alone is a
``Cluster`` of one, where every method is a no-op.

Rank 0 alone reads a run to resume and writes the run folder; the other ranks get what it read
and the run's name from it. Each rank trains on its share of every epoch (DDP averages the
gradients), scores its share of the validation photos and gathers every rank's logits, so every
rank takes the same early-stopping decisions and ends with the same weights. Collectives that
carry control data (objects, barriers, sums) run on the CPU (gloo); DDP and the gathers run on
the tensors' device (NCCL on GPUs).
"""
from __future__ import annotations

import hashlib
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn
from timm.utils import distribute_bn
from torch.nn.parallel import DistributedDataParallel

from zoo.errors import ZooError
from zoo.fileio import write_text
from zoo.models.runtime import Runtime
from zoo.train.batches import SplitArrays

T = TypeVar("T")
DIGEST_DIR_ENV = "ZOO_RANK_DIGEST_DIR"  # debug hook for tests: each rank writes its final weights' digest


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the process's number on its machine: its GPU

    @classmethod
    def from_env(cls) -> "Cluster":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder, its resume state and leaderboard row."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @contextmanager
    def session(self) -> Iterator[None]:
        """The process group, for the ``with`` block; SIGTERM (torchrun stopping the other ranks
        after one failed) interrupts like Ctrl+C, so temporary files are removed and rank 0 marks
        the run interrupted."""
        if not self.distributed:
            yield
            return
        nccl = torch.cuda.is_available() and dist.is_nccl_available()
        dist.init_process_group("cpu:gloo,cuda:nccl" if nccl else "gloo")
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
            dist.destroy_process_group()

    def runtime(self, device: str, precision: str) -> Runtime:
        """This process's device (``process_device``) and precision."""
        runtime = Runtime.create(process_device(device, self.world_size, self.local_rank), precision)
        if runtime.device.type == "cuda":
            torch.cuda.set_device(runtime.device)  # NCCL and the allocator use the current device
        return runtime

    # ---- collectives (each a no-op for one process) -----------------------------------------
    def from_main(self, make: Callable[[], T]) -> T:
        """``make()``, run by rank 0 alone, on every rank."""
        if not self.distributed:
            return make()
        box = [make() if self.main else None]
        dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.all_reduce(torch.zeros(1))  # on the CPU whatever the training device

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (decoding photos into the cache, writing the split, fetching
        weights), then the others, which find its work done."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if not self.distributed:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def shard(self, part: SplitArrays) -> SplitArrays:
        """This rank's contiguous block of a split's photos (sizes differ by one at most), so
        ``gather_rows`` of per-photo results restores the split's order."""
        if not self.distributed:
            return part
        if len(part) < self.world_size:
            raise ZooError(f"A split has {len(part)} photo(s), fewer than the {self.world_size} "
                           "training processes; use fewer --devices or more photos.")
        lo, hi = (len(part) * r // self.world_size for r in (self.rank, self.rank + 1))
        return SplitArrays(part.paths[lo:hi], part.arrays[lo:hi], part.labels[lo:hi])

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's ``rows`` concatenated in rank order, on every rank (shards may differ in
        length: each is padded to the longest for ``all_gather``, the padding dropped after)."""
        if not self.distributed:
            return rows
        size = torch.tensor([len(rows)], device=rows.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        padded = rows.new_zeros((int(max(sizes)), *rows.shape[1:]))
        padded[:len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:int(n)] for part, n in zip(parts, sizes)])

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DistributedDataParallel (gradients averaged over the ranks; rank 0's
        weights and buffers copied to every rank first); the model itself for one process.
        Batch-norm statistics then stay per rank until ``sync_batch_norm``."""
        if not self.distributed:
            return model
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       forward_sync_buffers=False)

    def sync_batch_norm(self, *models: nn.Module) -> None:
        """Average the batch-norm running statistics over the ranks (timm's ``distribute_bn``)."""
        if self.distributed:
            for model in models:
                distribute_bn(model, self.world_size, reduce=True)


def process_device(spec: str, world_size: int, local_rank: int) -> str:
    """The device of process ``local_rank`` of ``world_size``: with several processes, ``auto``
    and ``cuda`` mean this machine's GPU number LOCAL_RANK (``auto`` without a GPU: the CPU)."""
    spec = spec.strip().lower()
    if world_size == 1 or spec == "cpu":
        return spec
    if spec == "auto" and not torch.cuda.is_available():
        return "cpu"
    if spec in ("auto", "cuda"):
        return f"cuda:{local_rank}"
    raise ZooError(f"--device {spec} with {world_size} processes: each process takes its own GPU "
                   "(cuda:LOCAL_RANK); use --device cuda (or auto), or cpu.")


def lost_contact(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another process is gone (gloo
    reports it as a RuntimeError of its own)."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and "gloo" in str(exc))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def write_rank_digest(model: nn.Module, cluster: Cluster) -> None:
    """With ``ZOO_RANK_DIGEST_DIR`` set (tests only): ``rank<R>.sha256`` there, the digest of
    this rank's weights, so a test can check that every rank ended with the same model."""
    folder = os.environ.get(DIGEST_DIR_ENV)
    if not folder:
        return
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    write_text(Path(folder, f"rank{cluster.rank}.sha256"), digest.hexdigest())
