"""Cold start of ``splatgen generate "a red mug"`` (the bundled prior): where a fresh process's seconds go, and a
second prompt in the same process.

    python benchmarks/perf/cold_start.py --out benchmarks/results/perf/cold_start_h200.json [--cli-runs 2] [key=value ...]

Three measurements, each in a fresh process so nothing is warm but the OS file cache (and, for the later
runs, what caches survive a process: Triton's kernel cache, inductor's graph cache):

- ``phases``: one process that imports and generates step by step, timing each phase: ``import torch``, CUDA
  initialisation, ``import splatgen.api`` (and what it pulls in), then the phases ``generate`` reports
  (building the guidance, the rest of the setup, the first step, the other steps, export, evaluation), then a
  second prompt in the same process (what ``splatgen batch`` pays per prompt).
- ``cli``: the wall clock of ``splatgen generate "a red mug" --out ...`` as a user types it, ``--cli-runs``
  times (the first after the phases process, so caches are as a user's second command finds them).
- ``imports``: ``python -X importtime`` of ``import splatgen.api``, the 15 slowest modules (cumulative).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

PHASES_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t_torch = time.perf_counter()
if torch.cuda.is_available():
    torch.cuda.init(); torch.zeros(1, device="cuda"); torch.cuda.synchronize()
t_cuda = time.perf_counter()
import splatgen.api
t_api = time.perf_counter()
out = {"import_torch": t_torch - t0, "cuda_init": t_cuda - t_torch, "import_splatgen_api": t_api - t_cuda,
       "modules_loaded": sorted(m for m in ("diffusers", "transformers", "open_clip", "gsplat", "triton", "timm")
                                if m in sys.modules)}
folder = sys.argv[1]
overrides = json.loads(sys.argv[2])
for i, prompt in enumerate(["a red mug", "a blue chair"]):
    t = time.perf_counter()
    r = splatgen.api.generate(prompt, out_dir=f"{folder}/run{i}", overrides=overrides)
    out[f"prompt{i + 1}"] = {"wall": time.perf_counter() - t, **{k: v for k, v in r.timings.items()},
                             "train_seconds": r.seconds, "steps": r.config.run.steps,
                             "iou": (r.metrics or {}).get("iou")}
out["process_total"] = time.perf_counter() - t0
print("RESULT " + json.dumps(out))
"""


def _importtime(env) -> list:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import splatgen.api"], capture_output=True,
                       text=True, env=env)
    rows = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)) / 1e6, m.group(4).strip(), len(m.group(3))))
    top = [(s, name) for s, name, depth in rows if depth <= 3]
    return [{"module": n, "cumulative_s": round(s, 3)} for s, n in sorted(top, reverse=True)[:15]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cli-runs", type=int, default=2)
    ap.add_argument("--no-importtime", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = {"benchmark": "cold start of splatgen generate (bundled prior)", "environment": environment(),
              "overrides": args.overrides}
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-c", PHASES_CODE, tmp, json.dumps(["run.progress=off", *args.overrides])],
                           capture_output=True, text=True, env=env)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        result["phases"] = json.loads(line[7:]) if line else {"error": r.stderr[-2000:]}
        print(json.dumps(result["phases"], indent=1), flush=True)
        write_json(args.out, result)
        cli = []
        for i in range(args.cli_runs):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "splatgen", "generate", "a red mug", "--out", f"{tmp}/cli{i}",
                                "run.progress=off", *args.overrides], capture_output=True, text=True, env=env)
            cli.append({"wall_s": round(time.perf_counter() - t, 2), "returncode": r.returncode,
                        "summary": json.loads(Path(f"{tmp}/cli{i}/summary.json").read_text()).get("timings_s")
                        if r.returncode == 0 else r.stderr[-500:]})
            print(cli[-1], flush=True)
        result["cli"] = cli
    if not args.no_importtime:
        result["imports"] = _importtime(env)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
