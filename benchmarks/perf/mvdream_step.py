"""The SDS step with MVDream-shaped guidance (random weights, the real model's cost): SD-2.1-base's UNet with the
camera MLP and self-attention across 4 views, at its native 256 x 256 (32 x 32 latents), beside the
single-view SD-2.1-base step at the same render size, with FLOPs per stage and the fraction of the GPU's measured
bf16 matrix peak.

    python benchmarks/perf/mvdream_step.py --out benchmarks/results/perf/mvdream_step_h200.json
    python benchmarks/perf/mvdream_step.py --small --out /tmp/mv.json        # a CPU smoke test (tiny UNet)

Rows: ``mvdream`` (4 views, one group: the CFG batch of 8 rows runs the joint attention over 4 x 1024 tokens at the
first level) and ``sd21`` (the same UNet without camera input or joint attention, the same 4 views, which SD-2.1's
guidance encodes at its native 512 x 512), each in fp16
and bf16: warm-up steps, then timed steps end to end, then steps timed stage by stage (render, encoder forward and
backward, UNet, SDS, optimizer). FLOPs are counted once with ``torch.utils.flop_counter`` on the modules alone
(the UNet's forward on the CFG batch, the encoder's forward and input-gradient backward); the renderer's CUDA
kernels are opaque to the counter.
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

from splatgen.cameras import evenly_spaced_cameras  # noqa: E402
from splatgen.config import load_config  # noqa: E402
from splatgen.guidance.conditioning import cfg_conditioning  # noqa: E402
from splatgen.guidance.tiny import build_sd21_shaped  # noqa: E402
from splatgen.trainer import Trainer  # noqa: E402

SMALL_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=1024,
                  attention_head_dim=8, norm_num_groups=32, use_linear_projection=True)


def count_flops(guidance, views: int, size: int) -> Dict[str, float]:
    """TFLOP of the encoder's forward + input backward, and of the UNet's forward on the CFG batch."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = guidance.device
    x = torch.rand(views, 3, size, size, device=dev, requires_grad=True)
    with FlopCounterMode(display=False) as fc:
        guidance.encode(x).sum().backward()
    enc = fc.get_total_flops() / 1e12
    side = guidance.native_size[0] // guidance.vae_factor  # the UNet's latent side (the encoder resizes to it)
    lat = torch.randn(2 * views, guidance.latent_channels, side, side, device=dev)
    cams = evenly_spaced_cameras(views, size)
    graph, guidance.cuda_graph = guidance.cuda_graph, False
    with FlopCounterMode(display=False) as fc:
        guidance.predict(lat, torch.tensor(500), cfg_conditioning(cams))
    guidance.cuda_graph = graph
    return {"encoder_fwd_bwd": enc, "unet_fwd": fc.get_total_flops() / 1e12}


def run(guidance, args, name: str, dtype_name: str) -> dict:
    dev = guidance.device
    total = args.warmup + 2 * args.steps
    cfg = load_config([], [
        "guidance.type=stable-diffusion", "guidance.model=shaped", "guidance.guidance_scale=50",
        f"render.resolution={args.size}", "render.background=random", f"camera.batch_size={args.views}",
        f"run.steps={total}", "run.evaluate=false", "run.preview_views=0", f"model.num_points={args.points}",
        "densify.start=0.0", "densify.stop=1.0", "densify.every=25", "camera.elevation_range=[0,30]",
        f"run.device={dev.type}",
    ])
    cfg.prompt = "a benchmark prompt"
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, guidance, profile=False, device=dev)
    t = time_train_steps(trainer, args.warmup, args.steps)
    row = {"model": name, "dtype": dtype_name, "views": args.views, "size": args.size, **t,
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if dev.type == "cuda" else None}
    del trainer
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=["mvdream", "sd21"], choices=["mvdream", "sd21"])
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--small", action="store_true", help="a tiny UNet at 32 px, fp32, on any device (checks the script)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.small:
        args.size, args.points, args.warmup, args.steps, args.dtypes = 32, 200, 1, 2, ["fp32"]
    elif device.type != "cuda":
        ap.error("the full shapes need a CUDA device; use --small on CPU")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    peak = matmul_peak(device)  # kept unrounded for the fractions: a slow or busy CPU's peak rounds to 0.00 TFLOP/s
    result = {"benchmark": "MVDream-shaped SDS step (SD-2.1 UNet + camera MLP + 4-view attention) vs SD-2.1-base",
              "environment": environment(), "settings": {k: str(v) for k, v in vars(args).items()},
              "bf16_matmul_peak_tflops": round(peak, 4), "rows": [], "flops_tflop": {}}
    rows: List[dict] = result["rows"]
    for name in args.models:
        for dname in args.dtypes:
            g = build_sd21_shaped(device, dtypes[dname], multiview=name == "mvdream",
                                  unet_config=SMALL_UNET if args.small else None)
            g.cuda_graph = device.type == "cuda"
            if name not in result["flops_tflop"]:
                result["flops_tflop"][name] = {k: round(v, 4) for k, v in count_flops(g, args.views, args.size).items()}
            try:
                row = run(g, args, name, dname)
                fl = result["flops_tflop"][name]
                enc, unet = row["stage_ms"]["encoder"], row["stage_ms"]["unet"]
                # four significant digits, not two decimals: the smoke size's rates are thousandths of a TFLOP/s
                row["tflops"] = {"encoder": float(f"{fl['encoder_fwd_bwd'] / (enc / 1000):.4g}") if enc else None,
                                 "unet": float(f"{fl['unet_fwd'] / (unet / 1000):.4g}") if unet else None}
                row["fraction_of_peak"] = {k: float(f"{v / peak:.4g}") if v and peak > 0 else None
                                           for k, v in row["tflops"].items()}
                rows.append(row)
            except Exception as exc:  # a configuration that fails is a result too
                rows.append({"model": name, "dtype": dname, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(rows[-1], flush=True)
            g.release()
            write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
