"""Wall-clock timing of device work: CUDA runs asynchronously, so the clock is read only after
:func:`synchronize` (a no-op on CPU)."""

from __future__ import annotations

import time

import torch

__all__ = ["device_seconds", "synchronize"]


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued kernels of ``device`` (CUDA only)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device_seconds(device: torch.device | str) -> float:
    """``time.perf_counter()`` read after the device's queued work has finished."""
    synchronize(device)
    return time.perf_counter()
