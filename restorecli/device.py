"""Device choice and the autocast policy."""

from __future__ import annotations

import contextlib

import torch

from restorecli.errors import UsageError


def choose_device(request: str = "auto") -> torch.device:
    """Pick CUDA, then Apple MPS, then CPU for 'auto'; check that an explicit request exists."""
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(request)
    except RuntimeError as error:
        raise UsageError(f"invalid --device {request!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {request} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {request}: only {torch.cuda.device_count()} CUDA device(s); pick a lower index")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {request} requested but MPS is not available; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"invalid --device {request!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA only; fp16 is never used because it overflows under the JVP."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(threads: int) -> None:
    """Set torch's CPU thread count; 0 keeps torch's default (one per core)."""
    if threads > 0:
        torch.set_num_threads(threads)
