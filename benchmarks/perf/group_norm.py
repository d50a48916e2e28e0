"""GroupNorm + SiLU at the shapes of Stable Diffusion's VAE encoder: the fused channels-last Triton kernel against
PyTorch's (NCHW, and channels-last, where PyTorch converts the layout around each norm); then the whole
SD-2.1-shaped encoder (random weights), forward + backward to the input, with and without the swap.

    python benchmarks/perf/group_norm.py --out benchmarks/results/perf/group_norm_h100.json [--profile]
    python benchmarks/perf/group_norm.py --small --out /tmp/gn.json      # a tiny run that also works on CPU

Op variants, for N = 4 and each (channels, side) the encoder normalises at 512 x 512 input, fp16 and bf16:

- ``torch-nchw``: ``F.silu(F.group_norm(x))`` on a contiguous NCHW tensor (today's model);
- ``torch-channels-last``: the same ops on a channels-last tensor (the model converted to channels-last);
- ``fused``: ``group_norm_silu_triton`` on the channels-last tensor.

Each is timed forward alone and forward + backward (CUDA events, median of ``--reps`` after ``--warmup``), with the
bandwidth of its minimum traffic (forward: read x, write y; backward adds read x and dy, write dx) for comparison
with the GPU's. Encoder variants (``nchw``, ``channels-last``, ``fused``, the last two with channels-last input):
median ms of forward + backward, peak memory, and the largest difference of latents and input gradient from
``nchw``; ``--profile`` adds the 15 costliest kernels of each from ``torch.profiler``. Without a GPU (``--small``)
the kernels run in Triton's interpreter and the seconds mean nothing: it checks the script, not the speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: the kernels run on CPU tensors

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(ROOT / "tests" / "kernels"))
from _paths import ensure_kernels_importable  # noqa: E402
from common import environment, write_json  # noqa: E402

ensure_kernels_importable()

import torch.nn.functional as F  # noqa: E402

from splatgen.guidance.fused_norm import fuse_encoder_norms  # noqa: E402
from splatgen.guidance.tiny import load_model_config  # noqa: E402
from splatgen_kernels.group_norm import group_norm_silu_triton  # noqa: E402

# (channels, side) of the encoder's norms at 512 x 512 (the same list as tests/kernels/test_group_norm_gpu.py)
ENCODER_NORMS = [(128, 512), (128, 256), (256, 256), (256, 128), (512, 128), (512, 64)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def timed(fn: Callable[[], None], warmup: int, reps: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` (CUDA events on the GPU, the wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def op_rows(args, device: torch.device) -> List[Dict]:
    shapes = [(2, 64, 8)] if args.small else [(4, c, s) for c, s in ENCODER_NORMS]
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for n, c, side in shapes:
            g = torch.Generator(device=device).manual_seed(0)
            x = torch.randn(n, c, side, side, device=device, generator=g).to(dtype)
            w = torch.randn(c, device=device, generator=g).to(dtype)
            b = torch.randn(c, device=device, generator=g).to(dtype)
            dy = torch.randn(x.shape, device=device, generator=g).to(dtype)
            cl = x.contiguous(memory_format=torch.channels_last)
            dy_cl = dy.contiguous(memory_format=torch.channels_last)
            ops = {
                "torch-nchw": (x, dy, lambda t, ww, bb: F.silu(F.group_norm(t, 32, ww, bb, 1e-6))),
                "torch-channels-last": (cl, dy_cl, lambda t, ww, bb: F.silu(F.group_norm(t, 32, ww, bb, 1e-6))),
                "fused": (cl, dy_cl, lambda t, ww, bb: group_norm_silu_triton(t, 32, ww, bb, 1e-6)),
            }
            nbytes = x.numel() * x.element_size()
            for name, (inp, grad_out, op) in ops.items():
                xi, wi, bi = (t.detach().clone().requires_grad_() for t in (inp, w, b))  # clone keeps the layout

                def fwd():
                    with torch.no_grad():
                        op(xi, wi, bi)

                def fwd_bwd():
                    torch.autograd.grad(op(xi, wi, bi), (xi, wi, bi), grad_out)

                f_ms = timed(fwd, args.warmup, args.reps, device)
                fb_ms = timed(fwd_bwd, args.warmup, args.reps, device)
                rows.append(dict(op=name, dtype=dtype_name, shape=[n, c, side, side], forward_ms=round(f_ms, 4),
                                 forward_backward_ms=round(fb_ms, 4),
                                 forward_gbps=round(2 * nbytes / f_ms / 1e6, 1),
                                 forward_backward_gbps=round(5 * nbytes / fb_ms / 1e6, 1)))
                print(f"{name:20s} {dtype_name} {n}x{c}x{side}x{side}: fwd {f_ms:.3f} ms, fwd+bwd {fb_ms:.3f} ms",
                      flush=True)
    return rows


def build_encoder(args, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    if args.small:
        cfg = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                   up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                   latent_channels=4, norm_num_groups=8)
    else:
        cfg = load_model_config("sd21_base_vae")
    with torch.device(device):
        vae = AutoencoderKL.from_config(cfg).to(dtype).eval()
    vae.requires_grad_(False)
    return vae.encoder


def top_kernels(fn: Callable[[], None], device: torch.device, n: int = 15) -> List[Dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    attr = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0), reverse=True)
    return [dict(name=e.key[:120], ms_per_iter=round(getattr(e, attr, 0) / 1e3 / 3, 3), calls_per_iter=e.count / 3)
            for e in events[:n]]


def encoder_rows(args, device: torch.device) -> List[Dict]:
    dtype = DTYPES[args.encoder_dtype]
    n, side = (1, 16) if args.small else (4, 512)
    g = torch.Generator(device=device).manual_seed(1)
    x0 = (torch.rand(n, 3, side, side, device=device, generator=g) * 2 - 1).to(dtype)
    rows, ref = [], None
    for variant in ("nchw", "channels-last", "fused"):
        enc = build_encoder(args, device, dtype)
        fmt = torch.contiguous_format
        if variant == "channels-last":
            enc.to(memory_format=torch.channels_last)
            fmt = torch.channels_last
        elif variant == "fused":
            fuse_encoder_norms(enc)
            fmt = torch.channels_last
        x = x0.contiguous(memory_format=fmt).requires_grad_()
        z = enc(x)
        dz = torch.randn(z.shape, device=device, generator=torch.Generator(device=device).manual_seed(2)).to(dtype)

        def step():
            (gx,) = torch.autograd.grad(enc(x), (x,), dz)
            return gx

        out = (z.detach().float(), step().float())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        ms = timed(step, args.warmup, args.reps, device)
        row = dict(variant=variant, dtype=args.encoder_dtype, input=[n, 3, side, side],
                   forward_backward_ms=round(ms, 3))
        if device.type == "cuda":
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if ref is None:
            ref = out
        else:
            row["max_rel_diff_latents"] = float((out[0] - ref[0]).abs().max() / ref[0].abs().max())
            row["max_rel_diff_input_grad"] = float((out[1] - ref[1]).abs().max() / ref[1].abs().max())
        if args.profile:
            row["top_kernels"] = top_kernels(step, device)
        rows.append(row)
        print(f"encoder {variant:14s} {args.encoder_dtype} {n}x3x{side}x{side}: fwd+bwd {ms:.2f} ms", flush=True)
        enc = x = z = None  # free this variant's encoder and activations before the next one is built
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--small", action="store_true", help="tiny shapes (runs on CPU in the interpreter: a smoke test)")
    ap.add_argument("--dtypes", nargs="+", default=None, choices=sorted(DTYPES),
                    help="op dtypes (default fp16 bf16; --small: fp32)")
    ap.add_argument("--encoder-dtype", default=None, choices=sorted(DTYPES), help="default fp16 (--small: fp32)")
    ap.add_argument("--warmup", type=int, default=None, help="default 10 (--small: 1)")
    ap.add_argument("--reps", type=int, default=None, help="default 50 (--small: 2)")
    ap.add_argument("--profile", action="store_true", help="add torch.profiler's top kernels per encoder variant")
    ap.add_argument("--skip-encoder", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.small:
        ap.error("the full shapes need a CUDA device; use --small on CPU")
    # CPU PyTorch has no half GroupNorm on every build: the smoke test defaults to float32
    args.dtypes = args.dtypes or (["fp32"] if args.small else ["fp16", "bf16"])
    args.encoder_dtype = args.encoder_dtype or ("fp32" if args.small else "fp16")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.small else 10)
    args.reps = args.reps if args.reps is not None else (2 if args.small else 50)
    result = {"benchmark": "GroupNorm+SiLU, fused channels-last Triton kernel vs PyTorch; SD VAE encoder",
              "environment": environment(), "interpreted": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
              "small": args.small, "ops": op_rows(args, device)}
    write_json(args.out, result)
    if not args.skip_encoder:
        result["encoder"] = encoder_rows(args, device)
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
