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


def estimate_memory(cfg: Config) -> int:
    """A rough lower bound of the bytes a run needs at its largest (guidance weights not counted): the Gaussians'
    parameters with their gradients and Adam moments at the densification cap, and the renders of one step at
    the largest resolution with what autograd keeps of them. Meant to refuse sizes that cannot fit, up front."""
    m = cfg.model
    pixels = cfg.camera.batch_size * _largest_side(cfg) ** 2
    if m.type == "nerf":
        n = cfg.nerf
        samples = pixels * (n.num_steps + n.upsample_steps)
        return samples * 4 * (3 + n.num_levels * n.level_dim + 2 * n.hidden_dim) * 2
    floats = 14 + 3 * ((m.sh_degree + 1) ** 2 - 1)  # means 3, scales 3, quats 4, opacity 1, sh0 3, shN
    return _most_gaussians(cfg) * floats * 4 * 4 + pixels * 4 * 64


def _largest_side(cfg: Config) -> int:
    """The largest render side of the run (its resolution milestones included)."""
    r = cfg.render
    return max([r.resolution] + [int(x[1]) for x in r.resolution_milestones])


def _most_gaussians(cfg: Config) -> int:
    """The most Gaussians the run can hold: the initial count, or the densification cap when it densifies."""
    return max(cfg.model.num_points, cfg.densify.max_gaussians if cfg.densify.enabled else 0)


def check_memory(cfg: Config, device: torch.device) -> None:
    """Refuse, with the numbers, a config whose :func:`estimate_memory` exceeds what ``device`` has free."""
    need, free = estimate_memory(cfg), available_memory(device)
    if free is not None and need > free:
        gib = 1024**3
        raise DeviceError(
            f"this config needs at least {need / gib:.1f} GiB on {device} (Gaussians up to "
            f"{_most_gaussians(cfg)}, {cfg.camera.batch_size} views of up to {_largest_side(cfg)} px) but "
            f"{free / gib:.1f} GiB is free; lower render.resolution, camera.batch_size, model.num_points or "
            "densify.max_gaussians"
        )
