"""The SDS step with Stable-Diffusion-2.1-base-shaped guidance (random weights, the real model's cost) at
512 x 512: each lever of the performance issue measured alone, with FLOPs per stage and the fraction of the
GPU's measured bf16 matrix peak.

    python benchmarks/perf/step_levers.py --out benchmarks/results/perf/step_levers_h200.json [--variants ...]

Variants (``--variants``, in this order by default; each: warm-up steps, then timed steps end to end, then
steps timed stage by stage with the GPU synchronised around each stage):

- ``fp16``: today's default (fp16, the UNet replayed from CUDA graphs, eager VAE encoder);
- ``bf16``: the same in bf16;
- ``tiny``: the VAE encoder replaced by a TAESD-shaped ``AutoencoderTiny`` (random weights) for the gradient;
- ``compile-unet``, ``compile-all``: ``torch.compile`` of the UNet, and of the UNet and the encoder's forward and
  backward (``guidance.compile``), in the dtype given by ``--compile-dtype``; the first step's seconds (the
  compilation) are reported apart.

FLOPs are counted once per view count with ``torch.utils.flop_counter`` on the modules alone (the VAE encoder's
forward and input-gradient backward, the UNet's forward on the CFG batch, the tiny encoder's forward and
backward); the renderer's CUDA kernels are not counted (gsplat's ops are opaque to the counter).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, matmul_peak, time_train_steps, write_json  # noqa: E402

from splatgen.config import load_config  # noqa: E402
from splatgen.guidance.tiny import build_sd21_shaped  # noqa: E402
from splatgen.trainer import Trainer  # noqa: E402


def count_flops(guidance, views: int) -> Dict[str, float]:
    """TFLOP of the encoder's forward + input backward, and of the UNet's forward on the CFG batch."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    x = torch.rand(views, 3, 512, 512, device="cuda", requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        z = guidance.encode(x)
        z.sum().backward()
    out["encoder_fwd_bwd"] = fc.get_total_flops() / 1e12
    lat = torch.randn(views, guidance.latent_channels, 64, 64, device="cuda")
    t = torch.full((views,), 500, device="cuda")
    cuda_graph, guidance.cuda_graph = guidance.cuda_graph, False
    with FlopCounterMode(display=False) as fc:
        guidance.predict_noise(lat, t, ["front"] * views)
    guidance.cuda_graph = cuda_graph
    out["unet_fwd"] = fc.get_total_flops() / 1e12
    return out


def run_variant(guidance, views: int, args, name: str) -> dict:
    total = args.warmup + 2 * args.steps
    cfg = load_config([], [
        "guidance.type=stable-diffusion", "guidance.model=sd21-base-shaped", "guidance.guidance_scale=100",
        "render.resolution=512", "render.background=random", f"camera.batch_size={views}", f"run.steps={total}",
        "run.evaluate=false", "run.preview_views=0", "model.num_points=50000", "densify.start=0.0",
        "densify.stop=1.0", "densify.every=25", "densify.max_gaussians=200000",
    ])
    cfg.prompt = "a benchmark prompt"
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, guidance, profile=False)
    t = time_train_steps(trainer, args.warmup, args.steps)
    row = {"variant": name, "views": views, "ms_per_step": t["ms_per_step"], "first_step_s": t["first_step_s"],
           "stage_ms": t["stage_ms"], "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    del trainer
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", default=["fp16", "bf16", "tiny", "compile-unet", "compile-all"])
    ap.add_argument("--views", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile-dtype", default="bf16", choices=["fp16", "bf16"])
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    torch.backends.cudnn.benchmark = True
    result = {"benchmark": "SD-2.1-base-shaped SDS step, levers", "environment": environment(),
              "settings": {k: str(v) for k, v in vars(args).items()}, "rows": [], "flops_tflop": {}}
    result["bf16_matmul_peak_tflops"] = round(matmul_peak(), 1)
    rows: List[dict] = result["rows"]
    guidances = {}

    def guidance_for(variant: str):
        dtype = torch.bfloat16 if variant == "bf16" or (variant.startswith("compile") and args.compile_dtype == "bf16") \
            else torch.float16
        key = (variant, dtype)
        for k in list(guidances):
            if k != key:
                guidances.pop(k).release()
        if key not in guidances:
            g = build_sd21_shaped("cuda", dtype)
            g.cuda_graph = True
            if variant == "tiny":
                from diffusers import AutoencoderTiny

                with torch.device("cuda"):
                    g.set_tiny_encoder(AutoencoderTiny())
            if variant == "compile-unet":
                g.set_compile("unet")
            if variant == "compile-all":
                g.set_compile("all")
            guidances[key] = g
        return guidances[key]

    for variant in args.variants:
        for views in args.views:
            g = guidance_for(variant)
            if variant in ("fp16", "tiny"):
                result["flops_tflop"][f"{variant}-{views}view"] = {k: round(v, 3) for k, v in count_flops(g, views).items()}
            try:
                rows.append(run_variant(g, views, args, variant))
            except Exception as exc:  # a lever that fails is a result too
                rows.append({"variant": variant, "views": views, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(rows[-1], flush=True)
            write_json(args.out, result)
    peak = result["bf16_matmul_peak_tflops"]
    for r in rows:
        key = f"{'tiny' if r['variant'] == 'tiny' else 'fp16'}-{r['views']}view"
        fl = result["flops_tflop"].get(key)
        if fl and "stage_ms" in r:
            enc, unet = r["stage_ms"]["encoder"], r["stage_ms"]["unet"]
            r["tflops"] = {"encoder": round(fl["encoder_fwd_bwd"] / (enc / 1000), 1) if enc else None,
                           "unet": round(fl["unet_fwd"] / (unet / 1000), 1) if unet else None}
            r["fraction_of_peak"] = {k: round(v / peak, 3) if v else None for k, v in r["tflops"].items()}
            floor_ms = 1000 * (fl["encoder_fwd_bwd"] + fl["unet_fwd"]) / peak
            r["floor_ms_encoder_unet"] = round(floor_ms, 2)
    write_json(args.out, result)
    print(f"{'variant':>13} {'views':>5} {'ms/step':>8} {'first s':>8} {'render':>7} {'enc':>7} {'unet':>7} {'peak GiB':>8}")
    for r in rows:
        if "stage_ms" in r:
            s = r["stage_ms"]
            print(f"{r['variant']:>13} {r['views']:>5} {r['ms_per_step']:>8.1f} {r['first_step_s']:>8.1f} {s['render']:>7.1f} "
                  f"{s['encoder']:>7.1f} {s['unet']:>7.1f} {r['peak_gib']:>8.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
