"""The CPU pilots of the multi-view prior beside the shipped prior's H100 rows: the six front/back prompts, seed 0.

    python benchmarks/results/multiview/compare_cpu_pilot.py     (prints compare_cpu_pilot.txt)
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "suite"))
import losses  # noqa: E402

L = HERE.parent / "losses"
files = [L / "quality_h100_b_bundled.jsonl", L / "quality_h100_a_bundled.jsonl", L / "quality_h100_c_bundled.jsonl",
         HERE / "quality_cpu_pilot.jsonl", HERE / "quality_gated_cpu_pilot.jsonl",
         HERE / "quality_gated678_cpu_pilot.jsonl", HERE / "quality_gated_lr15_cpu_pilot.jsonl"]
_, rows = losses.read_rows([str(f) for f in files if f.exists()])
runs = losses.final_rows(rows)
prompts = ["a red mug", "a black penguin", "a grey robot", "a white snowman", "a yellow house", "a green car"]
for m in ("sds", "pn03", "pn05", "mvcpu", "mvgcpu", "mvgcpu678", "mvglr"):
    sel = [r for r in runs if r["method"] == m and r["seed"] == 0 and r["prompt"] in prompts and r["prior"] == "bundled"]
    if not sel:
        continue
    f = lambda k: sum(r[k] for r in sel) / len(sel)  # noqa: E731
    print(f"{m:6s} runs {len(sel)}  IoU {f('iou'):.3f}  Janus {f('janus'):.3f}  R {f('r_precision'):.3f}  PSNR {f('psnr_fg'):.2f}")
    print("       per prompt IoU/Janus:", {r["prompt"]: (round(r["iou"], 3), round(r["janus"], 3)) for r in sel})
