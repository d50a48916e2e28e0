"""Which device a run uses and whether it fits there: checked before anything is built or written.

:func:`resolve_device` turns ``run.device`` into a :class:`torch.device` (refusing CUDA where there is none),
:func:`check_memory` refuses, with the numbers, a config that cannot fit in what the device has free. Both are
input checks, run once per generation before a run folder is claimed (:func:`splatgen.api.check_input`); the
device they return is handed down to the guidance and the trainer, which do not resolve it again.
:func:`keep_freed_cpu_memory` tunes glibc's allocator for the CPU's training loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

import torch

from .config import Config
from .errors import DeviceError


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: the largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2)
_MMAP_MAX = 32 << 20
_malloc_tuned: Optional[bool] = None


def keep_freed_cpu_memory() -> bool:
    """Let glibc keep the memory a training step frees for the next step instead of giving it back to the kernel.

    PyTorch's CPU tensors come from ``malloc``. glibc's adaptive defaults serve blocks above a threshold (128 KiB,
    rising to the largest block freed, at most 32 MiB) with fresh ``mmap`` pages, and trim its heap's freed top
    back to the kernel once it exceeds twice that threshold; a step frees tens of MiB of intermediate tensors, so
    each step faults in and zeroes them again. Fixed values (mmap threshold 32 MiB, trim threshold 256 MiB, 64 MiB
    of top padding; all three, since setting any one of them turns the adaptation off) keep them: an 80-step
    default run on a 2-core CPU took 0.22 million page faults instead of 0.90-0.93 million, and the whole default
    generation 7.7 instead of 9.9 s of system time, 0.7% less wall time (``benchmarks/results/perf/cpu_malloc.json``;
    a small lever: the step's time is arithmetic). Process-wide and
    idempotent; a no-op (returning False) where the C library is not glibc. Called by the trainer for CPU runs
    (``run.cpu_keep_freed_memory``)."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = getattr(libc, "mallopt", None)
                if mallopt is not None and hasattr(libc, "gnu_get_libc_version"):
                    _malloc_tuned = all(mallopt(param, value) == 1 for param, value in (
                        (_M_MMAP_THRESHOLD, _MMAP_MAX), (_M_TRIM_THRESHOLD, 256 << 20), (_M_TOP_PAD, 64 << 20)))
            except OSError:
                pass
    return _malloc_tuned


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
