"""Shared bits of the benchmarks: environment facts written beside every result."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host_cpus": __import__("os").cpu_count(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["device"] = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs)"
        env["cuda"] = torch.version.cuda
    else:
        env["device"] = f"CPU ({platform.processor() or platform.machine()})"
    for mod in ("triton", "gsplat", "diffusers", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # not installed there
            env[mod] = None
    try:
        env["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        env["git"] = None
    return env


def write_json(path: Path, payload: Dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str = "cuda", dtype=torch.bfloat16, n: int = 8192, reps: int = 10) -> float:
    """Measured dense matmul TFLOP/s on random data (the ceiling a stage's FLOP rate is compared with); on the CPU
    a small product, for smoke runs."""
    if torch.device(device).type != "cuda":
        n, reps = 512, 3
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def time_train_steps(trainer, warmup: int, steps: int) -> Dict[str, Any]:
    """A trainer's SDS step timed: the first step alone (its one-off costs), ``warmup - 1`` more, ``steps`` timed end
    to end, then ``steps`` more timed stage by stage (the device synchronised around each stage). Returns
    ``first_step_s``, ``ms_per_step`` and ``stage_ms`` (render with its backward, encoder forward + backward,
    UNet, SDS, optimizer, densify)."""
    from splatgen.trainer import STAGES

    dev = trainer.device
    sync(dev)
    t = time.perf_counter()
    trainer.train_step(0)
    sync(dev)
    first = time.perf_counter() - t
    for step in range(1, warmup):
        trainer.train_step(step)
    sync(dev)
    t = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.train_step(step)
    sync(dev)
    ms = 1000 * (time.perf_counter() - t) / steps
    trainer.timer.enabled = True
    trainer.timer.totals = {s: 0.0 for s in STAGES}
    for step in range(warmup + steps, warmup + 2 * steps):
        trainer.train_step(step)
    st = {k: 1000 * v / steps for k, v in trainer.timer.totals.items()}
    return {"first_step_s": round(first, 2), "ms_per_step": round(ms, 2),
            "stage_ms": {"render": round(st["render"] + st["backward_render"], 2),
                         "encoder": round(st["vae"] + st["backward_vae"], 2), "unet": round(st["unet"], 2),
                         "sds": round(st["sds"], 2), "optimizer": round(st["optimizer"], 2),
                         "densify": round(st["densify"], 2)}}
