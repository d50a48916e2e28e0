"""What each score-distillation loss costs per step, by stage: the bundled prior (or any config), one process.

    python benchmarks/losses_cost.py --out benchmarks/results/losses/cost_cpu.json            # 2-core CPU
    python benchmarks/losses_cost.py --out cost_gpu.json --steps 100                          # on the GPU machine

Each method runs ``--steps`` steps of ``splatgen.generate`` with ``profile=True`` (stages synchronised and timed
separately: ``unet`` holds every prior call of the loss, ``estimator`` VSD's training of its model of the renders)
after one untimed warm-up generation, and the prior calls and rows per step each loss made are counted by the
loss itself. Ratios to SDS are the numbers to read: absolute times on a shared CPU are noisy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

METHODS: Dict[str, list] = {
    "sds": [],
    "sds+perpneg": ["guidance.perp_neg=true"],
    "csd": ["guidance.loss=csd"],
    "nfsd": ["guidance.loss=nfsd"],
    "ism": ["guidance.loss=ism"],
    "ism-k1": ["guidance.loss=ism", "guidance.ism_inversion_steps=1"],
    "vsd": ["guidance.loss=vsd", "guidance.vsd_estimator=lora"],
    "vsd-renders": ["guidance.loss=vsd", "guidance.vsd_estimator=renders"],
}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--prompt", default="a red mug")
    ap.add_argument("--config", default="default")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)

    import torch

    import splatgen

    if args.threads:
        torch.set_num_threads(args.threads)
    base = [f"run.steps={args.steps}", "run.preview_views=0", "run.evaluate=false", "run.progress=off", *args.overrides]
    splatgen.generate(args.prompt, config=args.config, overrides=base)  # warm-up: imports, caches, first compiles
    rows = {}
    for name in args.methods:
        r = splatgen.generate(args.prompt, config=args.config, overrides=base + METHODS[name], profile=True)
        rows[name] = {"s_per_step": r.seconds / args.steps, "stage_ms": {k: round(v, 2) for k, v in r.stage_ms.items()},
                      **r.distillation}
        print(f"{name:12s} {rows[name]['s_per_step'] * 1000:8.1f} ms/step  prior rows/step "
              f"{rows[name]['prior_rows_per_step']:5.1f}  unet {r.stage_ms['unet']:7.1f} ms  estimator "
              f"{r.stage_ms['estimator']:7.1f} ms", flush=True)
    ref = rows.get("sds", {}).get("s_per_step")
    for row in rows.values():
        row["x_sds"] = round(row["s_per_step"] / ref, 3) if ref else None
    result = {"meta": {**environment(), "steps": args.steps, "prompt": args.prompt, "config": args.config,
                       "threads": torch.get_num_threads()}, "methods": rows}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
