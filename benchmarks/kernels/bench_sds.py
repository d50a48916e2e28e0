"""Benchmark of the fused SDS gradient kernel against the PyTorch reference, with achieved bandwidth.

    python benchmarks/kernels/bench_sds.py --out benchmarks/results/kernels      # about a minute on an H100

For every case: median time of ``sds_gradient_triton`` (both launches) and of ``splatgen.sds.sds_gradient``
(eager PyTorch), bytes the op must move (read eps [2B, ...], noise [B, ...], weight [B]; write grad [B, ...]
float32) and the achieved GB/s against the device's copy bandwidth measured in the same run (read + write).
Also the loss forward + backward (what the trainer calls) and a block-size sweep at the largest size.
Writes sds.json, sds.csv and sds.png into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_OUT, DEVICE, copy_bandwidth_GBps, do_bench_ms, environment, write_results  # noqa: E402

CASES = [
    # (label, shape): SD latents (4 channels, 64x64 for 512x512 renders), pixels, and a size big enough to
    # amortise launch latency, where the kernel can show its bandwidth
    ("sd-latent B=1", (1, 4, 64, 64)),
    ("sd-latent B=4", (4, 4, 64, 64)),
    ("pixels 512 B=1", (1, 3, 512, 512)),
    ("pixels 512 B=4", (4, 3, 512, 512)),
    ("flat B=4 x 16M", (4, 16 * 2**20)),
]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def inputs(shape, dtype):
    B = shape[0]
    g = torch.Generator(device=DEVICE).manual_seed(0)
    eps = torch.randn((2 * B, *shape[1:]), generator=g, device=DEVICE).to(dtype)
    noise = torch.randn(shape, generator=g, device=DEVICE)  # the trainer draws float32 noise
    weight = torch.rand(B, generator=g, device=DEVICE)
    return eps, noise, weight


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--guidance-scale", type=float, default=100.0)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs (CPU + TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    assert DEVICE == "cuda" or args.smoke, "the benchmark needs a CUDA device (or --smoke)"
    cases = [("smoke B=2", (2, 4, 8, 8)), ("smoke flat", (2, 5000))] if args.smoke else CASES
    from splatgen.sds import sds_gradient, sds_loss
    from splatgen_kernels.sds import sds_gradient_triton, sds_loss_triton

    s = args.guidance_scale
    copy_bw = copy_bandwidth_GBps()
    print(f"copy bandwidth (read + write): {copy_bw:.0f} GB/s")
    rows = []
    for label, shape in cases:
        for dname, dtype in DTYPES.items():
            eps, noise, weight = inputs(shape, dtype)
            moved = nbytes(eps, noise, weight) + noise.numel() * 4
            t_tri = do_bench_ms(lambda: sds_gradient_triton(eps, noise, weight, s))
            t_ref = do_bench_ms(lambda: sds_gradient(eps, noise, weight, s))
            row = dict(
                case=label, shape="x".join(map(str, shape)), eps_dtype=dname, noise_dtype="fp32",
                bytes=moved, triton_us=t_tri * 1e3, torch_us=t_ref * 1e3, speedup=t_ref / t_tri,
                triton_GBps=moved / (t_tri * 1e-3) / 1e9, torch_GBps=moved / (t_ref * 1e-3) / 1e9,
            )
            row["triton_frac_copy_bw"] = row["triton_GBps"] / copy_bw
            row["torch_frac_copy_bw"] = row["torch_GBps"] / copy_bw
            if label.startswith(("sd-latent", "pixels", "smoke B")):
                # what the trainer runs: the loss, then backward into x0
                x0 = torch.randn(shape, device=DEVICE, dtype=dtype, requires_grad=True)

                def tri_loss():
                    loss, _ = sds_loss_triton(x0, eps, noise, weight, s)
                    loss.backward()

                def ref_loss():
                    grad, _ = sds_gradient(eps, noise, weight, s)
                    sds_loss(x0, grad).backward()

                row["loss_fwd_bwd_triton_us"] = do_bench_ms(tri_loss) * 1e3
                row["loss_fwd_bwd_torch_us"] = do_bench_ms(ref_loss) * 1e3
                x0.grad = None
            rows.append(row)
            print(f"{label:16s} {dname}  triton {row['triton_us']:9.1f} us {row['triton_GBps']:7.0f} GB/s "
                  f"({100 * row['triton_frac_copy_bw']:5.1f}% of copy)   torch {row['torch_us']:9.1f} us "
                  f"({100 * row['torch_frac_copy_bw']:5.1f}%)   x{row['speedup']:.1f}")
            del eps, noise, weight
            if DEVICE == "cuda":
                torch.cuda.empty_cache()

    # block-size sweep at the largest size (fp16): does the default leave bandwidth on the table?
    label, shape = cases[-1]
    eps, noise, weight = inputs(shape, torch.float16)
    moved = nbytes(eps, noise, weight) + noise.numel() * 4
    sweep = []
    for block in (1024, 2048) if args.smoke else (1024, 2048, 4096, 8192):
        for warps in (4, 8, 16):
            if block // (32 * warps) < 1:
                continue
            t = do_bench_ms(lambda: sds_gradient_triton(eps, noise, weight, s, block_size=block, num_warps=warps))
            sweep.append(dict(block=block, num_warps=warps, us=t * 1e3, frac_copy_bw=moved / (t * 1e-3) / 1e9 / copy_bw))
    best = max(sweep, key=lambda r: r["frac_copy_bw"])
    print(f"block sweep ({label}, fp16): best block={best['block']} warps={best['num_warps']} "
          f"{100 * best['frac_copy_bw']:.1f}% of copy bandwidth")

    meta = environment()
    meta.update(copy_bandwidth_GBps=copy_bw, guidance_scale=s,
                bytes_note="read eps (2B x M, its dtype) + noise (B x M, fp32) + weight (B, fp32); write grad (B x M, fp32)")
    write_results(args.out, "sds", meta, rows, {"block_sweep": {"case": label, "eps_dtype": "fp16", "rows": sweep}})
    plot(args.out / "sds.png", rows, copy_bw, meta)


def plot(path: Path, rows, copy_bw: float, meta) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    labels = [f"{r['case']}\n{r['eps_dtype']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(rows)), 4.5))
    ax.bar([i - 0.2 for i in x], [100 * r["triton_frac_copy_bw"] for r in rows], width=0.4, label="Triton (fused)")
    ax.bar([i + 0.2 for i in x], [100 * r["torch_frac_copy_bw"] for r in rows], width=0.4, label="PyTorch reference")
    ax.axhline(70, color="k", ls="--", lw=0.8, label="target 70%")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=70, fontsize=7)
    ax.set_ylabel(f"% of copy bandwidth ({copy_bw:.0f} GB/s)")
    ax.set_title(f"SDS gradient, {meta.get('device')}, torch {meta['torch']}, triton {meta.get('triton')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
