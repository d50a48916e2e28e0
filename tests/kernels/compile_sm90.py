"""Compile every kernel variant the launchers use for an H100 (sm_90), without a GPU, and report registers.

    python tests/kernels/compile_sm90.py          # prints one line per variant; exit code 1 on a failure

The interpreter runs kernels as Python, so it cannot catch what only the compiler sees (types, scoping,
layouts) or register spills. Triton can compile for a GPU target on any machine: this script does it for the
same constexpr combinations and launch options as ``splatgen_kernels`` and, when the ptxas shipped with
Triton accepts the PTX, reports registers and spill bytes. Run without TRITON_INTERPRET (it clears it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _paths import ensure_kernels_importable  # noqa: E402

ensure_kernels_importable()

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import splatgen_kernels.densify as D  # noqa: E402
import splatgen_kernels.group_norm as GN  # noqa: E402
import splatgen_kernels.sds as S  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def _ptxas():
    d = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return [os.path.join(d, n) for n in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(d, n))]


def ptx_resources(ptx: str):
    """(registers, spill-store bytes) from ptxas -v, or None when no shipped ptxas accepts this PTX."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        for exe in _ptxas():
            r = subprocess.run([exe, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True)
            regs = re.search(r"Used (\d+) registers", r.stderr)
            if r.returncode == 0 and regs:
                spill = re.search(r"(\d+) bytes spill stores", r.stderr)
                return int(regs.group(1)), int(spill.group(1)) if spill else 0
    finally:
        os.unlink(f.name)
    return None


def compile_variant(fn, types, constexprs, divisible, **options):
    names = fn.arg_names
    signature = {n: ("constexpr" if n in constexprs else types[n]) for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    src = ASTSource(fn=fn, signature=signature, constexprs={(names.index(n),): v for n, v in constexprs.items()}, attrs=attrs)
    return triton.compile(src, target=TARGET, options=options)


def variants():
    """(label, kernel, arg types, constexprs, divisible args, options) as the launchers use them."""
    out = []
    for eps_t in ("fp32", "fp16", "bf16"):
        for clip in (False, True):
            types = dict(eps_ptr=f"*{eps_t}", noise_ptr="*fp32", weight_ptr="*fp32", grad_ptr="*fp32", part_sq_ptr="*fp32",
                         part_bad_ptr="*i32", M="i32", B="i32", guidance_scale="fp32", grad_clip="fp32")
            out.append((f"sds grad eps={eps_t} clip={clip}", S._sds_grad_kernel, types,
                        dict(CLIP=clip, BLOCK=S.DEFAULT_BLOCK), [k for k in types if k.endswith("ptr")] + ["M"],
                        dict(num_warps=S.DEFAULT_WARPS, enable_fp_fusion=False)))
    types = dict(part_sq_ptr="*fp32", part_bad_ptr="*i32", P="i32", norm_ptr="*fp32", loss_ptr="*fp32", bad_ptr="*i64")
    out.append(("sds finalize", S._sds_finalize_kernel, types, dict(BLOCK=S._FINAL_BLOCK), [], dict(num_warps=S._FINAL_WARPS, enable_fp_fusion=False)))
    types = dict(grad2d_sum_ptr="*fp32", count_ptr="*fp32", max_radii_ptr="*fp32", grad_ptr="*fp32", radii_ptr="*i32",
                 N="i32", B="i32", half_w="fp32", half_h="fp32", inv_side="fp32")
    out.append(("accumulate", D._accumulate_kernel, types, dict(BLOCK=D._ACC_BLOCK), [k for k in types if k.endswith("ptr")],
                dict(num_warps=4, enable_fp_fusion=False)))
    types = dict(grad2d_sum_ptr="*fp32", count_ptr="*fp32", max_radii_ptr="*fp32", scales_ptr="*fp32", opac_ptr="*fp32",
                 keep_ptr="*u8", codes_ptr="*u8", block_counts_ptr="*i32", N="i32", grad_thr="fp32", opa_thr="fp32",
                 big_thr="fp32", small_thr="fp32", screen_thr="fp32")
    for screen, keep in ((True, False), (False, True)):
        out.append((f"decide screen={screen} keep={keep}", D._decide_kernel, types,
                    dict(HAS_SCREEN=screen, HAS_KEEP=keep, BLOCK=D.BLOCK_N), [k for k in types if k.endswith("ptr")],
                    dict(num_warps=4, enable_fp_fusion=False)))
    types = dict(block_counts_ptr="*i32", block_offsets_ptr="*i32", totals_ptr="*i32", NB="i32")
    out.append(("scan", D._scan_kernel, types, dict(BLOCK=D._SCAN_BLOCK), [], dict(num_warps=4, enable_fp_fusion=False)))
    types = dict(codes_ptr="*u8", block_offsets_ptr="*i32", N="i32", n_survive="i32", n_clone="i32", n_split="i32",
                 src_ptr="*fp32", dst_ptr="*fp32", st0_src_ptr="*fp32", st0_dst_ptr="*fp32", st1_src_ptr="*fp32",
                 st1_dst_ptr="*fp32", quats_ptr="*fp32", scales_ptr="*fp32", log_shrink="fp32", seed="i32")
    # widths of means, scales, quats, opacities, sh0, shN at SH degrees 1 and 3
    for name, width, mode in (("means", 3, 2), ("scales", 3, 1), ("quats", 4, 0), ("opacities", 1, 0), ("sh0", 3, 0),
                              ("shN deg1", 9, 0), ("shN deg3", 45, 0)):
        dc, sub, warps = D._scatter_config(width, mode)
        for num_states, has_param in ((2, True), (0, False)):
            if not has_param and mode:
                continue
            out.append((f"scatter {name} states={num_states} param={has_param}", D._scatter_kernel, types,
                        dict(D=width, DC=dc, MODE=mode if has_param else 0, HAS_PARAM=has_param, NUM_STATES=num_states,
                             BLOCK=D.BLOCK_N, SUB=sub),
                        [k for k in types if k.endswith("ptr")], dict(num_warps=warps, enable_fp_fusion=True)))
    out += group_norm_variants()
    return out


def group_norm_variants():
    """The SD VAE encoder's norms: 32 groups of C/G = 4, 8, 16 channels (C = 128, 256, 512); every dtype at the
    widest, and the plain norm (the attention's, ``ACT=False``) at 512 channels."""
    out = []
    opts = dict(num_warps=GN.NUM_WARPS)
    for x_t, cg in [("fp16", 4), ("fp16", 8), ("fp16", 16), ("bf16", 16), ("fp32", 16)]:
        sh = GN._Shape(4, 64 * 64, 32 * cg, 32)
        meta = sh.meta()
        label = f"group_norm {x_t} C={sh.C}"
        types = dict(x_ptr=f"*{x_t}", part_mean_ptr="*fp32", part_m2_ptr="*fp32", P="i32", TILES="i32")
        out.append((f"{label} stats", GN._stats_kernel, types, meta, [k for k in types if k.endswith("ptr")], opts))
        for act in ((True, False) if cg == 16 and x_t == "fp16" else (True,)):
            types = dict(x_ptr=f"*{x_t}", w_ptr=f"*{x_t}", b_ptr=f"*{x_t}", mean_ptr="*fp32", rstd_ptr="*fp32",
                         y_ptr=f"*{x_t}", P="i32")
            out.append((f"{label} act={act} norm", GN._norm_kernel, types, dict(meta, ACT=act),
                        [k for k in types if k.endswith("ptr")], opts))
            types = dict(x_ptr=f"*{x_t}", dy_ptr=f"*{x_t}", w_ptr=f"*{x_t}", b_ptr=f"*{x_t}", mean_ptr="*fp32",
                         rstd_ptr="*fp32", part_dz_ptr="*fp32", part_dzx_ptr="*fp32", P="i32", TILES="i32")
            out.append((f"{label} act={act} bwd reduce", GN._bwd_reduce_kernel, types, dict(meta, ACT=act),
                        [k for k in types if k.endswith("ptr")], opts))
            types = dict(x_ptr=f"*{x_t}", dy_ptr=f"*{x_t}", w_ptr=f"*{x_t}", b_ptr=f"*{x_t}", mean_ptr="*fp32",
                         rstd_ptr="*fp32", c1_ptr="*fp32", c2_ptr="*fp32", dx_ptr=f"*{x_t}", P="i32")
            out.append((f"{label} act={act} bwd dx", GN._bwd_dx_kernel, types, dict(meta, ACT=act),
                        [k for k in types if k.endswith("ptr")], opts))
        if x_t == "fp16":
            types = dict(part_mean_ptr="*fp32", part_m2_ptr="*fp32", mean_ptr="*fp32", rstd_ptr="*fp32", P="i32",
                         S="i32", ROWS_PER_PART="i32", eps="fp32")
            out.append((f"{label} stats finalize", GN._stats_finalize_kernel, types,
                        dict(G=sh.G, CG=sh.CG, BLOCK_S=GN._FINAL_BLOCK, G_PAD=sh.G_PAD), [], dict(num_warps=4)))
            types = dict(part_dz_ptr="*fp32", part_dzx_ptr="*fp32", w_ptr="*fp16", dz_n_ptr="*fp32", dzx_n_ptr="*fp32",
                         c1_ptr="*fp32", c2_ptr="*fp32", S="i32", inv_m="fp32")
            out.append((f"{label} bwd finalize", GN._bwd_finalize_kernel, types,
                        dict(G=sh.G, CG=sh.CG, BLOCK_S=GN._final_block_s(sh), G_PAD=sh.G_PAD, CG_PAD=sh.CG_PAD), [],
                        dict(num_warps=4)))
    return out


def main() -> int:
    failed = 0
    for label, fn, types, const, div, opts in variants():
        try:
            k = compile_variant(fn, types, const, div, **opts)
        except Exception as e:  # report every failure, not just the first
            failed += 1
            print(f"FAIL  {label}: {type(e).__name__}: {str(e)[:300]}")
            continue
        res = ptx_resources(k.asm["ptx"])
        info = f"{res[0]:3d} registers, {res[1]} bytes spilled" if res else "registers unknown (no matching ptxas)"
        print(f"ok    {label:48s} {info}")
        if res and res[1] > 64:
            failed += 1
            print(f"FAIL  {label}: spills {res[1]} bytes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
