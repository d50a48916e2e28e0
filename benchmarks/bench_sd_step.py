"""Milliseconds per SDS step with Stable-Diffusion-2.1-base-shaped guidance, split by stage, and peak memory.

UNet and VAE are built from SD 2.1-base's configs with random weights (the cost of the real model), text
embeddings are random 77 x 1024 tensors. The trainer runs unchanged on the gsplat backend at 512 x 512.

    python benchmarks/bench_sd_step.py --out benchmarks/results/sd_step.json

For each batch size: ``--warmup`` steps, then ``--steps`` steps timed stage by stage (CUDA synchronised
around each stage), then ``--steps`` more timed end to end without the per-stage synchronisation (the real
step time). Densification runs inside the timed window (every ``--densify-every`` steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

from splatgen.config import load_config  # noqa: E402
from splatgen.guidance.tiny import build_sd21_shaped  # noqa: E402
from splatgen.trainer import STAGES, Trainer  # noqa: E402


def bench_batch(guidance, batch: int, args) -> dict:
    total = args.warmup + 2 * args.steps
    cfg = load_config(
        [],
        [
            "guidance.type=stable-diffusion", "guidance.model=sd21-base-shaped", "guidance.guidance_scale=100",
            f"render.backend={args.backend}", f"render.resolution={args.resolution}", "render.background=random",
            f"camera.batch_size={batch}", f"run.steps={total}", "run.evaluate=false", "run.preview_views=0",
            f"model.num_points={args.num_points}", "densify.start=0.0", "densify.stop=1.0",
            f"densify.every={args.densify_every}", f"densify.max_gaussians={args.max_gaussians}",
            f"densify.backend={args.kernels}",
        ],
    )
    cfg.prompt = "a benchmark prompt"
    trainer = Trainer(cfg, guidance, profile=True)
    for step in range(args.warmup):
        trainer.train_step(step)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    trainer.timer.totals = {s: 0.0 for s in STAGES}
    for step in range(args.warmup, args.warmup + args.steps):
        trainer.train_step(step)
    torch.cuda.synchronize()
    stage_ms = {k: 1000.0 * v / args.steps for k, v in trainer.timer.totals.items()}
    trainer.timer.enabled = False
    t0 = time.perf_counter()
    for step in range(args.warmup + args.steps, total):
        trainer.train_step(step)
    torch.cuda.synchronize()
    step_ms = 1000.0 * (time.perf_counter() - t0) / args.steps
    grouped = {
        "render": stage_ms["render"] + stage_ms["backward_render"],
        "vae": stage_ms["vae"] + stage_ms["backward_vae"],
        "unet": stage_ms["unet"],
        "sds": stage_ms["sds"],
        "optimizer": stage_ms["optimizer"],
        "densify": stage_ms["densify"],
    }
    return {
        "views": batch,
        "resolution": args.resolution,
        "ms_per_step": round(step_ms, 2),
        "ms_per_step_profiled": round(sum(stage_ms.values()), 2),
        "stage_ms": {k: round(v, 2) for k, v in grouped.items()},
        "stage_ms_detail": {k: round(v, 2) for k, v in stage_ms.items()},
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3),
        "num_gaussians_end": len(trainer.model),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sd_step.json"))
    ap.add_argument("--views", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=30, help="untimed steps; include a densification so Triton compiles first")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--num-points", type=int, default=50_000)
    ap.add_argument("--max-gaussians", type=int, default=200_000)
    ap.add_argument("--densify-every", type=int, default=25)
    ap.add_argument("--backend", default="gsplat")
    ap.add_argument("--kernels", default="auto", help="densify/SDS kernels: auto, torch or triton")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    torch.cuda.reset_peak_memory_stats()
    guidance = build_sd21_shaped("cuda", dtype)
    weights_gib = torch.cuda.memory_allocated() / 2**30
    rows = [bench_batch(guidance, b, args) for b in args.views]
    payload = {
        "benchmark": "sd21-base-shaped SDS step",
        "environment": environment(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model_weights_gib": round(weights_gib, 3),
        "targets": {"ms_per_step_1_view": 45, "ms_per_step_4_views": 120, "peak_gib": 8},
        "results": rows,
    }
    write_json(args.out, payload)
    print(f"{'views':>5} {'ms/step':>8} {'render':>7} {'vae':>7} {'unet':>7} {'sds':>6} {'optim':>6} {'densify':>7} {'peak GiB':>8} {'N':>7}")
    for r in rows:
        s = r["stage_ms"]
        print(f"{r['views']:>5} {r['ms_per_step']:>8.1f} {s['render']:>7.1f} {s['vae']:>7.1f} {s['unet']:>7.1f} "
              f"{s['sds']:>6.2f} {s['optimizer']:>6.2f} {s['densify']:>7.2f} {r['peak_allocated_gib']:>8.2f} {r['num_gaussians_end']:>7}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
