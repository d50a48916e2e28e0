"""The default generation on a 2-core CPU, alone and while another process keeps the cores busy, with torch's
thread settings varied: does it collapse, and what helps.

    python benchmarks/perf/cpu_contention.py --out benchmarks/results/perf/cpu_contention.json [--steps 60]

Each case is a fresh ``splatgen generate "a red mug"`` process (bundled prior, ``run.steps=--steps``, no
evaluation, no previews) timed end to end; the competitor is another Python process doing 2-thread matrix
products for as long as the case runs. Cases: alone; contended with torch's defaults; contended with
``OMP_NUM_THREADS=1``; ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP workers sleep instead of spinning when they wait)
and shorter libgomp spins (``GOMP_SPINCOUNT``), alone and contended. ``--cases`` picks some.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

COMPETITOR = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(1500, 1500)\n"
              "while True:\n    a = (a @ a).clamp(-1, 1)\n")


#: name -> (environment added to the generation's, whether a competitor runs beside it)
CASES = {
    "alone": ({}, False),
    "contended": ({}, True),
    "contended-1-thread": ({"OMP_NUM_THREADS": "1"}, True),
    "contended-passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, True),
    "alone-passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, False),
    # libgomp's spin before a waiting thread sleeps: 300000 by default, 1000 when threads outnumber CPUs
    "alone-spin10k": ({"GOMP_SPINCOUNT": "10000"}, False),
    "contended-spin10k": ({"GOMP_SPINCOUNT": "10000"}, True),
    "alone-spin1k": ({"GOMP_SPINCOUNT": "1000"}, False),
    "contended-spin1k": ({"GOMP_SPINCOUNT": "1000"}, True),
}


def run_case(name: str, steps: int, env_extra: dict, contended: bool, tmp: str) -> dict:
    comp = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if contended else None
    try:
        if comp is not None:
            time.sleep(2.0)  # let it reach full speed
        env = dict(os.environ, **env_extra)
        t = time.perf_counter()
        out = f"{tmp}/{name}-{time.monotonic_ns()}"
        r = subprocess.run([sys.executable, "-m", "splatgen", "generate", "a red mug", "--out", out,
                            f"run.steps={steps}", "run.evaluate=false", "run.preview_views=0", "run.progress=off"],
                           capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
    finally:
        if comp is not None:
            comp.kill()
            comp.wait()
    return {"case": name, "contended": contended, "env": env_extra, "wall_s": round(wall, 2), "returncode": r.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--cases", nargs="+", default=None, choices=sorted(CASES), help="default: all, in this order")
    args = ap.parse_args()
    names = args.cases or list(CASES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            env, contended = CASES[name]
            rows.append(run_case(name, args.steps, env, contended, tmp))
            print(rows[-1], flush=True)
            write_json(args.out, {"benchmark": "CPU generation under contention", "environment": environment(),
                                  "steps": args.steps, "rows": rows})


if __name__ == "__main__":
    main()
