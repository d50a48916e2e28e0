"""Where the silhouette IoU of a generation goes: the representation's own limit against score distillation.

For each prompt of the procedural world, three models of the same size and steps (2048 Gaussians at the start,
the default's steps and 4 views of 64 px a step), scored on the metrics' 16 held-out cameras:

- ``fit``: Gaussians fitted to ground-truth views with an L2 loss on the colour (no prior, no densification):
  what the representation, renderer and step count allow when the target is exact;
- ``world``: score distillation from the world's exact prior (``configs/world.yaml``): the distillation's own
  limit with a perfect denoiser;
- ``bundled``: score distillation from the bundled prior (the default config), what a user gets.

For each: IoU, silhouette precision and recall, the drawn area over the true area, and where the false-positive
pixels (drawn, not in the object) lie: the share within 1 and 2 pixels of the true silhouette (a rim) against
farther out (filled gaps, floaters).

    python benchmarks/world_silhouette_limit.py --out benchmarks/results/multiview/silhouette_limit_cpu.json
    python benchmarks/world_silhouette_limit.py --prompts "a red mug" --steps 8 --models fit world \\
        --out /tmp/sl.json                                                                  # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

import splatgen  # noqa: E402
from splatgen.cameras import sample_orbit_cameras  # noqa: E402
from splatgen.config import load_config  # noqa: E402
from splatgen.gaussians import GaussianModel  # noqa: E402
from splatgen.representation.gaussian import GaussianRepresentation  # noqa: E402
from splatgen.render import render  # noqa: E402
from splatgen.world.grammar import parse_prompt  # noqa: E402
from splatgen.world.metrics import heldout_cameras, silhouette_iou, silhouette_precision_recall  # noqa: E402
from splatgen.world.raycast import render_world  # noqa: E402

#: thin parts (chair, lamp, table) and solid objects with a front and a back
DEFAULT_PROMPTS = ["a blue chair", "a purple lamp", "a brown table", "a red mug", "a black penguin", "a white snowman"]
MODELS = ["fit", "world", "bundled"]


def fit_gaussians(prompt: str, steps: int, seed: int) -> GaussianModel:
    """An L2 fit of the default's initial Gaussians to ground-truth views at the default's cameras and lrs."""
    cfg = load_config(["default"])
    g = torch.Generator().manual_seed(seed)
    rep = GaussianRepresentation(cfg, torch.device("cpu"), g)  # the default's initial Gaussians and optimizer
    model, opt = rep.model, rep.optimizer
    obj = parse_prompt(prompt)
    c = cfg.camera
    bg = torch.ones(c.batch_size, 3)
    for _ in range(steps):
        cams = sample_orbit_cameras(c.batch_size, cfg.render.resolution, g, c.elevation_range, c.azimuth_range,
                                    c.radius_range, c.fovy_range)
        gt = render_world(obj, cams, supersample=2)["rgb"]
        out = render(model, cams, bg, eps2d=cfg.render.eps2d)
        loss = ((out.rgb - gt) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def silhouette_report(model: GaussianModel, prompt: str) -> Dict[str, float]:
    cams = heldout_cameras(16, 64)
    gt = render_world(parse_prompt(prompt), cams, supersample=2)["mask"]
    with torch.no_grad():
        alpha = render(model, cams, torch.ones(len(cams), 3)).alpha.float()
    p, r = silhouette_precision_recall(alpha, gt)
    a, g = alpha[..., 0].numpy() > 0.5, gt[..., 0].numpy() > 0.5
    fp = a & ~g
    dist = np.stack([ndimage.distance_transform_edt(~view) for view in g])  # pixels from the true silhouette
    n_fp = max(int(fp.sum()), 1)
    return {"iou": float(silhouette_iou(alpha, gt).mean()), "precision": float(p.mean()), "recall": float(r.mean()),
            "area_ratio": float(a.sum() / max(g.sum(), 1)),
            "fp_within_1px": float((fp & (dist <= 1)).sum() / n_fp), "fp_within_2px": float((fp & (dist <= 2)).sum() / n_fp),
            "num_gaussians": len(model)}


def one(prompt: str, kind: str, steps: int, seed: int) -> Dict[str, Any]:
    t0 = time.perf_counter()
    if kind == "fit":
        model = fit_gaussians(prompt, steps, seed)
    else:
        ov = [f"run.steps={steps}", f"run.seed={seed}", "run.evaluate=false", "run.preview_views=0", "run.progress=off"]
        model = splatgen.generate(prompt, config="world" if kind == "world" else "default", overrides=ov).rep.module
    return {"prompt": prompt, "model": kind, "seed": seed, "steps": steps, **silhouette_report(model, prompt),
            "seconds": time.perf_counter() - t0}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", nargs="+", default=DEFAULT_PROMPTS)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--steps", type=int, default=None, help="default: the default config's run.steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for p in args.prompts:
        parse_prompt(p)  # a prompt outside the world fails here, with the world's vocabulary
    steps = args.steps or load_config(["default"]).run.steps
    rows: List[Dict[str, Any]] = []
    for prompt in args.prompts:
        for kind in args.models:
            rows.append(one(prompt, kind, steps, args.seed))
            r = rows[-1]
            print(f"{prompt:18s} {kind:8s} IoU {r['iou']:.3f} P {r['precision']:.2f} R {r['recall']:.2f} "
                  f"area x{r['area_ratio']:.2f} FP within 1px {r['fp_within_1px']:.2f} ({r['seconds']:.0f} s)", flush=True)
    keys = ("iou", "precision", "recall", "area_ratio", "fp_within_1px", "fp_within_2px")
    summary = {k: {key: statistics.fmean(r[key] for r in rows if r["model"] == k) for key in keys} for k in args.models}
    write_json(args.out, {"benchmark": "silhouettes of an exact L2 fit, SDS with the exact prior and SDS with the bundled "
                                       "prior (benchmarks/world_silhouette_limit.py)", **environment(),
                          "steps": steps, "mean_over_prompts": summary, "runs": rows})
    for k, v in summary.items():
        print(f"{k:8s} " + ", ".join(f"{key} {val:.3f}" for key, val in v.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
