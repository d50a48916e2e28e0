"""Janus rate and quality per timestep schedule on the procedural world (known answers, no weights).

For every front/back prompt x timestep schedule x seed, runs ``splatgen.generate`` with the world's exact
oracle prior (``configs/world.yaml`` plus the overrides below) and scores the result against the ground
truth with :func:`splatgen.world.metrics.evaluate_gaussians` (silhouette IoU, foreground PSNR, depth error,
Chamfer distance, Janus score). Writes every run and the mean/std per schedule to one JSON file.

    python benchmarks/world_janus_tpsds.py --out benchmarks/results/world_janus_tpsds.json
    python benchmarks/world_janus_tpsds.py --steps 100 --seeds 0 --prompts "a red mug" --device cpu  # smoke

The Janus score counts held-out front/back views that look more like the opposite side of the true object
than like their own (0 = correct, ~0.5 = no front/back structure, 1 = every such view shows the wrong side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

import splatgen  # noqa: E402
from splatgen.world.grammar import FRONT_BACK_KINDS, caption_for, parse_prompt  # noqa: E402
from splatgen.world.metrics import evaluate_gaussians  # noqa: E402

DEFAULT_PROMPTS = [caption_for(k, c) for k, c in [
    ("mug", "red"), ("chair", "blue"), ("house", "yellow"), ("snowman", "red"), ("car", "green"),
    ("lamp", "purple"), ("penguin", "black"), ("teapot", "orange"), ("robot", "grey"),
]]
SCHEDULES = ["tp-sds", "uniform", "linear", "step"]
METRICS = ["iou", "psnr_fg", "depth_abs_err", "chamfer", "janus"]


def run_one(prompt: str, schedule: str, seed: int, args) -> Dict[str, Any]:
    overrides = [
        f"schedule.timestep={schedule}", f"run.seed={seed}", f"run.steps={args.steps}", f"run.device={args.device}",
        "run.evaluate=false", "run.preview_views=0", *args.override,
    ]
    t0 = time.perf_counter()
    result = splatgen.generate(prompt, config=args.config, out_dir=None, overrides=overrides)
    seconds = time.perf_counter() - t0
    metrics = evaluate_gaussians(result.rep.module, parse_prompt(prompt), n_views=args.eval_views,
                                 resolution=args.eval_resolution, backend="auto")
    return {"prompt": prompt, "schedule": schedule, "seed": seed, "seconds": round(seconds, 2),
            **{k: metrics[k] for k in METRICS}, "num_gaussians": metrics["num_gaussians"]}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for s in sorted({r["schedule"] for r in runs}):
        rows = [r for r in runs if r["schedule"] == s]
        agg: Dict[str, Any] = {"runs": len(rows)}
        for k in METRICS + ["seconds"]:
            vals = [r[k] for r in rows if r[k] is not None]
            agg[k] = {"mean": statistics.fmean(vals) if vals else None,
                      "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}
        out[s] = agg
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    p.add_argument("--schedules", nargs="+", default=SCHEDULES, choices=SCHEDULES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--config", default="world", help="bundled config name or YAML (default: the exact oracle prior)")
    p.add_argument("--device", default="auto")
    p.add_argument("--eval-views", type=int, default=16)
    p.add_argument("--eval-resolution", type=int, default=64)
    p.add_argument("--override", nargs="*", default=[], help="extra section.key=value overrides")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/world_janus_tpsds.json"))
    args = p.parse_args()
    for prompt in args.prompts:
        if parse_prompt(prompt).kind not in FRONT_BACK_KINDS:
            print(f"note: {prompt!r} has no front/back, its Janus score is None", file=sys.stderr)

    runs: List[Dict[str, Any]] = []
    for prompt in args.prompts:
        for schedule in args.schedules:
            for seed in args.seeds:
                r = run_one(prompt, schedule, seed, args)
                runs.append(r)
                print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
                write_json(args.out, {"environment": environment(), "args": vars(args) | {"out": str(args.out)},
                                      "summary": summarise(runs), "runs": runs})
    print(f"wrote {args.out}")
    for s, agg in summarise(runs).items():
        print(s, {k: (round(v["mean"], 3) if v["mean"] is not None else None) for k, v in agg.items() if isinstance(v, dict)})


if __name__ == "__main__":
    main()
