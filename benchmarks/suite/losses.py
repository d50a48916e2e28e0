"""The score-distillation losses side by side: one results file, one picture and a previews montage from the
quality track's runs (``quality.py`` with loss methods and ``--previews``).

    python benchmarks/suite/losses.py q.jsonl --previews previews/ --out benchmarks/results/losses/ \
        [--timing timing.jsonl] [--montage-prompts 8]

For each (prior, method) and each seed it averages the final-step metrics over the prompts, then reports the
mean and the spread (sample standard deviation) of those per-seed means, so the spread says how much a
table entry moves with the seed alone. Janus is the mean over the runs whose object has a front and a back
(each run's value is the fraction of its judged held-out views that show the other side). Rows are also split
into the prior's seen and held-out kind/colour pairs. Seconds are the optimisation wall-clock of solo runs when
``--timing`` gives them (``quality.py --timing-only``), else the runs' own (inflated when runs shared a GPU;
the file says which).

Writes ``losses.json`` (everything, with the environment and commands of the runs), ``losses.csv`` (one row per
prior x method), ``losses.png`` (bars with the seed spread: IoU, PSNR, Janus, R-precision, seconds) and
``montage_<prior>.png`` (rows: prompts, columns: methods, four views each, seed 0 or ``--montage-seed``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment  # noqa: E402

METRICS = ("iou", "psnr_fg", "janus", "r_precision", "chamfer")
LABELS = {"iou": "silhouette IoU", "psnr_fg": "foreground PSNR (dB)", "janus": "Janus (lower is better)",
          "r_precision": "R-precision", "chamfer": "Chamfer (lower is better)", "seconds": "seconds per run"}


def held_out_pairs() -> set:
    """The bundled prior's held-out (kind, colour) pairs, from its model card."""
    from splatgen.prior import bundled_prior_path

    card = json.loads((bundled_prior_path() / "prior_card.json").read_text())
    return {tuple(p) for p in card.get("held_out_pairs", [])}


def read_rows(paths: Sequence[Path]) -> tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Headers and rows of quality.jsonl files; each row remembers its file (``_source``: runs of one file shared
    the GPU with each other, so their own seconds compare within the file)."""
    metas, rows = [], []
    for i, p in enumerate(paths):
        for line in Path(p).read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "meta" in r:
                metas.append({**r["meta"], "file": str(p)})
            else:
                rows.append({**r, "_source": i})
    return metas, rows


def final_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The last evaluation of every (prior, method, prompt, seed) run, timing runs and failures left out."""
    last: Dict[tuple, Dict[str, Any]] = {}
    for r in rows:
        if r.get("timing") or "error" in r or "step" not in r:
            continue
        key = (r["prior"], r["method"], r["prompt"], r["seed"])
        if key not in last or r["step"] > last[key]["step"]:
            last[key] = r
    return list(last.values())


def _mean(xs: Sequence[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def _std(xs: Sequence[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _seconds(runs: Sequence[Dict[str, Any]], solo: Dict[tuple, float], prior: str, method: str, reference: str) -> tuple:
    """A method's seconds per run: its solo timing when there is one; else its own (shared-GPU) seconds scaled by
    the reference's solo / shared ratio in the same files (runs of one pool shared the GPU alike); else its own."""
    if (prior, method) in solo:
        return solo[(prior, method)], "solo"
    mine = [r for r in runs if r["prior"] == prior and r["method"] == method]
    files = {r["_source"] for r in mine}
    ref = [r for r in runs if r["prior"] == prior and r["method"] == reference and r["_source"] in files]
    own = _mean([r["train_seconds"] for r in mine])
    if (prior, reference) in solo and ref and own is not None:
        scale = solo[(prior, reference)] / _mean([r["train_seconds"] for r in ref])
        return own * scale, f"shared GPU, scaled by {reference}'s solo/shared ratio in the same pool"
    # Seconds of runs that shared the GPU with unknown others say nothing about the method's cost: left out.
    return None, "not timed (ran only beside other runs, with no solo reference in the same pool)"


def summarise(runs: Sequence[Dict[str, Any]], seconds: Dict[tuple, float], reference: str = "sds") -> List[Dict[str, Any]]:
    """Per (prior, method): each metric's mean over prompts per seed, then mean and std over seeds; also per
    subset (seen / held-out pairs)."""
    held = held_out_pairs()
    from splatgen.world.grammar import parse_prompt

    def is_held(prompt: str) -> bool:
        o = parse_prompt(prompt)
        return (o.kind, o.colour) in held

    out = []
    for prior, method in sorted({(r["prior"], r["method"]) for r in runs}):
        mine = [r for r in runs if r["prior"] == prior and r["method"] == method]
        entry: Dict[str, Any] = {"prior": prior, "method": method, "runs": len(mine),
                                 "prompts": len({r["prompt"] for r in mine}), "seeds": sorted({r["seed"] for r in mine}),
                                 "steps": sorted({r["steps_total"] for r in mine})}
        # Seen / held-out kind-colour pairs of the bundled prior (the world's exact prior holds out nothing).
        subsets = [("all", lambda r: True)]
        if prior == "bundled":
            subsets += [("seen", lambda r: not is_held(r["prompt"])), ("held_out", lambda r: is_held(r["prompt"]))]
        for subset, pick in subsets:
            sub = [r for r in mine if pick(r)]
            if not sub:
                continue
            stats: Dict[str, Any] = {"runs": len(sub)}
            for m in METRICS:
                per_seed = [_mean([r.get(m) for r in sub if r["seed"] == s]) for s in entry["seeds"]]
                stats[m] = _mean(per_seed)
                stats[f"{m}_seed_std"] = _std(per_seed)
            entry[subset] = stats
        walls = [r["train_seconds"] for r in mine if r.get("train_seconds") is not None]
        entry["seconds_own"] = _mean(walls)
        entry["seconds"], entry["seconds_source"] = _seconds(runs, seconds, prior, method, reference)
        entry["prior_rows_per_step"] = _mean([r.get("prior_rows_per_step") for r in mine])
        entry["prior_calls_per_step"] = _mean([r.get("prior_calls_per_step") for r in mine])
        out.append(entry)
    return out


def paired(runs: Sequence[Dict[str, Any]], table: List[Dict[str, Any]], reference: str) -> None:
    """For every method, its difference from ``reference`` over the (prompt, seed) runs both have (same prior):
    the mean difference of each metric and on how many of those runs the method was better (a sign test), so
    methods with fewer runs are still compared like with like. Added to each entry as ``vs_<reference>``."""
    by = {(r["prior"], r["method"], r["prompt"], r["seed"]): r for r in runs}
    for e in table:
        if e["method"] == reference:
            continue
        pairs = [(r, by[(r["prior"], reference, r["prompt"], r["seed"])]) for r in runs
                 if r["prior"] == e["prior"] and r["method"] == e["method"]
                 and (r["prior"], reference, r["prompt"], r["seed"]) in by]
        if not pairs:
            continue
        d: Dict[str, Any] = {"pairs": len(pairs)}
        for m in METRICS:
            both = [(a.get(m), b.get(m)) for a, b in pairs if a.get(m) is not None and b.get(m) is not None]
            if not both:
                continue
            lower = m in ("janus", "chamfer")
            d[f"{m}_diff"] = _mean([a - b for a, b in both])
            d[f"{m}_better"] = sum((a < b) if lower else (a > b) for a, b in both)
            d[f"{m}_worse"] = sum((a > b) if lower else (a < b) for a, b in both)
            d[f"{m}_pairs"] = len(both)
        e[f"vs_{reference}"] = d


def solo_seconds(timing_rows: Sequence[Dict[str, Any]]) -> Dict[tuple, float]:
    """Mean final-step train seconds of the solo timing runs per (prior, method), every run counted."""
    fin = [r for r in timing_rows if r.get("timing") and not r.get("cold") and "error" not in r
           and r.get("step") == r.get("steps_total")]
    table: Dict[tuple, List[float]] = {}
    for r in fin:
        table.setdefault((r["prior"], r["method"]), []).append(r["train_seconds"])
    return {k: sum(v) / len(v) for k, v in table.items()}


def write_csv(path: Path, table: Sequence[Dict[str, Any]]) -> None:
    cols = ["prior", "method", "runs", "steps", "seconds", "seconds_source", "prior_rows_per_step"]
    for m in METRICS:
        cols += [m, f"{m}_seed_std", f"{m}_held_out", f"{m}_paired_diff"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in table:
            row = [e["prior"], e["method"], e["runs"], "/".join(map(str, e["steps"])), _r(e["seconds"]), e["seconds_source"],
                   _r(e["prior_rows_per_step"])]
            ref = next((v for k, v in e.items() if k.startswith("vs_")), {})
            for m in METRICS:
                row += [_r(e["all"].get(m)), _r(e["all"].get(f"{m}_seed_std")), _r(e.get("held_out", {}).get(m)),
                        _r(ref.get(f"{m}_diff"))]
            w.writerow(row)


def _r(v: Any, digits: int = 4) -> Any:
    return round(v, digits) if isinstance(v, float) else v


def plot(path: Path, table: Sequence[Dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priors = sorted({e["prior"] for e in table})
    colour = {m: f"C{k % 10}" for k, m in enumerate(sorted({e["method"] for e in table}))}  # one colour per method
    panels = ["iou", "psnr_fg", "janus", "r_precision", "seconds"]
    fig, axes = plt.subplots(len(priors), len(panels), figsize=(3.4 * len(panels), 3.2 * len(priors) + 0.6), squeeze=False)
    for i, prior in enumerate(priors):
        rows = [e for e in table if e["prior"] == prior]
        names = [e["method"] for e in rows]
        for j, m in enumerate(panels):
            ax = axes[i, j]
            if m == "seconds":
                vals = [e["seconds"] if e["seconds"] is not None else float("nan") for e in rows]
                errs = [0.0] * len(rows)
                for k, v in enumerate(vals):
                    if v != v:
                        ax.text(k, 0.0, "not\ntimed", ha="center", va="bottom", fontsize=6, color="grey")
            else:
                vals = [e["all"].get(m) if e["all"].get(m) is not None else float("nan") for e in rows]
                errs = [e["all"].get(f"{m}_seed_std") or 0.0 for e in rows]
            ax.bar(range(len(rows)), vals, yerr=errs, color=[colour[n] for n in names], capsize=3)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{LABELS[m]}" + (f"\n{prior} prior" if j == 0 else ""), fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            finite = [v for v in vals if v == v]
            if m in ("iou", "r_precision") and finite:
                ax.set_ylim(max(0.0, min(finite) - 0.1), min(1.0, max(finite) + 0.05))
    fig.suptitle("score-distillation losses: mean over prompts, error bars = std over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def montage(path: Path, previews: Path, prior: str, methods: Sequence[str], prompts: Sequence[str], seed: int = 0) -> Optional[Path]:
    """Rows: prompts; columns: methods; each cell the run's four views (front, side, back, side)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from quality import preview_name

    cells: Dict[tuple, Any] = {}
    for m in methods:
        for p in prompts:
            f = previews / preview_name({"prior": prior, "method": m, "prompt": p, "seed": seed})
            if f.exists():
                cells[(m, p)] = np.asarray(Image.open(f).convert("RGB"))
    if not cells:
        return None
    h, w = next(iter(cells.values())).shape[:2]
    label_w, head_h, gap = 120, 18, 6
    W = label_w + len(methods) * (w + gap)
    H = head_h + len(prompts) * (h + gap)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, m in enumerate(methods):
        draw.text((label_w + j * (w + gap) + 4, 3), m, fill=(0, 0, 0))
    for i, p in enumerate(prompts):
        y = head_h + i * (h + gap)
        draw.text((4, y + h // 2 - 6), p, fill=(0, 0, 0))
        for j, m in enumerate(methods):
            if (m, p) in cells:
                canvas.paste(Image.fromarray(cells[(m, p)]), (label_w + j * (w + gap), y))
            else:
                draw.text((label_w + j * (w + gap) + 4, y + h // 2), "(missing)", fill=(160, 0, 0))
    canvas.save(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("quality", nargs="+", type=Path, help="quality.jsonl file(s) of the loss runs")
    ap.add_argument("--timing", nargs="*", type=Path, default=[], help="solo timing runs (quality.py --timing-only)")
    ap.add_argument("--previews", type=Path, default=None, help="the --previews folder of the runs")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=None, help="columns of the montage, in order (default: all)")
    ap.add_argument("--keep", nargs="+", default=None, help="table only these methods (default: every method in the files)")
    ap.add_argument("--montage-prompts", type=int, default=10, help="rows of the montage (the first prompts)")
    ap.add_argument("--montage-seed", type=int, default=0, help="the seed whose previews the montage shows")
    ap.add_argument("--note", default=None, help="a note kept in losses.json")
    ap.add_argument("--reference", default="sds", help="the method every other is paired against")
    args = ap.parse_args(argv)

    metas, rows = read_rows(args.quality)
    tmetas, trows = read_rows(args.timing) if args.timing else ([], [])
    if args.keep:
        rows = [r for r in rows if r["method"] in args.keep]
    runs = final_rows(rows)
    table = summarise(runs, solo_seconds(trows), args.reference)
    paired(runs, table, args.reference)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": {**environment(), "report": "losses", "runs_meta": metas, "timing_meta": tmetas,
                       "note": args.note},
              "table": table, "runs": runs}
    (args.out / "losses.json").write_text(json.dumps(result, indent=1) + "\n")
    write_csv(args.out / "losses.csv", table)
    plot(args.out / "losses.png", table)
    if args.previews is not None:
        for prior in sorted({e["prior"] for e in table}):
            methods = args.methods or [e["method"] for e in table if e["prior"] == prior]
            prompts = []
            for r in runs:
                if r["prior"] == prior and r["prompt"] not in prompts:
                    prompts.append(r["prompt"])
            montage(args.out / f"montage_{prior}.png", args.previews, prior, methods, prompts[: args.montage_prompts],
                    args.montage_seed)
    for e in table:
        a = e["all"]
        print(f"{e['prior']:8s} {e['method']:22s} runs {e['runs']:3d}  IoU {_fmt(a.get('iou'))} ±{_fmt(a.get('iou_seed_std'))}  "
              f"PSNR {_fmt(a.get('psnr_fg'), 2)}  Janus {_fmt(a.get('janus'))} ±{_fmt(a.get('janus_seed_std'))}  "
              f"R@1 {_fmt(a.get('r_precision'))}  s {_fmt(e['seconds'], 2)}  rows/step {_fmt(e['prior_rows_per_step'], 1)}")
        v = e.get(f"vs_{args.reference}")
        if v:
            print(f"{'':31s} vs {args.reference} on {v['pairs']} paired runs: IoU {v.get('iou_diff', 0):+.3f} "
                  f"(better {v.get('iou_better')}, worse {v.get('iou_worse')})  Janus {v.get('janus_diff') or 0:+.3f} "
                  f"(better {v.get('janus_better')}, worse {v.get('janus_worse')} of {v.get('janus_pairs')})  "
                  f"R@1 {v.get('r_precision_diff') or 0:+.3f}")
    return result


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    main()
