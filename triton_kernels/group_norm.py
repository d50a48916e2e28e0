"""GroupNorm (+ SiLU) on channels-last (NHWC) activations: kernels, launchers and autograd glue.

Computes ``F.silu(F.group_norm(x, G, weight, bias, eps))`` (or the norm alone, ``act=False``) for ``x`` of shape
[N, C, *spatial] stored channels-last, reading and writing that layout. PyTorch's CUDA GroupNorm works on
contiguous NCHW, so in a channels-last model every norm pays a layout copy before and after; Stable Diffusion's
VAE encoder applies norm then SiLU before every convolution, which is why the two are fused here.

The kernels see ``x`` as a row-major [N, P, C] array (P = prod(spatial)): a channels-last tensor is exactly that
in memory. Each program reads a tile of whole rows [BLOCK_P, C], viewed as [BLOCK_P, G, C/G] (contiguous loads
for every group at once), so no kernel reads a strided column.

Forward (3 launches):

1. ``_stats_kernel``, grid (S, N): each program walks ``TILES`` tiles of its slice of P and keeps, per group, the
   count, mean and sum of squared deviations M2, merging each tile's own (two-pass, in registers) mean and M2
   with Chan's formula. No sum-of-squares cancellation, so fp16/bf16 activations with a large mean keep an
   accurate variance.
2. ``_stats_finalize_kernel``, grid (N,): combines the S partials per group (Chan again) into ``mean`` and
   ``rstd = 1 / sqrt(M2 / (P C/G) + eps)`` (biased variance, as GroupNorm), float32 [N, G]; saved for backward.
3. ``_norm_kernel``, grid (tiles, N): ``y = act((x - mean) rstd w + b)``, written in x's dtype.

Backward (3 launches + 2 small sums), with ``z = xhat w + b``, ``dz = dy silu'(z)``, ``M = P C/G``:

    db[c] = sum_{n,p} dz,   dw[c] = sum_{n,p} dz xhat
    dx    = rstd (w dz - mean_g(w dz) - xhat mean_g(w dz xhat))

``_bwd_reduce_kernel`` (grid (S, N)) writes per-slice channel sums of dz and dz xhat (recomputing xhat and z
from x: nothing but x, mean and rstd is kept); ``_bwd_finalize_kernel`` (grid (N,)) sums them per sample and
forms the two group means; ``_bwd_dx_kernel`` (grid (tiles, N)) writes dx. dw and db sum the per-sample channel
sums over N. Every accumulation is float32 whatever the input dtype, and every reduction has a fixed order:
results are deterministic run to run (no atomics).
"""

from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._utils import check_launchable, next_power_of_2

TILE_ELEMENTS = 4096
"""Elements per tile (BLOCK_P rows of C channels): 16 fp32 values per thread with 8 warps."""
NUM_WARPS = 8
TARGET_PROGRAMS = 1024
"""Programs of the reduction kernels over all samples: several per SM on an H100 (132 SMs), few partials."""
_FINAL_BLOCK = 64
"""Partials per iteration of the finalize kernels."""


def _block_p(C_pad: int) -> int:
    return max(1, TILE_ELEMENTS // C_pad)


@triton.jit
def _silu_grad(z):
    """d silu(z) / dz = s (1 + z (1 - s)), s = sigmoid(z)."""
    s = tl.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


@triton.jit
def _tile(n, p0, P, G: tl.constexpr, CG: tl.constexpr, BLOCK_P: tl.constexpr, G_PAD: tl.constexpr,
          CG_PAD: tl.constexpr):
    """Offsets [BLOCK_P, G_PAD, CG_PAD] of rows p0.. of sample n, and their mask."""
    C: tl.constexpr = G * CG
    p = p0 + tl.arange(0, BLOCK_P)
    g = tl.arange(0, G_PAD)
    c = tl.arange(0, CG_PAD)
    mask = (p < P)[:, None, None] & (g < G)[None, :, None] & (c < CG)[None, None, :]
    offs = (n.to(tl.int64) * P + p[:, None, None]) * C + (g * CG)[None, :, None] + c[None, None, :]
    return offs, mask


@triton.jit
def _channel_params(w_ptr, b_ptr, G: tl.constexpr, CG: tl.constexpr, G_PAD: tl.constexpr, CG_PAD: tl.constexpr):
    g = tl.arange(0, G_PAD)
    c = tl.arange(0, CG_PAD)
    m = (g < G)[:, None] & (c < CG)[None, :]
    off = (g * CG)[:, None] + c[None, :]
    w = tl.load(w_ptr + off, mask=m, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + off, mask=m, other=0.0).to(tl.float32)
    return w, b, off, m


@triton.jit
def _group_stats(mean_ptr, rstd_ptr, n, G: tl.constexpr, G_PAD: tl.constexpr):
    g = tl.arange(0, G_PAD)
    mean = tl.load(mean_ptr + n * G + g, mask=g < G, other=0.0)
    rstd = tl.load(rstd_ptr + n * G + g, mask=g < G, other=0.0)
    return mean, rstd


# P varies with the resolution: do not specialise on it (no recompile when it becomes a multiple of 16).
@triton.jit(do_not_specialize=["P", "TILES"])
def _stats_kernel(
    x_ptr,  # [N, P, C] any float dtype
    part_mean_ptr,  # [N, S, G] f32 out
    part_m2_ptr,  # [N, S, G] f32 out
    P, TILES,
    G: tl.constexpr, CG: tl.constexpr,
    BLOCK_P: tl.constexpr, G_PAD: tl.constexpr, CG_PAD: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    S = tl.num_programs(0)
    cnt = 0.0
    mean = tl.zeros([G_PAD], dtype=tl.float32)
    m2 = tl.zeros([G_PAD], dtype=tl.float32)
    for t in range(TILES):
        p0 = (s * TILES + t) * BLOCK_P
        offs, mask = _tile(n, p0, P, G, CG, BLOCK_P, G_PAD, CG_PAD)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        nb = (tl.minimum(tl.maximum(P - p0, 0), BLOCK_P) * CG).to(tl.float32)
        t_mean = tl.sum(tl.sum(x, axis=2), axis=0) / tl.maximum(nb, 1.0)
        d = tl.where(mask, x - t_mean[None, :, None], 0.0)
        t_m2 = tl.sum(tl.sum(d * d, axis=2), axis=0)
        # Chan et al.: merge (cnt, mean, m2) with the tile's (nb, t_mean, t_m2); an empty tile changes nothing.
        tot = tl.maximum(cnt + nb, 1.0)
        delta = t_mean - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + t_m2 + delta * delta * (cnt * nb / tot)
        cnt = cnt + nb
    g = tl.arange(0, G_PAD)
    out = (n * S + s) * G + g
    tl.store(part_mean_ptr + out, mean, mask=g < G)
    tl.store(part_m2_ptr + out, m2, mask=g < G)


@triton.jit(do_not_specialize=["P", "S", "ROWS_PER_PART"])
def _stats_finalize_kernel(
    part_mean_ptr,  # [N, S, G] f32
    part_m2_ptr,  # [N, S, G] f32
    mean_ptr,  # [N, G] f32 out
    rstd_ptr,  # [N, G] f32 out
    P, S, ROWS_PER_PART, eps,
    G: tl.constexpr, CG: tl.constexpr,
    BLOCK_S: tl.constexpr, G_PAD: tl.constexpr,
):
    n = tl.program_id(0)
    g = tl.arange(0, G_PAD)
    cnt = 0.0
    mean = tl.zeros([G_PAD], dtype=tl.float32)
    m2 = tl.zeros([G_PAD], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s < S)[:, None] & (g < G)[None, :]
        off = (n * S + s)[:, None] * G + g[None, :]
        pm = tl.load(part_mean_ptr + off, mask=m, other=0.0)
        pq = tl.load(part_m2_ptr + off, mask=m, other=0.0)
        # elements of each partial: its rows (the last one may be short, those past P hold none) times C/G
        rows = tl.minimum(tl.maximum(P - s * ROWS_PER_PART, 0), ROWS_PER_PART)
        pc = (rows * CG).to(tl.float32)[:, None]
        # the chunk's own count, mean and M2 (exact combination), then one Chan merge into the running total
        c_cnt = tl.sum(rows * CG, axis=0).to(tl.float32)
        c_mean = tl.sum(pc * pm, axis=0) / tl.maximum(c_cnt, 1.0)
        dc = tl.where(m, pm - c_mean[None, :], 0.0)
        c_m2 = tl.sum(pq + pc * dc * dc, axis=0)
        tot = tl.maximum(cnt + c_cnt, 1.0)
        delta = c_mean - mean
        mean = mean + delta * (c_cnt / tot)
        m2 = m2 + c_m2 + delta * delta * (cnt * c_cnt / tot)
        cnt = cnt + c_cnt
    var = m2 / tl.maximum(cnt, 1.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + n * G + g, mean, mask=g < G)
    tl.store(rstd_ptr + n * G + g, rstd, mask=g < G)


@triton.jit(do_not_specialize=["P"])
def _norm_kernel(
    x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,
    y_ptr,  # [N, P, C] out, x's dtype
    P,
    G: tl.constexpr, CG: tl.constexpr, ACT: tl.constexpr,
    BLOCK_P: tl.constexpr, G_PAD: tl.constexpr, CG_PAD: tl.constexpr,
):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    offs, mask = _tile(n, pid * BLOCK_P, P, G, CG, BLOCK_P, G_PAD, CG_PAD)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w, b, _, _ = _channel_params(w_ptr, b_ptr, G, CG, G_PAD, CG_PAD)
    mean, rstd = _group_stats(mean_ptr, rstd_ptr, n, G, G_PAD)
    xhat = tl.where(mask, (x - mean[None, :, None]) * rstd[None, :, None], 0.0)  # as in _bwd_tile
    z = xhat * w[None, :, :] + b[None, :, :]
    if ACT:
        z = z * tl.sigmoid(z)
    tl.store(y_ptr + offs, z.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_tile(x_ptr, dy_ptr, offs, mask, w, b, mean, rstd, ACT: tl.constexpr):
    """(xhat, dz) of one tile, float32; dz is 0 on masked lanes."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # 0 on masked lanes (keeps the interpreter's exp from overflowing there; dz is 0 anyway)
    xhat = tl.where(mask, (x - mean[None, :, None]) * rstd[None, :, None], 0.0)
    if ACT:
        dy = dy * _silu_grad(xhat * w[None, :, :] + b[None, :, :])
    return xhat, dy


@triton.jit(do_not_specialize=["P", "TILES"])
def _bwd_reduce_kernel(
    x_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,
    part_dz_ptr,  # [N, S, C] f32 out: sum of dz over the slice
    part_dzx_ptr,  # [N, S, C] f32 out: sum of dz * xhat over the slice
    P, TILES,
    G: tl.constexpr, CG: tl.constexpr, ACT: tl.constexpr,
    BLOCK_P: tl.constexpr, G_PAD: tl.constexpr, CG_PAD: tl.constexpr,
):
    s = tl.program_id(0)
    n = tl.program_id(1)
    S = tl.num_programs(0)
    w, b, coff, cm = _channel_params(w_ptr, b_ptr, G, CG, G_PAD, CG_PAD)
    mean, rstd = _group_stats(mean_ptr, rstd_ptr, n, G, G_PAD)
    acc_dz = tl.zeros([G_PAD, CG_PAD], dtype=tl.float32)
    acc_dzx = tl.zeros([G_PAD, CG_PAD], dtype=tl.float32)
    for t in range(TILES):
        offs, mask = _tile(n, (s * TILES + t) * BLOCK_P, P, G, CG, BLOCK_P, G_PAD, CG_PAD)
        xhat, dz = _bwd_tile(x_ptr, dy_ptr, offs, mask, w, b, mean, rstd, ACT)
        acc_dz += tl.sum(dz, axis=0)
        acc_dzx += tl.sum(dz * xhat, axis=0)
    C: tl.constexpr = G * CG
    out = (n * S + s).to(tl.int64) * C + coff
    tl.store(part_dz_ptr + out, acc_dz, mask=cm)
    tl.store(part_dzx_ptr + out, acc_dzx, mask=cm)


@triton.jit(do_not_specialize=["S"])
def _bwd_finalize_kernel(
    part_dz_ptr, part_dzx_ptr,  # [N, S, C] f32
    w_ptr,
    dz_n_ptr, dzx_n_ptr,  # [N, C] f32 out: per-sample channel sums (db and dw before the sum over N)
    c1_ptr, c2_ptr,  # [N, G] f32 out: mean_g(w dz xhat), mean_g(w dz)
    S, inv_m,
    G: tl.constexpr, CG: tl.constexpr, BLOCK_S: tl.constexpr, G_PAD: tl.constexpr, CG_PAD: tl.constexpr,
):
    n = tl.program_id(0)
    C: tl.constexpr = G * CG
    w, _, coff, cm = _channel_params(w_ptr, w_ptr, G, CG, G_PAD, CG_PAD)
    acc_dz = tl.zeros([G_PAD, CG_PAD], dtype=tl.float32)
    acc_dzx = tl.zeros([G_PAD, CG_PAD], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s < S)[:, None, None] & cm[None, :, :]
        off = (n * S + s).to(tl.int64)[:, None, None] * C + coff[None, :, :]
        acc_dz += tl.sum(tl.load(part_dz_ptr + off, mask=m, other=0.0), axis=0)
        acc_dzx += tl.sum(tl.load(part_dzx_ptr + off, mask=m, other=0.0), axis=0)
    tl.store(dz_n_ptr + n * C + coff, acc_dz, mask=cm)
    tl.store(dzx_n_ptr + n * C + coff, acc_dzx, mask=cm)
    g = tl.arange(0, G_PAD)
    tl.store(c1_ptr + n * G + g, tl.sum(w * acc_dzx, axis=1) * inv_m, mask=g < G)
    tl.store(c2_ptr + n * G + g, tl.sum(w * acc_dz, axis=1) * inv_m, mask=g < G)


@triton.jit(do_not_specialize=["P"])
def _bwd_dx_kernel(
    x_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, c1_ptr, c2_ptr,
    dx_ptr,  # [N, P, C] out, x's dtype
    P,
    G: tl.constexpr, CG: tl.constexpr, ACT: tl.constexpr,
    BLOCK_P: tl.constexpr, G_PAD: tl.constexpr, CG_PAD: tl.constexpr,
):
    pid = tl.program_id(0)
    n = tl.program_id(1)
    offs, mask = _tile(n, pid * BLOCK_P, P, G, CG, BLOCK_P, G_PAD, CG_PAD)
    w, b, _, _ = _channel_params(w_ptr, b_ptr, G, CG, G_PAD, CG_PAD)
    mean, rstd = _group_stats(mean_ptr, rstd_ptr, n, G, G_PAD)
    c1, c2 = _group_stats(c1_ptr, c2_ptr, n, G, G_PAD)
    xhat, dz = _bwd_tile(x_ptr, dy_ptr, offs, mask, w, b, mean, rstd, ACT)
    dx = rstd[None, :, None] * (dz * w[None, :, :] - c2[None, :, None] - xhat * c1[None, :, None])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------ launchers
class _Shape:
    """Launch geometry of one (N, P, C, G): tile rows, pads, and how the reductions split P."""

    def __init__(self, N: int, P: int, C: int, G: int) -> None:
        self.N, self.P, self.C, self.G, self.CG = N, P, C, G, C // G
        self.G_PAD, self.CG_PAD = next_power_of_2(G), next_power_of_2(self.CG)
        self.BLOCK_P = _block_p(self.G_PAD * self.CG_PAD)
        self.n_tiles = triton.cdiv(P, self.BLOCK_P)
        per_sample = max(1, TARGET_PROGRAMS // max(N, 1))
        self.TILES = triton.cdiv(self.n_tiles, per_sample)
        self.S = triton.cdiv(self.n_tiles, self.TILES)

    def meta(self):
        return dict(G=self.G, CG=self.CG, BLOCK_P=self.BLOCK_P, G_PAD=self.G_PAD, CG_PAD=self.CG_PAD)


def as_rows(x: Tensor) -> Tensor:
    """[N, C, *spatial] -> the [N, P, C] row-major view of its channels-last storage (a copy only when ``x`` is
    not channels-last already)."""
    N, C = x.shape[:2]
    return x.movedim(1, -1).reshape(N, -1, C).contiguous()


def from_rows(y: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`as_rows`: [N, P, C] -> [N, C, *spatial] with channels-last strides (no copy)."""
    N, C = like.shape[:2]
    return y.view(N, *like.shape[2:], C).movedim(-1, 1)


def _check(x: Tensor, num_groups: int, weight: Tensor, bias: Tensor) -> None:
    if x.dim() < 2:
        raise ValueError(f"x {tuple(x.shape)} must be [N, C, *spatial]")
    C = x.shape[1]
    if num_groups < 1 or C % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the {C} channels")
    if weight.numel() != C or bias.numel() != C:
        raise ValueError(f"weight {tuple(weight.shape)} and bias {tuple(bias.shape)} must hold {C} values")


def group_norm_forward(
    x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float, act: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """``y = act(group_norm(x))`` on rows [N, P, C] (contiguous). Returns ``(y [N, P, C], mean, rstd [N, G] f32)``."""
    N, P, C = x.shape
    sh = _Shape(N, P, C, num_groups)
    dev = x.device
    y = torch.empty_like(x)
    mean = torch.empty(N, sh.G, dtype=torch.float32, device=dev)
    rstd = torch.empty_like(mean)
    if N == 0 or P == 0:
        return y, mean.zero_(), rstd.fill_(1.0 / (eps ** 0.5))
    part_mean = torch.empty(N, sh.S, sh.G, dtype=torch.float32, device=dev)
    part_m2 = torch.empty_like(part_mean)
    _stats_kernel[(sh.S, N)](x, part_mean, part_m2, P, sh.TILES, num_warps=NUM_WARPS, **sh.meta())
    _stats_finalize_kernel[(N,)](part_mean, part_m2, mean, rstd, P, sh.S, sh.TILES * sh.BLOCK_P, float(eps),
                                 G=sh.G, CG=sh.CG, BLOCK_S=_FINAL_BLOCK, G_PAD=sh.G_PAD, num_warps=4)
    _norm_kernel[(sh.n_tiles, N)](x, weight, bias, mean, rstd, y, P, ACT=act, num_warps=NUM_WARPS, **sh.meta())
    return y, mean, rstd


def group_norm_backward(
    dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor, act: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients ``(dx [N, P, C] in x's dtype, dw [C] f32, db [C] f32)`` of :func:`group_norm_forward`."""
    N, P, C = x.shape
    G = mean.shape[1]
    sh = _Shape(N, P, C, G)
    dev = x.device
    dx = torch.empty_like(x)
    if N == 0 or P == 0:
        z = torch.zeros(C, dtype=torch.float32, device=dev)
        return dx, z, z.clone()
    part_dz = torch.empty(N, sh.S, C, dtype=torch.float32, device=dev)
    part_dzx = torch.empty_like(part_dz)
    _bwd_reduce_kernel[(sh.S, N)](x, dy, weight, bias, mean, rstd, part_dz, part_dzx, P, sh.TILES, ACT=act,
                                  num_warps=NUM_WARPS, **sh.meta())
    dz_n = torch.empty(N, C, dtype=torch.float32, device=dev)
    dzx_n = torch.empty_like(dz_n)
    c1 = torch.empty(N, G, dtype=torch.float32, device=dev)
    c2 = torch.empty_like(c1)
    _bwd_finalize_kernel[(N,)](part_dz, part_dzx, weight, dz_n, dzx_n, c1, c2, sh.S, 1.0 / (P * sh.CG), G=G, CG=sh.CG,
                               BLOCK_S=_final_block_s(sh), G_PAD=sh.G_PAD, CG_PAD=sh.CG_PAD, num_warps=4)
    _bwd_dx_kernel[(sh.n_tiles, N)](x, dy, weight, bias, mean, rstd, c1, c2, dx, P, ACT=act, num_warps=NUM_WARPS,
                                    **sh.meta())
    return dx, dzx_n.sum(0), dz_n.sum(0)


def _final_block_s(sh: _Shape) -> int:
    """Partials per iteration of the backward finalize: a [BLOCK_S, C] tile of at most 4096 values."""
    return max(1, min(_FINAL_BLOCK, 4096 // (sh.G_PAD * sh.CG_PAD)))


class GroupNormSiLUFunction(torch.autograd.Function):
    """``act(group_norm(x, G, weight, bias, eps))`` with ``act`` SiLU or the identity, channels-last in and out.

    forward(x [N, C, *spatial], weight [C], bias [C], num_groups, eps, act) -> y like x (channels-last strides)
    backward: dx (channels-last, x's dtype), dweight and dbias (their own dtypes); saves x, mean and rstd.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, num_groups, eps, act):
        _check(x, num_groups, weight, bias)
        check_launchable(_norm_kernel, x, weight, bias)
        rows = as_rows(x)
        w, b = weight.reshape(-1).contiguous(), bias.reshape(-1).contiguous()
        y, mean, rstd = group_norm_forward(rows, int(num_groups), w, b, float(eps), bool(act))
        ctx.save_for_backward(rows, w, b, mean, rstd)
        ctx.act = bool(act)
        ctx.shape_of = x.shape
        ctx.param_dtypes = (weight.dtype, bias.dtype)
        return from_rows(y, x)

    @staticmethod
    def backward(ctx, dy):
        rows, w, b, mean, rstd = ctx.saved_tensors
        N, C = ctx.shape_of[:2]
        dy_rows = dy.movedim(1, -1).reshape(N, -1, C).to(rows.dtype).contiguous()
        dx, dw, db = group_norm_backward(dy_rows, rows, w, b, mean, rstd, ctx.act)
        dx = dx.view(N, *ctx.shape_of[2:], C).movedim(-1, 1)
        return dx, dw.to(ctx.param_dtypes[0]), db.to(ctx.param_dtypes[1]), None, None, None


def group_norm_silu_triton(
    x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float = 1e-5, act: bool = True
) -> Tensor:
    """``F.silu(F.group_norm(x, num_groups, weight, bias, eps))`` (``act=False``: the norm alone), fused.

    Args:
        x: [N, C, *spatial], fp32 / fp16 / bf16, best stored channels-last (any other layout is copied once).
        weight, bias: [C] (any float dtype; used in float32).

    Returns:
        y [N, C, *spatial] in x's dtype with channels-last strides; differentiable in x, weight and bias.
    """
    return GroupNormSiLUFunction.apply(x, weight, bias, int(num_groups), float(eps), bool(act))


def group_norm_silu_reference(
    x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float = 1e-5, act: bool = True
) -> Tensor:
    """The PyTorch reference: ``F.group_norm`` (+ ``F.silu``) on the NCHW tensor."""
    y = torch.nn.functional.group_norm(x, int(num_groups), weight, bias, float(eps))
    return torch.nn.functional.silu(y) if act else y


__all__ = ["GroupNormSiLUFunction", "group_norm_silu_triton", "group_norm_silu_reference"]
