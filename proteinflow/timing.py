"""Devices: the default choice (CUDA when present, else CPU) and wall-clock timing of their work. CUDA
runs asynchronously, so the clock is read only after :func:`synchronize` (a no-op on CPU)."""

from __future__ import annotations

import time

import torch

__all__ = ["device_seconds", "resolve_device", "synchronize"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` picks ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"--device: expected a torch device such as cpu, cuda or cuda:1, got {device!r}"
        ) from exc


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued kernels of ``device`` (CUDA only)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device_seconds(device: torch.device | str) -> float:
    """``time.perf_counter()`` read after the device's queued work has finished."""
    synchronize(device)
    return time.perf_counter()
