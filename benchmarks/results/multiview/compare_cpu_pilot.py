import json, sys
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[2] / 'suite'))
import losses
R = str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'losses') + '/'
files = [R + 'quality_h100_b_bundled.jsonl', R + 'quality_h100_a_bundled.jsonl', R + 'quality_h100_c_bundled.jsonl', str(__import__('pathlib').Path(__file__).with_name('quality_cpu_pilot.jsonl'))]
_, rows = losses.read_rows(files)
runs = losses.final_rows(rows)
prompts = ["a red mug", "a black penguin", "a grey robot", "a white snowman", "a yellow house", "a green car"]
for m in ("sds", "pn03", "pn05", "mvcpu"):
    sel = [r for r in runs if r["method"] == m and r["seed"] == 0 and r["prompt"] in prompts and r["prior"] == "bundled"]
    if not sel:
        continue
    f = lambda k: sum(r[k] for r in sel) / len(sel)
    print(f"{m:6s} runs {len(sel)}  IoU {f('iou'):.3f}  Janus {f('janus'):.3f}  R {f('r_precision'):.3f}  PSNR {f('psnr_fg'):.2f}")
    print("       per prompt IoU/Janus:", {r["prompt"]: (round(r["iou"], 3), round(r["janus"], 3)) for r in sel})
