"""How well the default CPU step uses its threads: the step's time at 1 and at N threads, and each operator's
self time at both (``torch.profiler``), so the operators that do not speed up with more threads stand out.

    python benchmarks/perf/cpu_step_threads.py --out benchmarks/results/perf/cpu_step_threads.json [--threads 2]

Each thread count runs in its own process (``torch.set_num_threads`` before anything else): the default generation
of "a red mug" for ``--steps`` steps (evaluation and previews off), the median wall time of steps 10 to the end
(before the first densification at the default's 200 steps: 2,048 Gaussians), then a second run profiled over
steps 20-30. Amdahl's law on the two medians gives the serial part: with ``T1 = s + p`` and ``TN = s + p / N``,
``s = (N * TN - T1) / (N - 1)``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

CHILD = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
steps = int(sys.argv[2])
import splatgen
from torch.profiler import ProfilerActivity, profile

overrides = [f"run.steps={steps}", "run.evaluate=false", "run.preview_views=0", "run.progress=off"]
stamps = []
splatgen.generate("a red mug", overrides=overrides, on_step=lambda i, rep: stamps.append(time.perf_counter()))
gaps = [b - a for a, b in zip(stamps[10:], stamps[11:])]
prof = profile(activities=[ProfilerActivity.CPU])

def on_step(i, rep):
    if i == 20:
        prof.__enter__()
    if i == 30:
        prof.__exit__(None, None, None)

splatgen.generate("a red mug", overrides=[*overrides, "run.steps=32"], on_step=on_step)
ops = {e.key: e.self_cpu_time_total / 10 / 1000 for e in prof.key_averages()}
print("RESULT " + json.dumps({"step_ms_median": statistics.median(gaps) * 1000, "steps_timed": len(gaps), "op_self_ms_per_step": ops}))
"""


def _run(threads: int, steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps)], capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the {threads}-thread run failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2, help="N, compared with 1")
    ap.add_argument("--steps", type=int, default=60, help="steps of the timed run")
    ap.add_argument("--top", type=int, default=25, help="operators kept, by self time at N threads")
    args = ap.parse_args()
    one, many = _run(1, args.steps), _run(args.threads, args.steps)
    n, t1, tn = args.threads, one["step_ms_median"], many["step_ms_median"]
    serial = (n * tn - t1) / (n - 1)
    a, b = many["op_self_ms_per_step"], one["op_self_ms_per_step"]
    ops = sorted(a, key=lambda k: -a[k])[: args.top]
    write_json(args.out, {
        "benchmark": "thread scaling of the default CPU step",
        "environment": environment(),
        "threads": n,
        "step_ms_median": {"1": round(t1, 1), str(n): round(tn, 1)},
        "speedup": round(t1 / tn, 3),
        "serial_ms_amdahl": round(serial, 1),
        "ops": [{"op": k, f"self_ms_{n}": round(a[k], 2), "self_ms_1": round(b.get(k, 0.0), 2),
                 "speedup": round(b.get(k, 0.0) / a[k], 2) if a[k] else None} for k in ops],
    })
    print(f"step {t1:.1f} ms at 1 thread, {tn:.1f} ms at {n}: {t1 / tn:.2f}x; serial part about {serial:.0f} ms")


if __name__ == "__main__":
    main()
