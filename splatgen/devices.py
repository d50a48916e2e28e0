"""Which device a run uses and whether it fits there: checked before anything is built or written.

:func:`resolve_device` turns ``run.device`` into a :class:`torch.device` (refusing CUDA where there is none),
:func:`check_memory` refuses, with the numbers, a config that cannot fit in what the device has free. Both are
input checks, run once per generation before a run folder is claimed (:func:`splatgen.api.check_input`); the
device they return is handed down to the guidance and the trainer, which do not resolve it again.
"""

from __future__ import annotations

from typing import Optional

import torch

from .config import Config
from .errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU -> :class:`DeviceError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"run.device={name!r} asks for CUDA, but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}). Use run.device=cpu or "
                "run.device=auto."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"run.device={name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes free on ``device`` now (CUDA: the allocator's view; CPU: MemAvailable), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def largest_side(cfg: Config) -> int:
    """The largest render side of the run (its resolution milestones included)."""
    r = cfg.render
    return max([r.resolution] + [int(x[1]) for x in r.resolution_milestones])


def check_memory(cfg: Config, device: torch.device, need: int, size: str) -> None:
    """Refuse, with the numbers, a run that needs ``need`` bytes (its representation's
    ``estimate_memory(cfg)``; ``size``: what holds them, "Gaussians up to 40000") where ``device`` has less free."""
    free = available_memory(device)
    if free is not None and need > free:
        gib = 1024**3
        raise DeviceError(
            f"this config needs at least {need / gib:.1f} GiB on {device} ({size}, {cfg.camera.batch_size} views "
            f"of up to {largest_side(cfg)} px) but {free / gib:.1f} GiB is free; lower render.resolution, "
            "camera.batch_size, model.num_points or densify.max_gaussians"
        )
