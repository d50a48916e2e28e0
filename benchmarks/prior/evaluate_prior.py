"""The bundled prior's numbers: evaluator CLIP R-precision of its 2D samples (seen vs held-out pairs, per
classifier-free guidance scale), the evaluator's ceiling on ground-truth renders, and sample grids.

    python3 benchmarks/prior/evaluate_prior.py splatgen/assets/prior --out benchmarks/results/prior
    python3 benchmarks/prior/evaluate_prior.py PRIOR --out DIR --cfg 3 5 7.5 --per-caption 2 --update-card

Writes ``DIR/prior_eval.json`` and ``DIR/samples_seen.png`` / ``DIR/samples_held_out.png`` (rows: one pair;
columns: ground truth and sample, front | side | back; each ground-truth view is a fresh object of the
test stream, not the sample's object). Sampling every pair x 3 directions x 2 samples (924 images) with
DDIM-50 takes seconds on a GPU and many minutes on a CPU (use ``--pairs`` / ``--steps`` there).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: prior_training/
from common import environment, write_json  # noqa: E402

from splatgen.cameras import DIRECTIONS  # noqa: E402
from prior_training.card import add_metrics  # noqa: E402
from prior_training.data import HELD_OUT_PAIRS  # noqa: E402
from prior_training.evaluate import evaluate_prior, save_grid  # noqa: E402
from splatgen.world.captions import CaptionTable  # noqa: E402

GRID_DIRECTIONS = ("front", "side", "back")


def _grid_rows(result: dict, scale: float, pairs: list) -> torch.Tensor:
    """[len(pairs) * 6, 3, S, S]: per pair, (ground truth, first sample) for front, side, back."""
    pid, did = result["pair_ids"], result["dir_ids"]
    samples = result["samples"][scale]
    gt = result["ground_truth"]
    gt_index = {}
    n_dirs = len(GRID_DIRECTIONS)
    for i, p in enumerate(sorted(set(pid.tolist()))):
        for j, d in enumerate(GRID_DIRECTIONS):
            gt_index[(p, DIRECTIONS.index(d))] = i * n_dirs + j
    tiles = []
    for p in pairs:
        for d in GRID_DIRECTIONS:
            di = DIRECTIONS.index(d)
            k = int(((pid == p) & (did == di)).nonzero()[0])
            tiles += [gt[gt_index[(p, di)]], samples[k]]
    return torch.stack(tiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("prior", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cfg", type=float, nargs="+", default=[3.0, 5.0, 7.5], help="classifier-free guidance scales")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps")
    ap.add_argument("--per-caption", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=0, help="evaluate every n-th pair only (0: all)")
    ap.add_argument("--start", choices=["white", "noise"], default="white")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--update-card", action="store_true", help="write the numbers into the prior's card")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    table = CaptionTable()
    held = sorted(table.pair_id(k, c) for k, c in HELD_OUT_PAIRS)
    subset = None
    if args.pairs > 0:
        subset = sorted(set(range(0, table.num_pairs, args.pairs)) | set(held[:: max(1, args.pairs // 2)]))
    t0 = time.time()
    result = evaluate_prior(
        args.prior, device, per_caption=args.per_caption, steps=args.steps, guidance_scales=args.cfg, seed=args.seed,
        directions=GRID_DIRECTIONS, start=args.start, pairs_subset=subset,
    )
    metrics = result["metrics"]
    best = max(args.cfg, key=lambda s: metrics[f"samples_cfg{s:g}"]["all"]["r_precision"] or 0.0)
    metrics["best_cfg"] = best
    metrics["seconds"] = round(time.time() - t0, 1)
    card = json.loads((args.prior / "prior_card.json").read_text())
    payload = {
        "benchmark": "bundled prior: evaluator CLIP R-precision of 2D samples",
        "environment": environment(),
        "prior": str(args.prior),
        "prior_phases": card.get("phases", {}),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "metrics": metrics,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "prior_eval.json", payload)
    present = set(result["pair_ids"].tolist())
    seen_rows = []
    for k in table.kinds:  # one seen pair per kind, colours rotating
        for j in range(len(table.colours)):
            p = table.pair_id(k, table.colours[(table.kinds.index(k) + j) % len(table.colours)])
            if p in present and p not in held:
                seen_rows.append(p)
                break
    held_rows = [p for p in held if p in present]
    save_grid(_grid_rows(result, best, seen_rows), args.out / "samples_seen.png", nrow=6, scale=2)
    save_grid(_grid_rows(result, best, held_rows), args.out / "samples_held_out.png", nrow=6, scale=2)
    if args.update_card:
        summary = {
            "r_precision_protocol": metrics["protocol"],
            "evaluator_on_ground_truth": metrics["ground_truth"],
            "samples_best_cfg": best,
            "samples": {f"cfg{s:g}": metrics[f"samples_cfg{s:g}"] for s in args.cfg},
            "measured_on": payload["environment"].get("device"),
        }
        add_metrics(args.prior, summary)
    b = metrics[f"samples_cfg{best:g}"]
    print(
        f"R-precision (cfg {best:g}): all {b['all']['r_precision']}, seen {b['seen']['r_precision']}, held-out "
        f"{b['held_out']['r_precision']}; evaluator on ground truth: {metrics['ground_truth']['all']['r_precision']} "
        f"({metrics['seconds']} s) -> {args.out}"
    )


if __name__ == "__main__":
    main()
