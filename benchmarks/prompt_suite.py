"""Text-to-3D on a public prompt list, with any guidance and loss: CLIP R-precision as DreamFusion defines it, a
previews montage and the seconds of every prompt. The benchmark for users with real weights on their disk.

    # Stable Diffusion 2.1-base and an open_clip ViT-B/32 from local files, ISM with Perp-Neg, the first 30 prompts
    python benchmarks/prompt_suite.py --out results/df-ism --config sd21 \
        guidance.model=/models/stable-diffusion-2-1-base guidance.loss=ism guidance.perp_neg=true \
        --clip ViT-B-32 --clip-pretrained /models/open_clip_vit_b32.bin --limit 30
    # what the tests run: the bundled prior and its evaluator CLIP on world prompts
    python benchmarks/prompt_suite.py --out /tmp/w --prompts world --limit 6

Prompts: ``benchmarks/prompts/dreamfusion_gallery.txt`` (default; the 415 prompts of DreamFusion's gallery as
threestudio ships them: see the file's header), any text file with one prompt per line, or ``world`` (the
20 world prompts of the suite's quality track). ``--limit N`` takes the first N, ``--sample N`` N at random
(``--seed``).

CLIP R-precision (Poole et al. 2022, DreamFusion, Sec. 4.1, after Park et al. 2021): every render of a prompt's
model is a retrieval query against the captions of *all* the prompts of the run; it is correct when its own
prompt has the highest CLIP cosine similarity (top-1, R = 1). The score of a prompt is the fraction of its
renders (``--views`` views around the object, 15 deg above the horizon) that retrieve it; the run's score is the
mean over prompts. This is retrieval among the run's prompts, not a cosine score: it is comparable only between
runs over the same prompt list. ``--clip`` names an open_clip model (``--clip-pretrained``: a tag or a local
weights file; images are resized to the model's input and normalised with its own mean and std);
``--clip bundled`` is the evaluator CLIP shipped with the bundled prior (world prompts only, 64 px).

Writes into ``--out``: ``results.json`` (environment, command, config, per prompt: seconds, R-precision, the
caption each view retrieved), ``results.csv``, ``montage.png`` (four views per prompt) and one run folder
per prompt under ``runs/`` (``--keep-runs``; otherwise only the previews are kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment  # noqa: E402

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts" / "dreamfusion_gallery.txt"


def read_prompts(source: str) -> List[str]:
    """The prompts of a file (one per line, '#' comments and blank lines skipped) or of ``world``."""
    if source == "world":
        sys.path.insert(0, str(Path(__file__).resolve().parent / "suite"))
        from quality import PROMPTS_20

        return list(PROMPTS_20)
    path = Path(source)
    if not path.is_file():
        raise SystemExit(f"prompt_suite: error: prompt list {source!r} is not a file (or 'world')")
    lines = [" ".join(l.split()) for l in path.read_text(encoding="utf-8").splitlines()]
    prompts = [l for l in lines if l and not l.startswith("#")]
    if not prompts:
        raise SystemExit(f"prompt_suite: error: {source} holds no prompts")
    return prompts


class ClipScorer:
    """Unit CLIP features of images in [0, 1] and of texts, for one open_clip model or the bundled evaluator."""

    def __init__(self, name: str, pretrained: Optional[str], device: torch.device):
        self.device = device
        if name == "bundled":
            from splatgen.guidance.text_encoders import EVALUATOR_FOLDER, load_clip_folder
            from splatgen.resources import bundled_prior_path

            self.model, self.tokenizer, _ = load_clip_folder(bundled_prior_path() / EVALUATOR_FOLDER, device)
            # The evaluator was trained on pixels in [-1, 1].
            self.mean, self.std = torch.full((3,), 0.5), torch.full((3,), 0.5)
        else:
            import open_clip

            self.model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
            self.tokenizer = open_clip.get_tokenizer(name)
            cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
            self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
            self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.model.eval()
        size = self.model.visual.image_size
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @torch.no_grad()
    def images(self, rgb: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] in [0, 1] -> [N, E] unit features."""
        x = rgb.permute(0, 3, 1, 2).float().to(self.device)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean.to(x.device)[:, None, None]) / self.std.to(x.device)[:, None, None]
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float(), dim=-1)


def retrieval(image_features: torch.Tensor, text_features: torch.Tensor, owner: torch.Tensor) -> Dict[str, torch.Tensor]:
    """DreamFusion's R-precision queries: for each image [N, E] the caption [M, E] of highest cosine similarity;
    ``correct`` where that is the image's own (``owner`` [N] indices), ``rank`` of the own caption (0: first)."""
    scores = image_features @ text_features.T
    own = scores.gather(1, owner[:, None])
    return {"top": scores.argmax(1), "correct": scores.argmax(1) == owner, "rank": (scores > own).sum(1)}


def montage(path: Path, tiles: Sequence[Any], captions: Sequence[str], per_row: int = 4) -> Path:
    """Tiles (H x 4W previews) in rows of ``per_row``, each with its caption above."""
    import numpy as np
    from PIL import Image, ImageDraw

    h, w = tiles[0].shape[:2]
    head, gap = 14, 6
    rows = (len(tiles) + per_row - 1) // per_row
    canvas = Image.new("RGB", (per_row * (w + gap), rows * (h + head + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (tile, cap) in enumerate(zip(tiles, captions)):
        x, y = (i % per_row) * (w + gap), (i // per_row) * (h + head + gap)
        draw.text((x + 2, y + 1), cap if len(cap) <= w // 6 else cap[: w // 6 - 1] + "…", fill=(0, 0, 0))
        canvas.paste(Image.fromarray(np.asarray(tile)), (x, y + head))
    canvas.save(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="a prompt file, or 'world'")
    ap.add_argument("--limit", type=int, default=None, help="the first N prompts")
    ap.add_argument("--sample", type=int, default=None, help="N prompts drawn at random (--seed)")
    ap.add_argument("--seed", type=int, default=0, help="the runs' seed and the sample's")
    ap.add_argument("--config", action="append", default=None, help="bundled config name or YAML (repeatable)")
    ap.add_argument("--clip", default=None, help="open_clip model name, or 'bundled' (default: bundled for world)")
    ap.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag or local weights file")
    ap.add_argument("--views", type=int, default=8, help="renders per prompt scored for R-precision")
    ap.add_argument("--keep-runs", action="store_true", help="keep every prompt's run folder under OUT/runs")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides (guidance, loss, steps ...)")
    args = ap.parse_args(argv)

    import splatgen
    from splatgen.components import build_guidance
    from splatgen.guidance.multiview import uses_view_words
    from splatgen.api import resolve_config
    from splatgen.trainer import preview_cameras, resolve_device

    prompts = read_prompts(args.prompts)
    if args.sample:
        prompts = random.Random(args.seed).sample(prompts, min(args.sample, len(prompts)))
    if args.limit:
        prompts = prompts[: args.limit]
    clip_name = args.clip or ("bundled" if args.prompts == "world" else None)
    if clip_name is None:
        ap.error("--clip is needed for a prompt list outside the world (an open_clip model name, e.g. ViT-B-32)")
    overrides = [*args.overrides, f"run.seed={args.seed}", "run.progress=off", "run.evaluate=false", "run.preview_views=0"]
    cfg0 = resolve_config(args.config, overrides + ["prompt=" + prompts[0]])
    device = resolve_device(cfg0.run.device)
    guidance = build_guidance(cfg0, device, keep_text_encoder=True)
    args.out.mkdir(parents=True, exist_ok=True)
    records: List[Dict[str, Any]] = []
    renders: List[torch.Tensor] = []
    tiles = []
    t_all = time.perf_counter()
    for i, prompt in enumerate(prompts):
        t0 = time.perf_counter()
        guidance.prepare_text(prompt, cfg0.guidance.negative_prompt, uses_view_words(guidance, cfg0.guidance.view_dependent))
        out_dir = args.out / "runs" / f"{i:03d}" if args.keep_runs else None
        res = splatgen.generate(prompt, config=args.config, overrides=overrides, guidance=guidance, out_dir=out_dir,
                                overwrite=True)
        wall = time.perf_counter() - t0
        with torch.no_grad():
            rgb = res.render(cameras=preview_cameras(args.views, 224, res.rep.device)).float().cpu()
            tile = res.render(cameras=preview_cameras(4, 96, res.rep.device)).float().cpu()
        renders.append(rgb)
        tiles.append((torch.cat(list(tile), dim=1).clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        records.append({"index": i, "prompt": prompt, "train_seconds": round(res.seconds, 3), "wall_seconds": round(wall, 3),
                        "num_gaussians": res.num_gaussians, "distillation": res.distillation})
        print(f"[{i + 1}/{len(prompts)}] {prompt!r}: {res.seconds:.1f} s", flush=True)
        del res
    guidance.release()

    scorer = ClipScorer(clip_name, args.clip_pretrained, device)
    text = scorer.texts(prompts)
    owner = torch.cat([torch.full((r.shape[0],), i) for i, r in enumerate(renders)]).to(text.device)
    feats = torch.cat([scorer.images(r) for r in renders])
    q = retrieval(feats, text, owner)
    for rec in records:
        sel = owner == rec["index"]
        rec["r_precision"] = float(q["correct"][sel].float().mean())
        rec["mean_rank"] = float(q["rank"][sel].float().mean())
        rec["retrieved"] = [prompts[int(j)] for j in q["top"][sel]]
    summary = {"prompts": len(prompts), "views": args.views, "r_precision": sum(r["r_precision"] for r in records) / len(records),
               "train_seconds_mean": sum(r["train_seconds"] for r in records) / len(records),
               "wall_seconds_total": round(time.perf_counter() - t_all, 2), "clip": clip_name,
               "clip_pretrained": args.clip_pretrained, "chance": 1.0 / len(prompts)}
    from splatgen.config import config_to_yaml
    from splatgen.fileio import spreadsheet_cell

    result = {"meta": {**environment(), "prompt_list": args.prompts, "config": config_to_yaml(cfg0)},
              "summary": summary, "prompts": records}
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(args.out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "prompt", "r_precision", "mean_rank", "train_seconds", "wall_seconds", "num_gaussians"])
        for r in records:
            w.writerow([r["index"], spreadsheet_cell(r["prompt"]), r["r_precision"], r["mean_rank"], r["train_seconds"], r["wall_seconds"], r["num_gaussians"]])
    montage(args.out / "montage.png", tiles, prompts)
    print(f"R-precision {summary['r_precision']:.3f} over {len(prompts)} prompts (chance {summary['chance']:.3f}); "
          f"{summary['train_seconds_mean']:.1f} s per prompt; wrote {args.out}/results.json, montage.png")
    return result


if __name__ == "__main__":
    main()
