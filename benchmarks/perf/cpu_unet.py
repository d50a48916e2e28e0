"""The bundled prior's UNet on the CPU, one call on the default step's batch (4 views x classifier-free guidance =
8 samples of 64x64): dtype, memory layout and compilation, each measured against the others in one process.

    python benchmarks/perf/cpu_unet.py --out benchmarks/results/perf/cpu_unet.json [--compile] [--repeats 8]

Variants: ``fp32`` (eager, the earlier default), ``fp32-cl`` (channels-last), ``bf16``, ``bf16-cl`` (what
``guidance.dtype=fast`` gives on a CPU with native bf16), and with ``--compile`` ``bf16-cl-compiled``
(``torch.compile``, default mode; its first call, the compilation, is reported apart) and ``bf16-cl-jit``
(``torch.jit.trace`` + ``freeze``); with ``--multiview FOLDER`` ``mv-bf16-cl``, a multi-view prior's UNet (its
camera input and cross-view self-attention as the guidance installs them, 2 objects x 4 views), and beside it
``mv-bf16-cl-twopass``, the same UNet on the cross-view layers' reference path (``CrossViewAttnProcessor.two_pass``:
each blended layer's joint and per-view attention through diffusers' processor, projections and all, blended
after); their relative errors are against the fp32 two-pass call, their GFLOP/s count their own FLOPs, and
``multiview_one_pass_vs_two_pass_rel_err`` compares the two paths in fp32 and in bf16. The timed calls of all
variants are interleaved, so a machine whose speed drifts (shared CPUs) moves all of them alike. FLOPs from
``torch.utils.flop_counter``, which has no formula for the CPU's SDPA kernel
(``_scaled_dot_product_flash_attention_for_cpu``): attention through it counts nothing, so the GFLOP/s of
``mv-bf16-cl`` (explicit bmm products, counted) and of the other rows are not comparable - compare their times. The
relative error of each variant's output against fp32.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="add torch.compile and torch.jit variants")
    ap.add_argument("--multiview", type=Path, default=None, metavar="FOLDER",
                    help="also time this multi-view prior folder's UNet (bf16, channels-last)")
    ap.add_argument("--inductor-cache", type=Path, default=None,
                    help="inductor's cache folder (TORCHINDUCTOR_CACHE_DIR); an empty one times a cold compile")
    args = ap.parse_args()
    cache_was_empty = None
    if args.inductor_cache is not None:
        args.inductor_cache.mkdir(parents=True, exist_ok=True)
        cache_was_empty = not any(args.inductor_cache.iterdir())
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(args.inductor_cache)
    warnings.filterwarnings("ignore")
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from splatgen.resources import bundled_prior_path

    base = UNet2DConditionModel.from_pretrained(bundled_prior_path() / "unet", torch_dtype=torch.float32)
    base = base.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, base.config.in_channels, 64, 64, generator=gen)
    t = torch.randint(0, 1000, (8,), generator=gen)
    emb = torch.randn(8, 32, base.config.cross_attention_dim, generator=gen)
    # the bundled prior takes a camera (class_embed_type 'projection'); its own generator keeps gen's draws as before
    cam = (torch.randn(8, base.config.projection_class_embeddings_input_dim, generator=torch.Generator().manual_seed(1))
           if base.config.class_embed_type == "projection" else None)
    cl = torch.channels_last

    def variant(dtype: torch.dtype, channels_last: bool):
        m = copy.deepcopy(base).to(dtype)
        xx, ee, cc = x.to(dtype), emb.to(dtype), None if cam is None else cam.to(dtype)
        if channels_last:
            m, xx = m.to(memory_format=cl), xx.contiguous(memory_format=cl)
        return m, (lambda mod: mod(xx, t, encoder_hidden_states=ee, class_labels=cc).sample), (xx, ee, cc)

    calls = {}
    for name, dtype, layout in (("fp32", torch.float32, False), ("fp32-cl", torch.float32, True),
                                ("bf16", torch.bfloat16, False), ("bf16-cl", torch.bfloat16, True)):
        m, f, _ = variant(dtype, layout)
        calls[name] = (lambda m=m, f=f: f(m))
    mv_ref = None
    if args.multiview is not None:
        from splatgen.guidance.multiview import CrossViewAttnProcessor, MultiViewSpec, install_cross_view_attention

        spec = MultiViewSpec.read(args.multiview)
        cams = torch.randn(8, spec.camera_dim, generator=gen)

        def mv_unet(dtype: torch.dtype, two_pass: bool = False):
            m = UNet2DConditionModel.from_pretrained(args.multiview / "unet", torch_dtype=torch.float32)
            m = m.eval().requires_grad_(False).to(dtype)
            install_cross_view_attention(m, spec.num_views, spec.cross_view_mix)
            for proc in m.attn_processors.values():
                if isinstance(proc, CrossViewAttnProcessor):
                    proc.two_pass = two_pass
            return m

        mv32, mv16 = mv_unet(torch.float32), mv_unet(torch.bfloat16).to(memory_format=cl)
        mv32_2p, mv16_2p = mv_unet(torch.float32, True), mv_unet(torch.bfloat16, True).to(memory_format=cl)
        x16, e16 = x.to(torch.bfloat16).contiguous(memory_format=cl), emb.to(torch.bfloat16)
        c16 = cams.to(torch.bfloat16)
        calls["mv-bf16-cl"] = lambda: mv16(x16, t, encoder_hidden_states=e16, class_labels=c16).sample
        calls["mv-bf16-cl-twopass"] = lambda: mv16_2p(x16, t, encoder_hidden_states=e16, class_labels=c16).sample
        mv_ref = lambda: mv32_2p(x, t, encoder_hidden_states=emb, class_labels=cams).sample  # noqa: E731
        mv_one_pass32 = lambda: mv32(x, t, encoder_hidden_states=emb, class_labels=cams).sample  # noqa: E731
    setup_s = {}
    with torch.no_grad():
        if args.compile:
            m, f, (xx, ee, cc) = variant(torch.bfloat16, True)
            compiled = torch.compile(m, dynamic=False)
            t0 = time.perf_counter()
            f(compiled)
            setup_s["bf16-cl-compiled"] = round(time.perf_counter() - t0, 1)
            calls["bf16-cl-compiled"] = lambda: f(compiled)

            class Wrap(torch.nn.Module):
                def __init__(self, unet):
                    super().__init__()
                    self.unet = unet

                def forward(self, a, b, c):
                    return self.unet(a, b, encoder_hidden_states=c, class_labels=cc, return_dict=False)[0]

            t0 = time.perf_counter()
            frozen = torch.jit.freeze(torch.jit.trace(Wrap(m).eval(), (xx, t, ee), check_trace=False).eval())
            frozen(xx, t, ee)
            setup_s["bf16-cl-jit"] = round(time.perf_counter() - t0, 1)
            calls["bf16-cl-jit"] = lambda: frozen(xx, t, ee)

        def rel(a: torch.Tensor, b: torch.Tensor) -> float:
            return float((a.float() - b.float()).norm() / b.float().norm())

        ref = calls["fp32"]().float()
        rel_err = {k: rel(c(), ref) for k, c in calls.items()}
        with FlopCounterMode(display=False) as fc:
            calls["fp32"]()
        flops_of, mv_paths = {}, None
        if mv_ref is not None:
            mref = mv_ref().float()
            for k in ("mv-bf16-cl", "mv-bf16-cl-twopass"):
                rel_err[k] = rel(calls[k](), mref)
                with FlopCounterMode(display=False) as fc_mv:
                    calls[k]()
                flops_of[k] = fc_mv.get_total_flops()
            mv_paths = {"fp32": rel(mv_one_pass32(), mref),
                        "bf16-cl": rel(calls["mv-bf16-cl"](), calls["mv-bf16-cl-twopass"]())}
        times = {k: [] for k in calls}
        for _ in range(args.repeats):
            for k, c in calls.items():
                t0 = time.perf_counter()
                c()
                times[k].append(time.perf_counter() - t0)
    flops = fc.get_total_flops()
    rows = []
    for k, ts in times.items():
        ms = 1000 * statistics.median(ts)
        rows.append({"variant": k, "ms_median": round(ms, 1), "ms_min": round(1000 * min(ts), 1),
                     "gflop_per_s": round(flops_of.get(k, flops) / (ms / 1000) / 1e9, 1),
                     "rel_err_vs_fp32": round(rel_err[k], 5), "setup_s": setup_s.get(k)})
        print(rows[-1], flush=True)
    write_json(args.out, {"benchmark": "bundled prior UNet on CPU, 8 x 64x64 (4 views x CFG)",
                          "environment": environment(), "threads": torch.get_num_threads(),
                          "gflop_per_call": round(flops / 1e9, 2), "repeats": args.repeats,
                          "multiview": str(args.multiview) if args.multiview else None,
                          "multiview_gflop_per_call": round(flops_of["mv-bf16-cl"] / 1e9, 2) if flops_of else None,
                          "multiview_twopass_gflop_per_call": (round(flops_of["mv-bf16-cl-twopass"] / 1e9, 2)
                                                               if flops_of else None),
                          "multiview_one_pass_vs_two_pass_rel_err": mv_paths,
                          "inductor_cache_was_empty": cache_was_empty, "rows": rows})


if __name__ == "__main__":
    main()
