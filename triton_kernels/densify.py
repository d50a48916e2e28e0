"""Adaptive density control in Triton: statistics, decisions, compaction and split sampling.

Makes the decisions and the output layout of ``splatgen.densify`` (the PyTorch reference; its module
docstring states the rules). Four pieces:

1. :func:`accumulate_stats_triton` (every step, in place), one program per block of Gaussians looping over
   the B views::

       grad2d_sum [N] f32  += sum_b visible * ||means2d_grad[b, n] * (W/2, H/2)||
       count      [N] f32  += sum_b visible             visible = radii[b, n] > 0
       max_radii  [N] f32   = max(max_radii, max_b radii[b, n] / max(W, H))
       means2d_grad [B, N, 2] (pixels, any float dtype), radii [B, N] (any dtype)

2. :func:`densify_plan_triton` (one densification step): ``_decide_kernel`` reads the statistics, scales
   [N, 3] (log) and opacities [N] (logit) once, writes a 1-byte code per Gaussian (bit 0 survives, bit 1
   cloned, bit 2 split; 0 pruned) and per-block counts; ``_scan_kernel`` (one program) turns the counts into
   exclusive per-block offsets and totals. Reading the totals is the step's single host synchronisation,
   needed anyway to allocate the new tensors. When more Gaussians want to grow than ``max_gaussians``
   allows (rare) the winners are chosen with ``torch.sort`` exactly as the reference does, and the two
   kernels run again with that keep-mask (a second synchronisation).

3. :func:`apply_densify_triton`: ``_scatter_kernel`` runs once per parameter tensor and moves the parameter
   together with its Adam moments (exp_avg, exp_avg_sq) in the same launch (6 launches in all). Destination
   rows come from the codes: the block offset, plus the rows of the same kind earlier in the block (an
   in-block ``tl.cumsum``), so nothing like ``torch.nonzero`` is needed. Layout, as in the reference: survivors in their
   order, then one copy of each clone, then the first child of every split, then the second child. Split
   children are sampled in the kernel: ``mean + R(q) diag(exp(s)) z`` with ``z`` from ``tl.randn4x(seed,
   2 i + k)`` (i the parent's row, k the child), log-scales ``s - log(split_shrink)``, other parameters
   copied; their Adam moments start at zero, clones keep theirs.

4. :func:`densify_step_triton`: 2 then 3 on a duck-typed ``GaussianModel`` (``.params``, ``.optimizer``,
   ``.update``).

Exact decisions without transcendental functions in the kernel: the reference compares
``exp(scales).amax(-1)`` and ``sigmoid(opacities)`` with thresholds. Triton's GPU ``exp`` rounds
differently from PyTorch's, which would flip the decision of any Gaussian lying within that rounding
difference of a threshold: rare per Gaussian, but not at millions of them. Both functions are monotone, so ``exp(s) > T`` holds exactly when ``s > s*`` for one float32
``s*``: :func:`_last_false` finds it by searching the ordered float32 line with PyTorch's own ``exp`` /
``sigmoid`` on the same device (a few tiny launches, cached per threshold and device), and the kernel
compares raw log-scales and logits. ``exp(amax(s)) == amax(exp(s))`` because rounding is monotone. On CUDA
this reproduces the reference bit for bit. On the CPU, PyTorch itself evaluates ``sigmoid`` on the last
``N mod 32`` elements of a tensor with a scalar routine that can differ by one ulp from its vectorised body,
so there the reference is not a function of the value alone within one ulp of a threshold (never hit by
random data; the tests put their adversarial values in the vectorised body).
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._utils import check_launchable, next_power_of_2

BLOCK_N = 512
"""Gaussians per program of the decide and scatter kernels (the scan works on these blocks)."""
_ACC_BLOCK = 512
_SCAN_BLOCK = 1024
_MAX_COL_CHUNK = 16
"""Columns per inner step of the scatter: shN rows (up to 45 floats) go in chunks of 16 to bound registers."""

# code bits of the per-Gaussian decision byte
SURVIVES, CLONED, SPLIT = 1, 2, 4


# ---------------------------------------------------------------------------------------------------------
# 1. statistics
# ---------------------------------------------------------------------------------------------------------
# Sizes vary from call to call (N grows with densification): do not specialise on them, or Triton
# recompiles whenever one becomes 1 or a multiple of 16.
@triton.jit(do_not_specialize=["N", "B"])
def _accumulate_kernel(
    grad2d_sum_ptr,  # [N] f32, in place
    count_ptr,  # [N] f32, in place
    max_radii_ptr,  # [N] f32, in place
    grad_ptr,  # [B, N, 2] any float
    radii_ptr,  # [B, N] any
    N,
    B,
    half_w,
    half_h,
    inv_side,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    m = rows < N
    cols = tl.arange(0, 2)
    scale = tl.where(cols == 0, half_w, half_h)  # the reference's tensor([W/2, H/2])
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.float32)
    rmax = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    idx = rows.to(tl.int64)  # int64 running offset b * N + rows: B * N may exceed 2^31
    for _ in range(B):
        # [BLOCK, 2] tile: x and y of one Gaussian are adjacent, the whole tile is one contiguous run.
        g = tl.load(grad_ptr + idx[:, None] * 2 + cols[None, :], mask=m[:, None], other=0.0).to(tl.float32)
        gs = g * scale[None, :]
        norm = tl.sqrt_rn(tl.sum(gs * gs, axis=1))
        r = tl.load(radii_ptr + idx, mask=m, other=0)
        visible = r > 0
        acc += tl.where(visible, norm, 0.0)
        cnt += visible.to(tl.float32)
        frac = r.to(tl.float32) * inv_side  # as the reference: radii.float() * (1 / max(W, H)) in float32
        rmax = tl.where(frac > rmax, frac, rmax)
        idx += N
    old_sum = tl.load(grad2d_sum_ptr + rows, mask=m, other=0.0)
    old_cnt = tl.load(count_ptr + rows, mask=m, other=0.0)
    old_max = tl.load(max_radii_ptr + rows, mask=m, other=0.0)
    tl.store(grad2d_sum_ptr + rows, old_sum + acc, mask=m)
    tl.store(count_ptr + rows, old_cnt + cnt, mask=m)
    # torch.maximum keeps a NaN already in max_radii: `rmax > NaN` is False, so the old value stays.
    tl.store(max_radii_ptr + rows, tl.where(rmax > old_max, rmax, old_max), mask=m)


def accumulate_stats_triton(
    grad2d_sum: Tensor, count: Tensor, max_radii: Tensor, means2d_grad: Tensor, radii: Tensor, width: int, height: int
) -> None:
    """Add one step's statistics in place (same as ``splatgen.densify.accumulate_stats``).

    Args:
        grad2d_sum, count, max_radii: [N] float32 contiguous running statistics, updated in place.
        means2d_grad: [B, N, 2] gradient of the projected means (pixels).
        radii: [B, N] screen radii in pixels, 0 where the Gaussian is not visible.
        width, height: image size in pixels.
    """
    N = grad2d_sum.shape[0]
    if means2d_grad.dim() != 3 or means2d_grad.shape[1:] != (N, 2):
        raise ValueError(f"means2d_grad {tuple(means2d_grad.shape)} must be [B, {N}, 2]")
    B = means2d_grad.shape[0]
    if tuple(radii.shape) != (B, N):
        raise ValueError(f"radii {tuple(radii.shape)} must be [{B}, {N}] (reduce gsplat's [B, N, 2] radii first)")
    for t in (grad2d_sum, count, max_radii):
        assert t.dtype == torch.float32 and t.is_contiguous() and t.shape == (N,), "stats must be [N] float32"
    check_launchable(_accumulate_kernel, grad2d_sum, count, max_radii, means2d_grad, radii)
    if N == 0 or B == 0:
        return
    _accumulate_kernel[(triton.cdiv(N, _ACC_BLOCK),)](
        grad2d_sum, count, max_radii, means2d_grad.contiguous(), radii.contiguous(), N, B,
        width * 0.5, height * 0.5, 1.0 / float(max(width, height)),
        BLOCK=_ACC_BLOCK, num_warps=4, enable_fp_fusion=False,  # IEEE x*x + y*y, as in the interpreter
    )


# ---------------------------------------------------------------------------------------------------------
# 2. decisions and compaction plan
# ---------------------------------------------------------------------------------------------------------
def _f32_key(x: float) -> int:
    """Order-preserving integer key of a float32 (-inf < ... < -0.0 < +0.0 < ... < +inf)."""
    bits = struct.unpack("<i", struct.pack("<f", x))[0]
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF) - 1


def _f32_from_keys(keys: Tensor) -> Tensor:
    """Inverse of :func:`_f32_key` for an int64 tensor of keys."""
    bits = torch.where(keys >= 0, keys, -keys - 1 - 2**31)
    return bits.to(torch.int32).view(torch.float32)


def _last_false(pred: Callable[[Tensor], Tensor], device: torch.device, chunk: int = 16384) -> Optional[float]:
    """Largest float32 ``x`` with ``pred(x)`` False, for ``pred`` monotone (False then True) on float32.

    Returns None when ``pred(-inf)`` is already True and ``+inf`` when ``pred(+inf)`` is False. Searches the
    ordered float32 line (2^32 values) ``chunk`` candidates at a time, 3 rounds, evaluating ``pred`` with
    PyTorch on ``device``; then checks monotonicity in a window around the answer. Candidate counts are
    multiples of 64 so PyTorch's CPU kernels evaluate all of them with their vectorised routine.
    """

    def evaluate(keys: Tensor) -> Tensor:
        n = keys.numel()
        padded = torch.cat([keys, keys[-1:].expand((-n) % 64)])
        return pred(_f32_from_keys(padded).to(device)).cpu()[:n]

    lo, hi = _f32_key(-math.inf), _f32_key(math.inf)
    ends = evaluate(torch.tensor([lo, hi], dtype=torch.int64))
    if bool(ends[0]):
        return None
    if not bool(ends[1]):
        return math.inf
    while hi - lo > 1:  # invariant: pred(lo) False, pred(hi) True
        k = min(chunk, hi - lo - 1)
        cand = lo + ((hi - lo) * torch.arange(1, k + 1, dtype=torch.int64)) // (k + 1)
        p = evaluate(cand)
        first = int(torch.argmax(p.to(torch.int8))) if bool(p.any()) else k
        lo = int(cand[first - 1]) if first > 0 else lo
        hi = int(cand[first]) if first < k else hi
    window = torch.arange(max(lo - 2048, _f32_key(-math.inf)), min(hi + 2048, _f32_key(math.inf)) + 1)
    assert torch.equal(evaluate(window), window >= hi), "threshold predicate is not monotone near its boundary"
    return float(_f32_from_keys(torch.tensor([lo]))[0])


@functools.lru_cache(maxsize=64)
def _threshold(kind: str, value: float, device_str: str) -> float:
    device = torch.device(device_str)
    if kind == "opacity":
        # reference: prune when sigmoid(o) < min_opacity  <=>  o <= t
        t = _last_false(lambda x: ~(torch.sigmoid(x) < value), device)
    else:
        # reference: exp(s) > T (too big, and "not small")  <=>  s > t
        assert value >= 0, "scale thresholds must be >= 0"
        t = _last_false(lambda x: torch.exp(x) > value, device)
    # None: the predicate holds everywhere, i.e. the comparison `x <= t` is never true: NaN does that.
    return math.nan if t is None else t


# Sizes vary from call to call (N grows with densification): do not specialise on them, or Triton
# recompiles whenever one becomes 1 or a multiple of 16.
@triton.jit(do_not_specialize=["N"])
def _decide_kernel(
    grad2d_sum_ptr,  # [N] f32
    count_ptr,  # [N] f32
    max_radii_ptr,  # [N] f32
    scales_ptr,  # [N, 3] log scales, any float
    opac_ptr,  # [N] logits, any float
    keep_ptr,  # [N] uint8 (only when HAS_KEEP: the growth cap's winners)
    codes_ptr,  # [N] uint8 out
    block_counts_ptr,  # [num_blocks, 4] int32 out: survivors, clones, splits, pruned
    N,
    grad_thr,
    opa_thr,
    big_thr,
    small_thr,
    screen_thr,
    HAS_SCREEN: tl.constexpr,
    HAS_KEEP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    m = rows < N
    r64 = rows.to(tl.int64)
    g = tl.load(grad2d_sum_ptr + rows, mask=m, other=0.0)
    c = tl.load(count_ptr + rows, mask=m, other=0.0)
    # count.clamp_min(1): where() keeps NaN like torch; IEEE division like torch.
    avg = tl.math.div_rn(g, tl.where(c < 1.0, 1.0, c))
    s0 = tl.load(scales_ptr + r64 * 3 + 0, mask=m, other=0.0).to(tl.float32)
    s1 = tl.load(scales_ptr + r64 * 3 + 1, mask=m, other=0.0).to(tl.float32)
    s2 = tl.load(scales_ptr + r64 * 3 + 2, mask=m, other=0.0).to(tl.float32)
    # amax propagates NaN and NaN fails every comparison: a NaN scale is neither too big nor small.
    s_nan = (s0 != s0) | (s1 != s1) | (s2 != s2)
    s_max = tl.maximum(tl.maximum(s0, s1), s2)
    o = tl.load(opac_ptr + rows, mask=m, other=0.0).to(tl.float32)

    prune = (o <= opa_thr) | ((s_max > big_thr) & ~s_nan)
    if HAS_SCREEN:
        prune = prune | (tl.load(max_radii_ptr + rows, mask=m, other=0.0) > screen_thr)
    grow = (avg > grad_thr) & (c > 0) & ~prune
    if HAS_KEEP:
        grow = grow & (tl.load(keep_ptr + rows, mask=m, other=0) != 0)
    small = (s_max <= small_thr) & ~s_nan
    clone = grow & small & m
    split = grow & ~small & m
    survive = ~prune & ~split & m
    prune = prune & m
    code = survive.to(tl.int32) | (clone.to(tl.int32) << 1) | (split.to(tl.int32) << 2)
    tl.store(codes_ptr + rows, code.to(tl.uint8), mask=m)
    tl.store(block_counts_ptr + pid * 4 + 0, tl.sum(survive.to(tl.int32), axis=0))
    tl.store(block_counts_ptr + pid * 4 + 1, tl.sum(clone.to(tl.int32), axis=0))
    tl.store(block_counts_ptr + pid * 4 + 2, tl.sum(split.to(tl.int32), axis=0))
    tl.store(block_counts_ptr + pid * 4 + 3, tl.sum(prune.to(tl.int32), axis=0))


# Sizes vary from call to call (N grows with densification): do not specialise on them, or Triton
# recompiles whenever one becomes 1 or a multiple of 16.
@triton.jit(do_not_specialize=["NB"])
def _scan_kernel(
    block_counts_ptr,  # [NB, 4] int32
    block_offsets_ptr,  # [NB, 4] int32 out: exclusive prefix sums over blocks
    totals_ptr,  # [4] int32 out
    NB,
    BLOCK: tl.constexpr,
):
    # One program: NB is N / 512 (8k blocks at 4M Gaussians), a few microseconds of work.
    cols = tl.arange(0, 4)
    carry = tl.zeros([4], dtype=tl.int32)
    for start in range(0, NB, BLOCK):
        r = start + tl.arange(0, BLOCK)
        m = r[:, None] < NB
        x = tl.load(block_counts_ptr + r[:, None] * 4 + cols[None, :], mask=m, other=0)
        tl.store(block_offsets_ptr + r[:, None] * 4 + cols[None, :], tl.cumsum(x, axis=0) - x + carry[None, :], mask=m)
        carry += tl.sum(x, axis=0)
    tl.store(totals_ptr + cols, carry)


@dataclass
class DensifyPlan:
    """Decisions of one densification step and where every row goes.

    codes [N] uint8 (bit 0 survives, bit 1 cloned, bit 2 split; 0 pruned), block_offsets [ceil(N/block), 4]
    int32 (exclusive prefix sums of survivors, clones, splits, pruned over blocks), and the totals.
    """

    codes: Tensor
    block_offsets: Tensor
    n_survive: int
    n_clone: int
    n_split: int
    n_prune: int
    block: int = BLOCK_N

    @property
    def num_new(self) -> int:
        """Size of the new set: survivors + clones + 2 children per split."""
        return self.n_survive + self.n_clone + 2 * self.n_split

    def masks(self) -> Dict[str, Tensor]:
        """Boolean masks [N] ``clone``, ``split``, ``prune`` (as ``splatgen.densify.densify_decisions``)."""
        c = self.codes
        return {"clone": (c & CLONED) != 0, "split": (c & SPLIT) != 0, "prune": c == 0}


def _decide(stats, scales_log: Tensor, opacities_logit: Tensor, p, keep: Optional[Tensor]) -> Tuple[Tensor, Tensor, List[int]]:
    n = scales_log.shape[0]
    device = scales_log.device
    dev = str(device)
    nb = triton.cdiv(n, BLOCK_N)
    codes = torch.empty(n, dtype=torch.uint8, device=device)
    counts = torch.empty((nb, 4), dtype=torch.int32, device=device)
    offsets = torch.empty((nb, 4), dtype=torch.int32, device=device)
    totals = torch.empty(4, dtype=torch.int32, device=device)
    _decide_kernel[(nb,)](
        stats.grad2d_sum.contiguous(), stats.count.contiguous(), stats.max_radii.contiguous(), scales_log, opacities_logit,
        keep if keep is not None else codes, codes, counts, n,
        float(p.grad_threshold),
        _threshold("opacity", float(p.min_opacity), dev),
        _threshold("scale", float(p.max_world_scale * p.scene_extent), dev),
        _threshold("scale", float(p.dense_scale * p.scene_extent), dev),
        float(p.max_screen_fraction),
        HAS_SCREEN=p.max_screen_fraction > 0, HAS_KEEP=keep is not None, BLOCK=BLOCK_N, num_warps=4,
        enable_fp_fusion=False,
    )
    _scan_kernel[(1,)](counts, offsets, totals, nb, BLOCK=_SCAN_BLOCK, num_warps=4, enable_fp_fusion=False)
    return codes, offsets, totals.tolist()  # the host synchronisation: sizes are needed to allocate


def densify_plan_triton(stats, scales_log: Tensor, opacities_logit: Tensor, params) -> DensifyPlan:
    """Decide clone / split / prune for every Gaussian and plan the compaction.

    Args:
        stats: ``DensifyStats``-like (``grad2d_sum``, ``count``, ``max_radii``: [N] float32).
        scales_log: [N, 3] log scales. opacities_logit: [N] logits.
        params: ``DensifyParams``-like (grad_threshold, dense_scale, scene_extent, min_opacity,
            max_world_scale, max_screen_fraction, max_gaussians).

    Returns:
        A :class:`DensifyPlan`; its ``masks()`` equal ``splatgen.densify.densify_decisions``.
    """
    n = scales_log.shape[0]
    device = scales_log.device
    for t in (stats.grad2d_sum, stats.count, stats.max_radii):
        assert t.shape == (n,) and t.dtype == torch.float32, "densification statistics out of sync with the model"
    if n == 0:
        empty = torch.empty(0, dtype=torch.uint8, device=device)
        return DensifyPlan(empty, torch.empty((0, 4), dtype=torch.int32, device=device), 0, 0, 0, 0)
    scales_log = scales_log.contiguous()
    opacities_logit = opacities_logit.contiguous()
    check_launchable(_decide_kernel, scales_log, opacities_logit, stats.grad2d_sum, stats.count, stats.max_radii)
    codes, offsets, (n_surv, n_clone, n_split, n_prune) = _decide(stats, scales_log, opacities_logit, params, None)
    room = max(0, int(params.max_gaussians) - n)
    if n_clone + n_split > room:
        # Rare: the growth cap binds. Pick the winners with the reference's own sort (largest average
        # gradient first, ties to the lower index) and decide again with them.
        grow = (codes & (CLONED | SPLIT)) != 0
        avg = stats.grad2d_sum / stats.count.clamp_min(1.0)
        key = torch.where(grow, avg, torch.full_like(avg, -math.inf))
        order = torch.sort(-key, stable=True).indices
        keep = torch.zeros(n, dtype=torch.uint8, device=device)
        keep[order[:room]] = 1
        codes, offsets, (n_surv, n_clone, n_split, n_prune) = _decide(stats, scales_log, opacities_logit, params, keep)
    return DensifyPlan(codes, offsets, n_surv, n_clone, n_split, n_prune)


def densify_decisions_triton(stats, scales_log: Tensor, opacities_logit: Tensor, params) -> Dict[str, Tensor]:
    """Boolean masks [N] ``clone``, ``split``, ``prune``, equal to ``splatgen.densify.densify_decisions``."""
    return densify_plan_triton(stats, scales_log, opacities_logit, params).masks()


# ---------------------------------------------------------------------------------------------------------
# 3. compaction, split sampling and optimizer state
# ---------------------------------------------------------------------------------------------------------
# Sizes vary from call to call (N grows with densification): do not specialise on them, or Triton
# recompiles whenever one becomes 1 or a multiple of 16.
@triton.jit(do_not_specialize=["N", "n_survive", "n_clone", "n_split", "seed"])
def _scatter_kernel(
    codes_ptr,  # [N] uint8
    block_offsets_ptr,  # [NB, 4] int32
    N,
    n_survive,
    n_clone,
    n_split,
    src_ptr,  # [N, D] parameter (or a state tensor when not HAS_PARAM)
    dst_ptr,  # [N_new, D]
    st0_src_ptr,  # [N, D] Adam moment (when NUM_STATES >= 1)
    st0_dst_ptr,
    st1_src_ptr,  # [N, D] (when NUM_STATES == 2)
    st1_dst_ptr,
    quats_ptr,  # [N, 4] parent rotations (MODE 2)
    scales_ptr,  # [N, 3] parent log scales (MODE 2)
    log_shrink,
    seed,
    D: tl.constexpr,
    DC: tl.constexpr,
    MODE: tl.constexpr,  # children: 0 copy the parent, 1 log-scale minus log_shrink, 2 sampled means
    HAS_PARAM: tl.constexpr,  # False: src/dst are a state tensor (children get zeros)
    NUM_STATES: tl.constexpr,
    BLOCK: tl.constexpr,  # rows per decide-kernel block (BLOCK_N)
    SUB: tl.constexpr,  # rows per program, divides BLOCK
):
    pid = tl.program_id(0)  # decide-kernel block: its offsets come from the scan
    sub = tl.program_id(1)  # sub-block of SUB rows inside it (bounds the tile, hence registers, per program)
    rows = pid * BLOCK + sub * SUB + tl.arange(0, SUB)
    rm = rows < N
    code = tl.load(codes_ptr + rows, mask=rm, other=0).to(tl.int32)
    surv = code & 1
    clone = (code >> 1) & 1
    split = (code >> 2) & 1
    # Destination rows = block offset + rows of the same kind earlier in the block (earlier sub-blocks, then
    # an exclusive in-sub-block tl.cumsum): the compaction keeps the original order.
    base_s = tl.load(block_offsets_ptr + pid * 4 + 0)
    base_c = tl.load(block_offsets_ptr + pid * 4 + 1)
    base_p = tl.load(block_offsets_ptr + pid * 4 + 2)
    if SUB < BLOCK:
        lane = tl.arange(0, BLOCK)
        before = tl.load(codes_ptr + pid * BLOCK + lane, mask=(lane < sub * SUB) & (pid * BLOCK + lane < N), other=0)
        before = before.to(tl.int32)
        base_s += tl.sum(before & 1, axis=0)
        base_c += tl.sum((before >> 1) & 1, axis=0)
        base_p += tl.sum((before >> 2) & 1, axis=0)
    d_surv = base_s + tl.cumsum(surv, axis=0) - surv
    d_clone = n_survive + base_c + tl.cumsum(clone, axis=0) - clone
    d_child0 = n_survive + n_clone + base_p + tl.cumsum(split, axis=0) - split
    d_child1 = d_child0 + n_split
    is_surv = (surv != 0) & rm
    is_clone = (clone != 0) & rm
    is_split = (split != 0) & rm
    r64 = rows.to(tl.int64)
    d_surv = d_surv.to(tl.int64)
    d_clone = d_clone.to(tl.int64)
    d_child0 = d_child0.to(tl.int64)
    d_child1 = d_child1.to(tl.int64)

    if MODE == 2:
        # Child k of parent i: mean + R(q) diag(exp(s)) z, z = the first 3 of tl.randn4x(seed, 2 i + k).
        qw = tl.load(quats_ptr + r64 * 4 + 0, mask=is_split, other=1.0).to(tl.float32)
        qx = tl.load(quats_ptr + r64 * 4 + 1, mask=is_split, other=0.0).to(tl.float32)
        qy = tl.load(quats_ptr + r64 * 4 + 2, mask=is_split, other=0.0).to(tl.float32)
        qz = tl.load(quats_ptr + r64 * 4 + 3, mask=is_split, other=0.0).to(tl.float32)
        inv = 1.0 / tl.maximum(tl.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)  # F.normalize
        qw, qx, qy, qz = qw * inv, qx * inv, qy * inv, qz * inv
        sx = tl.exp(tl.load(scales_ptr + r64 * 3 + 0, mask=is_split, other=0.0).to(tl.float32))
        sy = tl.exp(tl.load(scales_ptr + r64 * 3 + 1, mask=is_split, other=0.0).to(tl.float32))
        sz = tl.exp(tl.load(scales_ptr + r64 * 3 + 2, mask=is_split, other=0.0).to(tl.float32))
        r00 = 1.0 - 2.0 * (qy * qy + qz * qz)
        r01 = 2.0 * (qx * qy - qw * qz)
        r02 = 2.0 * (qx * qz + qw * qy)
        r10 = 2.0 * (qx * qy + qw * qz)
        r11 = 1.0 - 2.0 * (qx * qx + qz * qz)
        r12 = 2.0 * (qy * qz - qw * qx)
        r20 = 2.0 * (qx * qz - qw * qy)
        r21 = 2.0 * (qy * qz + qw * qx)
        r22 = 1.0 - 2.0 * (qx * qx + qy * qy)
        za, zb, zc, _ = tl.randn4x(seed, rows * 2)
        va, vb, vc = sx * za, sy * zb, sz * zc
        o0x = r00 * va + r01 * vb + r02 * vc
        o0y = r10 * va + r11 * vb + r12 * vc
        o0z = r20 * va + r21 * vb + r22 * vc
        za, zb, zc, _ = tl.randn4x(seed, rows * 2 + 1)
        va, vb, vc = sx * za, sy * zb, sz * zc
        o1x = r00 * va + r01 * vb + r02 * vc
        o1y = r10 * va + r11 * vb + r12 * vc
        o1z = r20 * va + r21 * vb + r22 * vc

    for c0 in tl.static_range(0, D, DC):
        cols = c0 + tl.arange(0, DC)
        cm = cols[None, :] < D
        src_off = r64[:, None] * D + cols[None, :]
        load_mask = (is_surv | is_split)[:, None] & cm  # pruned rows are never read
        x = tl.load(src_ptr + src_off, mask=load_mask, other=0.0)
        tl.store(dst_ptr + d_surv[:, None] * D + cols[None, :], x, mask=is_surv[:, None] & cm)
        tl.store(dst_ptr + d_clone[:, None] * D + cols[None, :], x, mask=is_clone[:, None] & cm)
        if HAS_PARAM:
            if MODE == 0:
                ch0 = x
                ch1 = x
            elif MODE == 1:
                ch0 = x.to(tl.float32) - log_shrink  # the reference: scales.float() - log(shrink)
                ch1 = ch0
            else:
                xf = x.to(tl.float32)
                ch0 = xf + tl.where(cols[None, :] == 0, o0x[:, None], tl.where(cols[None, :] == 1, o0y[:, None], o0z[:, None]))
                ch1 = xf + tl.where(cols[None, :] == 0, o1x[:, None], tl.where(cols[None, :] == 1, o1y[:, None], o1z[:, None]))
        else:
            ch0 = tl.zeros([SUB, DC], dtype=tl.float32)
            ch1 = ch0
        tl.store(dst_ptr + d_child0[:, None] * D + cols[None, :], ch0, mask=is_split[:, None] & cm)
        tl.store(dst_ptr + d_child1[:, None] * D + cols[None, :], ch1, mask=is_split[:, None] & cm)
        zero = tl.zeros([SUB, DC], dtype=tl.float32)
        state_mask = is_surv[:, None] & cm  # split parents' moments are dropped: children start at zero
        if NUM_STATES >= 1:
            y = tl.load(st0_src_ptr + src_off, mask=state_mask, other=0.0)
            tl.store(st0_dst_ptr + d_surv[:, None] * D + cols[None, :], y, mask=state_mask)
            tl.store(st0_dst_ptr + d_clone[:, None] * D + cols[None, :], y, mask=is_clone[:, None] & cm)
            tl.store(st0_dst_ptr + d_child0[:, None] * D + cols[None, :], zero, mask=is_split[:, None] & cm)
            tl.store(st0_dst_ptr + d_child1[:, None] * D + cols[None, :], zero, mask=is_split[:, None] & cm)
        if NUM_STATES >= 2:
            y = tl.load(st1_src_ptr + src_off, mask=state_mask, other=0.0)
            tl.store(st1_dst_ptr + d_surv[:, None] * D + cols[None, :], y, mask=state_mask)
            tl.store(st1_dst_ptr + d_clone[:, None] * D + cols[None, :], y, mask=is_clone[:, None] & cm)
            tl.store(st1_dst_ptr + d_child0[:, None] * D + cols[None, :], zero, mask=is_split[:, None] & cm)
            tl.store(st1_dst_ptr + d_child1[:, None] * D + cols[None, :], zero, mask=is_split[:, None] & cm)


def _scatter_config(width: int, mode: int) -> Tuple[int, int, int]:
    """(column chunk, rows per program, warps) of the scatter kernel for rows of ``width`` elements.

    About 1024 elements per tile, 4 per thread with 8 warps: bigger tiles reach 255 registers and spill on
    sm_90 (the three tensors' 64-bit addresses are live at once); the means' rotation math runs one row per
    thread. Checked with ptxas for sm_90a (tests/kernels/compile_sm90.py): 40 to 150 registers, no spills.
    """
    dc = min(max(next_power_of_2(width), 2), _MAX_COL_CHUNK)
    if mode == 2:
        return dc, 128, 4
    return dc, max(64, min(BLOCK_N, 1024 // dc)), 8


def _row_states(model, name: str, param: Tensor) -> List[Tensor]:
    """The optimizer-state tensors of ``param`` that ``GaussianModel.update`` will rebuild (dim > 0)."""
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return []
    st = opt.state.get(param, {})
    out = [v for k, v in st.items() if k != "step" and isinstance(v, Tensor) and v.dim() > 0]
    for v in out:
        assert v.shape == param.shape, f"optimizer state of {name!r} is not shaped like the parameter"
    return out


def apply_densify_triton(model, plan: DensifyPlan, params, seed: int) -> Dict[str, int]:
    """Apply a :class:`DensifyPlan` to ``model`` (parameters and optimizer state), like
    ``splatgen.densify.apply_densify``. Split children are drawn from ``seed`` (an int in [0, 2^31)).

    Returns the counts ``cloned``, ``split``, ``pruned``, ``total``.
    """
    n = len(plan.codes)
    n_new = plan.num_new
    log_shrink = math.log(params.split_shrink)
    old = {name: p.data.contiguous() for name, p in model.params.items()}
    assert all(v.shape[0] == n for v in old.values()), "plan and model disagree on the number of Gaussians"
    new_params: Dict[str, Tensor] = {}
    new_states: Dict[Tuple[str, int], Tensor] = {}
    nb = triton.cdiv(n, BLOCK_N)
    seed = int(seed) % (2**31)
    for name, x in old.items():
        states = _row_states(model, name, model.params[name])
        out = torch.empty((n_new, *x.shape[1:]), dtype=x.dtype, device=x.device)
        outs = [torch.empty((n_new, *s.shape[1:]), dtype=s.dtype, device=s.device) for s in states]
        new_params[name] = out
        for s, o in zip(states, outs):
            new_states[(name, id(s))] = o
        width = x[0].numel() if n > 0 else 0
        if n == 0 or n_new == 0 or width == 0:
            continue
        check_launchable(_scatter_kernel, x, plan.codes)
        mode = {"means": 2, "scales": 1}.get(name, 0)
        assert mode != 2 or width == 3
        dc, sub, warps = _scatter_config(width, mode)
        sts = [s.contiguous() for s in states]

        def launch(src: Tensor, dst: Tensor, st_src: List[Tensor], st_dst: List[Tensor], has_param: bool) -> None:
            k = len(st_src)
            # Unused state slots get harmless real pointers; the constexpr NUM_STATES keeps them untouched.
            ss, dd = st_src + [src] * (2 - k), st_dst + [dst] * (2 - k)
            _scatter_kernel[(nb, BLOCK_N // sub)](
                plan.codes, plan.block_offsets, n, plan.n_survive, plan.n_clone, plan.n_split,
                src, dst, ss[0], dd[0], ss[1], dd[1], old["quats"], old["scales"], log_shrink, seed,
                D=width, DC=dc, MODE=mode if has_param else 0, HAS_PARAM=has_param, NUM_STATES=k,
                BLOCK=BLOCK_N, SUB=sub, num_warps=warps, enable_fp_fusion=True,
            )

        # The parameter with up to two moments (Adam's exp_avg, exp_avg_sq) in one launch; any further
        # state tensors (e.g. AMSGrad's max_exp_avg_sq) get launches of their own.
        launch(x, out, sts[:2], outs[:2], True)
        for s, o in zip(sts[2:], outs[2:]):
            launch(s, o, [], [], False)

    model.update(lambda name, _: new_params[name], lambda name, s: new_states[(name, id(s))])
    return {"cloned": plan.n_clone, "split": plan.n_split, "pruned": plan.n_prune, "total": n_new}


def densify_step_triton(model, stats, params, seed: int) -> Dict[str, int]:
    """Decide and apply one densification step with the Triton kernels (one host synchronisation).

    Args:
        model: ``GaussianModel``-like: ``.params`` (means [N,3], scales [N,3], quats [N,4], opacities [N],
            sh0 [N,1,3], shN [N,K-1,3]), ``.optimizer`` (or None) and ``.update(param_fn, state_fn)``.
        stats: ``DensifyStats``-like, [N] float32 each. params: ``DensifyParams``-like.
        seed: int seeding the split children's normal samples.

    Returns:
        ``{"cloned", "split", "pruned", "total"}`` as ``splatgen.densify.densify_step``.
    """
    plan = densify_plan_triton(stats, model.params["scales"].data, model.params["opacities"].data, params)
    return apply_densify_triton(model, plan, params, seed)
