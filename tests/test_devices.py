"""The CPU allocator tuning of CPU runs (``run.cpu_keep_freed_memory``): freed tensors stop costing page faults."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# A step's pattern: 24 tensors of 4 MiB allocated (every page written) and all freed, 20 times; prints the page
# faults that took. By default glibc serves them from its heap once its adaptive mmap threshold has risen to 4 MiB,
# but trims the heap's freed top (above twice that threshold) back to the kernel after each round, so every round
# faults its 96 MiB in again; with the tuning the freed top is kept and reused.
FAULTS = r"""
import json, resource, sys, torch
from splatgen.devices import keep_freed_cpu_memory
tuned = keep_freed_cpu_memory() if sys.argv[1] == "on" else False
torch.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    xs = [torch.empty(1 << 20, dtype=torch.float32).fill_(1.0) for _ in range(24)]
    del xs
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keeping_freed_memory_stops_the_page_faults_of_reallocation():
    off, on = _faults("off"), _faults("on")
    pages = 20 * 24 * (4 << 20) // 4096
    assert on["tuned"] is True and off["tuned"] is False
    assert off["faults"] > pages // 2, off  # each round's 96 MiB is given back and faulted in again
    assert on["faults"] < pages // 10, on  # the first round faults them in; the others reuse them


def test_the_trainer_tunes_only_cpu_runs_that_ask(monkeypatch, tmp_path):
    import splatgen
    import splatgen.trainer as trainer_module
    from splatgen.guidance.tiny import make_tiny_sd

    model = make_tiny_sd(tmp_path / "sd")
    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_cpu_memory", lambda: calls.append(1) or True)
    for keep in ("true", "false"):
        splatgen.generate("a red mug", overrides=[
            "guidance.type=stable-diffusion", f"guidance.model={model}", "run.steps=1", "run.evaluate=false",
            "run.preview_views=0", "model.num_points=50", "render.resolution=16", "camera.batch_size=1",
            "run.device=cpu", f"run.cpu_keep_freed_memory={keep}"])
    assert calls == [1]
