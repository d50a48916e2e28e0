"""How far the bundled prior's own training objects for a caption lie from the one object the metrics score.

The text-to-3D metrics compare a generation of "a blue chair" with one object, the caption's canonical chair
(:func:`splatgen.world.grammar.parse_prompt`). The bundled prior learnt the caption from many chairs: the
canonical one for 20% of its objects, and variations (other leg lengths, backs, seats) for the rest
(``prior_training/data.py``). A prior that has learnt its data perfectly is a distribution over those shapes;
score distillation seeks its mode, and at the high noise levels where the shape is decided its denoiser predicts
the *average* of the shapes that agree with the noisy render. This script measures what those shapes score
against the canonical object, with the metrics' own held-out cameras and silhouette threshold:

- ``variation``: each variation object alone (what a faithful sample of the class scores; mean over objects);
- ``mean_mask``: the per-pixel average of the training mixture's masks (20% canonical, 80% variations),
  thresholded at 0.5: the "average shape" a mean-seeking distillation draws;
- for each, IoU, silhouette precision and recall (``splatgen.world.metrics``).

Where the mean mask has low precision at high recall, the class average is fatter than the canonical object, and
a generation that follows the prior's average is too (what the quality track's precision/recall show).

    python benchmarks/world_class_spread.py --out benchmarks/results/multiview/class_spread.json
    python benchmarks/world_class_spread.py --variations 4 --prompts "a blue chair" --out /tmp/cs.json  # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "suite"))
from common import environment, write_json  # noqa: E402
from quality import PROMPTS_20  # noqa: E402

from splatgen.world.grammar import make_object, parse_prompt  # noqa: E402
from splatgen.world.metrics import heldout_cameras, silhouette_iou, silhouette_precision_recall  # noqa: E402
from splatgen.world.raycast import render_world  # noqa: E402

#: the prior's training stream draws variation seeds 3 k + 0 (prior_training/data.py, STREAMS["prior"])
PRIOR_STREAM = 0
#: the fraction of the prior's objects that are the caption's canonical one (its card's "variation_seeds")
CANONICAL_FRACTION = 0.2


def scores(mask: torch.Tensor, gt: torch.Tensor) -> Dict[str, float]:
    """IoU, precision and recall of ``mask`` [V, H, W, 1] against ``gt``, averaged over views."""
    p, r = silhouette_precision_recall(mask, gt)
    return {"iou": float(silhouette_iou(mask, gt).mean()), "precision": float(p.mean()), "recall": float(r.mean())}


def spread(prompt: str, n_variations: int, n_views: int, resolution: int, supersample: int) -> Dict[str, Any]:
    canonical = parse_prompt(prompt)
    cams = heldout_cameras(n_views, resolution)
    gt = render_world(canonical, cams, supersample=supersample)["mask"]
    seeds = [3 * k + PRIOR_STREAM for k in range(1, n_variations + 1)]
    masks = [render_world(make_object(canonical.kind, canonical.colour, s), cams, supersample=supersample)["mask"]
             for s in seeds]
    each = [scores(m, gt) for m in masks]
    mixture = CANONICAL_FRACTION * gt + (1.0 - CANONICAL_FRACTION) * torch.stack(masks).mean(0)
    out: Dict[str, Any] = {"prompt": prompt, "kind": canonical.kind, "variations": len(seeds),
                           "true_area_px": float((gt > 0.5).float().sum() / len(cams))}
    for key in ("iou", "precision", "recall"):
        vals = [e[key] for e in each]
        out[f"variation_{key}"] = statistics.fmean(vals)
        out[f"variation_{key}_std"] = statistics.pstdev(vals)
    out.update({f"mean_mask_{k}": v for k, v in scores(mixture, gt).items()})
    out["mean_mask_area_ratio"] = float((mixture > 0.5).float().sum() / (gt > 0.5).float().sum().clamp_min(1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", nargs="+", default=list(PROMPTS_20))
    ap.add_argument("--variations", type=int, default=8, help="variation objects per caption")
    ap.add_argument("--views", type=int, default=16, help="held-out views (the metrics' 16)")
    ap.add_argument("--resolution", type=int, default=64, help="image side (the metrics' 64)")
    ap.add_argument("--supersample", type=int, default=2, help="the metrics' 2x2")
    args = ap.parse_args(argv)
    if args.variations < 1:
        ap.error(f"--variations must be at least 1, got {args.variations}")
    t0 = time.perf_counter()
    rows: List[Dict[str, Any]] = []
    for prompt in args.prompts:
        rows.append(spread(prompt, args.variations, args.views, args.resolution, args.supersample))
        r = rows[-1]
        print(f"{prompt:20s} variation IoU {r['variation_iou']:.3f} (P {r['variation_precision']:.2f} "
              f"R {r['variation_recall']:.2f})  mean mask IoU {r['mean_mask_iou']:.3f} (P {r['mean_mask_precision']:.2f} "
              f"R {r['mean_mask_recall']:.2f}, area x{r['mean_mask_area_ratio']:.2f})", flush=True)
    summary = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k.startswith(("variation_", "mean_mask_"))
               and not k.endswith("_std")}
    write_json(args.out, {"benchmark": "the bundled prior's training objects for each caption against the canonical "
                                       "object the metrics score (benchmarks/world_class_spread.py)",
                          **environment(), "canonical_fraction": CANONICAL_FRACTION, "seconds": time.perf_counter() - t0,
                          "mean_over_prompts": summary, "prompts": rows})
    print("mean over prompts: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
