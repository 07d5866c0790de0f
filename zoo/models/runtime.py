"""Where and how a model runs: the device and the numeric precision, as one value passed into
training and inference loops (as timm's ``train.py`` passes ``device`` and ``amp_autocast``).

``resolve_device("auto")`` picks CUDA, else MPS, else the CPU; asking for a device that is not
there is a clear error naming what is. ``Runtime.autocast()`` is the one autocast context every
loop uses; ``Runtime.grad_scaler()`` is the fp16 gradient scaler (CUDA only).
"""
from __future__ import annotations

import platform
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager

import torch

from zoo.errors import ZooError

PRECISIONS = ("32", "bf16", "16-mixed")
_DTYPES = {"bf16": torch.bfloat16, "16-mixed": torch.float16}


def available_devices() -> list[str]:
    """Device names this machine has, CPU last."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names + ["cpu"]


def resolve_device(spec: str | None = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` as a device this machine has."""
    spec = (spec or "auto").strip().lower()
    have = available_devices()
    if spec == "auto":
        return torch.device(have[0])
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ZooError(f"Unknown device '{spec}': use auto, cpu, cuda, cuda:N or mps (this machine "
                       f"has: {', '.join(have)}).") from exc
    name = "cuda:0" if spec == "cuda" else str(device)
    if device.type not in ("cpu", "cuda", "mps") or name not in have:
        raise ZooError(f"Device '{spec}' is not available here; this machine has: "
                       f"{', '.join(have)}. Use --device auto (or one of those).")
    return device


def device_name(device: torch.device) -> str:
    """A human name for the device (the GPU's model, or the CPU's architecture)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


@dataclass(frozen=True)
class Runtime:
    """A device and a precision: ``32`` (fp32), ``bf16`` (bf16 autocast) or ``16-mixed`` (fp16
    autocast with a gradient scaler, CUDA only)."""

    device: torch.device = torch.device("cpu")
    precision: str = "32"

    @classmethod
    def create(cls, device: str | None = "auto", precision: str = "32", tf32: bool = True) -> "Runtime":
        """A checked runtime; on CUDA, TF32 matmuls and convolutions (Ampere and newer) unless
        ``tf32=False`` (export compares against true fp32)."""
        runtime = cls(resolve_device(device), str(precision))
        runtime.check()
        if runtime.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        return runtime

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ZooError(f"Unknown precision '{self.precision}': use {', '.join(PRECISIONS)}.")
        if self.precision == "16-mixed" and self.device.type != "cuda":
            raise ZooError(f"precision 16-mixed (fp16 with a gradient scaler) needs a CUDA GPU; "
                           f"on {self.device.type} use 32 or bf16.")

    def move(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this device; from pinned memory the copy to a GPU overlaps compute."""
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")

    def autocast(self) -> ContextManager:
        """The autocast context of this precision on this device (a no-op for fp32)."""
        if self.precision == "32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 needs loss scaling; for other precisions the scaler is disabled (a pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")

    def describe(self) -> dict:
        """What a run's meta.json records about where it ran."""
        return {"device": str(self.device), "device_name": device_name(self.device),
                "precision": self.precision}
