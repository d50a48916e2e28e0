"""The shipped multi-view prior against the world's exact prior, both with SDS, on the same prompts and seeds.

    python benchmarks/results/multiview/compare_world.py     (prints compare_world.txt)

The exact prior's rows are the losses issue's call b (H100, the 10-prompt set, 25 of its 30 runs finished), the
multi-view prior's the shipped 250-step rows (H100, guidance scale 7.5); only the (prompt, seed) runs both have.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "suite"))
import losses  # noqa: E402

L = HERE.parent / "losses"
_, rows = losses.read_rows([str(L / "quality_h100_b_world.jsonl"), str(L / "quality_h100_b_bundled.jsonl"),
                            str(HERE / "quality_shipped_h100.jsonl")])
runs = losses.final_rows(rows)
sets = {"world exact prior, SDS": ("world", "sds"), "multi-view prior, 250 steps": ("bundled", "mv-250"),
        "single-view prior, 300 steps": ("bundled", "sds")}
by = {name: {(r["prompt"], r["seed"]): r for r in runs if (r["prior"], r["method"]) == key} for name, key in sets.items()}
common = sorted(set.intersection(*(set(v) for v in by.values())))
print(f"{len(common)} runs that all three have ({len({p for p, _ in common})} prompts)")
for name, d in by.items():
    mean = lambda k: sum(d[c][k] for c in common if d[c][k] is not None) / max(1, sum(d[c][k] is not None for c in common))  # noqa: E731
    print(f"{name:30s} IoU {mean('iou'):.3f}  PSNR {mean('psnr_fg'):.2f}  Janus {mean('janus'):.3f}  R {mean('r_precision'):.3f}")
print("IoU per prompt (world / multi-view / single-view):")
for p in sorted({p for p, _ in common}):
    vals = [sum(by[n][c]["iou"] for c in common if c[0] == p) / sum(c[0] == p for c in common) for n in by]
    print(f"  {p:18s} " + " / ".join(f"{v:.3f}" for v in vals))
