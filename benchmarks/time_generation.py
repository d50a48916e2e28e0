"""Whole generations (``splatgen.generate``): wall-clock time and ground-truth metrics per prompt and seed.

    python benchmarks/time_generation.py --prompts "a red mug" --out benchmarks/results/prior/default_generation_cpu.json
    python benchmarks/time_generation.py --prompts "a red mug" "a blue chair" --seeds 0 1 --out quality.json

Uses the bundled default config unless ``--config`` says otherwise; ``key=value`` overrides may follow. ``--profile``
also records the mean milliseconds of each stage of a step (render, UNet, backward passes...; on a GPU it synchronises
after each stage, which costs a little). The
time covers everything the command does: loading the prior, the optimisation, writing the run folder,
previews and the evaluation (IoU, PSNR, depth, Chamfer, Janus, evaluator R-precision for world prompts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

import splatgen  # noqa: E402

SUMMARISED = ("iou", "psnr_fg", "chamfer", "janus", "r_precision")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", nargs="+", default=["a red mug"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--profile", action="store_true", help="record each step stage's mean milliseconds (stage_ms)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    runs = []
    for prompt in args.prompts:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                result = splatgen.generate(prompt, config=args.config, out_dir=Path(tmp) / "run",
                                           overrides=[*args.overrides, f"run.seed={seed}"], profile=args.profile)
                total = time.perf_counter() - t0
            m = result.metrics or {}
            runs.append({
                "prompt": prompt, "seed": seed, "total_seconds": round(total, 2),
                "optimisation_seconds": round(result.seconds, 2), "steps": result.config.run.steps,
                "views_per_step": result.config.camera.batch_size, "num_gaussians": result.num_gaussians,
                "phases_seconds": {k: round(v, 2) for k, v in result.timings.items()},
                **({"stage_ms": {k: round(v, 1) for k, v in result.stage_ms.items()}} if args.profile else {}),
                **{k: m.get(k) for k in SUMMARISED},
            })
            print(runs[-1], flush=True)
            summary = {k: statistics.fmean(v) if (v := [r[k] for r in runs if r[k] is not None]) else None
                       for k in (*SUMMARISED, "total_seconds")}
            write_json(args.out, {"benchmark": "whole generations", "environment": environment(),
                                  "config": args.config or "default", "overrides": args.overrides,
                                  "summary": summary, "runs": runs})
    print("mean:", summary)


if __name__ == "__main__":
    main()
