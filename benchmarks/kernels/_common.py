"""Shared helpers of the kernel benchmarks: environment facts, copy bandwidth, timing, result files."""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[2]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
"""The benchmarks are meant for CUDA; on a CPU (with TRITON_INTERPRET=1 and --smoke) they only check that
every code path runs."""
DEFAULT_OUT = REPO / "benchmarks" / "results" / "kernels"


def ensure_importable() -> None:
    """Make ``splatgen`` and ``splatgen_kernels`` importable from a plain checkout (no ``pip install -e .``):
    the kernels live in ``triton_kernels/`` and are only *installed* under the name ``splatgen_kernels``."""
    import importlib.util

    if importlib.util.find_spec("splatgen") is None:
        sys.path.insert(0, str(REPO))
    if importlib.util.find_spec("splatgen_kernels") is None:
        spec = importlib.util.spec_from_file_location(
            "splatgen_kernels", REPO / "triton_kernels" / "__init__.py", submodule_search_locations=[str(REPO / "triton_kernels")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["splatgen_kernels"] = module
        spec.loader.exec_module(module)


ensure_importable()


def environment() -> Dict[str, Any]:
    env: Dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["device"] = p.name
        env["device_memory_GiB"] = round(p.total_memory / 2**30, 1)
        env["sms"] = p.multi_processor_count
        env["cuda"] = torch.version.cuda
    else:
        env["device"] = f"CPU ({platform.machine()})"
    for mod in ("triton", "gsplat"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # not installed on that machine
            env[mod] = None
    return env


def do_bench_ms(fn: Callable[[], Any]) -> float:
    """Median milliseconds of ``fn`` with ``triton.testing.do_bench`` (flushes L2 between runs: cold-cache HBM
    numbers, what a training step sees after the UNet has run)."""
    if DEVICE != "cuda":
        return wall_ms(lambda _: fn(), lambda: None, reps=3, warmup=1)["median_ms"]
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])[0])


def copy_bandwidth_GBps(nbytes: int = 2**30) -> float:
    """Device-to-device copy bandwidth, counting read + write (bytes = 2 * size), measured now."""
    if DEVICE != "cuda":
        nbytes = 2**24
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=DEVICE).normal_()
    dst = torch.empty_like(src)
    ms = do_bench_ms(lambda: dst.copy_(src))
    del src, dst
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def wall_ms(fn: Callable[[Any], Any], setup: Callable[[], Any], reps: int, warmup: int = 2) -> Dict[str, float]:
    """Median / min wall-clock milliseconds of ``fn(setup())`` with the device synchronised around each call.

    For ops with host synchronisations inside (densification): CUDA-event timing would hide host gaps that
    a training step does pay. ``setup`` (not timed) rebuilds the inputs the op consumes.
    """
    times: List[float] = []
    for i in range(warmup + reps):
        arg = setup()
        _sync()
        t0 = time.perf_counter()
        fn(arg)
        _sync()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
        del arg
    return {"median_ms": statistics.median(times), "min_ms": min(times), "reps": reps}


def write_results(out: Path, name: str, meta: Dict[str, Any], rows: List[Dict[str, Any]], extra: Optional[Dict[str, Any]] = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": rows, **(extra or {})}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    keys: List[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out / (name + '.json')} and .csv")
