"""Fused score-distillation (SDS) gradient: kernels, launcher and autograd glue.

Computes exactly ``splatgen.sds.sds_gradient`` (the PyTorch reference) in one read of the inputs::

    grad[b] = w[b] * (eps_u[b] + s * (eps_c[b] - eps_u[b]) - noise[b])      (float32)
    grad    = clamp(grad, -c, c)                       if c = grad_clip > 0
    grad    = 0 where grad is NaN or +-Inf            (counted in num_nonfinite)
    grad_norm = ||grad||_2,  loss = 0.5 * ||grad||^2

Every score-distillation loss of splatgen goes through this one gradient: ``noise`` is the loss's baseline (SDS's
injected noise, CSD's unconditional prediction, NFSD's zero or negative-prompt prediction, ISM's prediction at the
start of its interval, VSD's model of the renders; see ``splatgen.guidance.losses``).

Shapes (S is any trailing shape, e.g. latents [4, 64, 64] or pixels [3, 512, 512]):

    eps_pred  [2B, *S]  fp32 / fp16 / bf16, unconditional (or negative-prompt) half first
    noise     [B, *S]   any float dtype (need not match eps_pred)
    weight    [B]       w(t) per sample (each view may have its own timestep)
    grad      [B, *S]   float32, same shape as noise
    grad_norm []        float32;  num_nonfinite [] int64;  loss [] float32

Launches: ``_sds_grad_kernel`` over a 2D grid (blocks of elements, sample) reads every input element once,
writes the gradient once, and leaves one partial sum of squares and one bad-element count per program;
``_sds_finalize_kernel`` (one program) reduces those partials in a fixed order. The stats stay on the device
(no host sync) and are deterministic run to run, unlike an atomics reduction.

Exactness: inputs are upcast to float32 and the element-wise operations are the reference's, in the same
order, with FMA contraction disabled (``enable_fp_fusion=False``) because PyTorch's eager ops round after
every multiply. The gradient is therefore bit-identical to the reference on CUDA and in the interpreter.
The norm and loss are sums of squares in another order: they agree to a few float32 ulps per level of the
reduction tree (see the tests for the bound).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._utils import check_launchable

DEFAULT_BLOCK = 2048
"""Elements per program. 2048 with 8 warps gives each thread 8 elements: 16-byte vector loads of fp16."""
DEFAULT_WARPS = 8
_FINAL_BLOCK = 4096
"""Partials per iteration of the one-program finalize: 8 iterations for the 32k partials of 4 x 16M elements."""
_FINAL_WARPS = 8
_INF = tl.constexpr(float("inf"))


# Sizes vary from call to call (N grows with densification): do not specialise on them, or Triton
# recompiles whenever one becomes 1 or a multiple of 16.
@triton.jit(do_not_specialize=["M", "B"])
def _sds_grad_kernel(
    eps_ptr,  # [2B, M] any float dtype
    noise_ptr,  # [B, M] any float dtype
    weight_ptr,  # [B]
    grad_ptr,  # [B, M] float32 out
    part_sq_ptr,  # [B * num_programs(0)] float32 out: partial sum of grad^2
    part_bad_ptr,  # [B * num_programs(0)] int32 out: partial count of non-finite elements
    M,
    B,
    guidance_scale,
    grad_clip,
    CLIP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1)
    offs = pid_m * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    # int64 row starts: 2B * M may exceed 2^31 for large batches of pixels.
    row_u = b.to(tl.int64) * M
    row_c = (b + B).to(tl.int64) * M
    # Every input is read exactly once: tell the cache not to keep it.
    e_u = tl.load(eps_ptr + row_u + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    e_c = tl.load(eps_ptr + row_c + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    n = tl.load(noise_ptr + row_u + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    w = tl.load(weight_ptr + b).to(tl.float32)

    # Same operations, same order as the reference (classifier_free_guidance, then the weight).
    eps_hat = e_u + guidance_scale * (e_c - e_u)
    g = w * (eps_hat - n)
    if CLIP:
        # torch.clamp semantics: NaN stays NaN (tl.minimum/maximum would turn it into a bound on GPUs).
        g = tl.where(g > grad_clip, grad_clip, tl.where(g < -grad_clip, -grad_clip, g))
    finite = tl.abs(g) < _INF  # False for NaN and +-Inf
    g = tl.where(finite, g, 0.0)
    tl.store(grad_ptr + row_u + offs, g, mask=mask)

    # Masked lanes hold g = 0 (or NaN when w is Inf, zeroed above) and must not be counted.
    bad = (~finite) & mask
    pid = b * tl.num_programs(0) + pid_m
    tl.store(part_sq_ptr + pid, tl.sum(g * g, axis=0))
    tl.store(part_bad_ptr + pid, tl.sum(bad.to(tl.int32), axis=0))


# Sizes vary from call to call (N grows with densification): do not specialise on them, or Triton
# recompiles whenever one becomes 1 or a multiple of 16.
@triton.jit(do_not_specialize=["P"])
def _sds_finalize_kernel(
    part_sq_ptr,  # [P] float32
    part_bad_ptr,  # [P] int32
    P,
    norm_ptr,  # [] float32 out
    loss_ptr,  # [] float32 out
    bad_ptr,  # [] int64 out
    BLOCK: tl.constexpr,
):
    # One program, fixed order: deterministic. float64 costs nothing at this size and keeps the total
    # as accurate as the partials themselves.
    acc = tl.zeros([BLOCK], dtype=tl.float64)
    cnt = tl.zeros([BLOCK], dtype=tl.int64)
    for start in range(0, P, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < P
        acc += tl.load(part_sq_ptr + offs, mask=m, other=0.0).to(tl.float64)
        cnt += tl.load(part_bad_ptr + offs, mask=m, other=0).to(tl.int64)
    sq = tl.sum(acc, axis=0)
    tl.store(norm_ptr, tl.sqrt(sq).to(tl.float32))
    tl.store(loss_ptr, (0.5 * sq).to(tl.float32))
    tl.store(bad_ptr, tl.sum(cnt, axis=0))


def _check_shapes(eps_pred: Tensor, noise: Tensor, weight: Tensor) -> int:
    if noise.dim() == 0:
        raise ValueError("noise must be [B, ...] with a batch dimension")
    B = noise.shape[0]
    if eps_pred.shape[0] != 2 * B or eps_pred.shape[1:] != noise.shape[1:]:
        raise ValueError(f"eps_pred {tuple(eps_pred.shape)} must be [2B, ...] for noise {tuple(noise.shape)}")
    if weight.numel() != B:
        raise ValueError(f"weight {tuple(weight.shape)} must hold one value per sample (B={B})")
    return B


def _sds_forward(
    eps_pred: Tensor,
    noise: Tensor,
    weight: Tensor,
    guidance_scale: float,
    grad_clip: float,
    block_size: Optional[int] = None,
    num_warps: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch both kernels. Returns ``(grad, grad_norm, loss, num_nonfinite)`` (see the module docstring)."""
    B = _check_shapes(eps_pred, noise, weight)
    check_launchable(_sds_grad_kernel, eps_pred, noise, weight)
    device = noise.device
    grad = torch.empty(noise.shape, dtype=torch.float32, device=device)
    M = noise.numel() // B if B > 0 else 0
    if M == 0:
        zero = lambda dt: torch.zeros((), dtype=dt, device=device)  # noqa: E731
        return grad, zero(torch.float32), zero(torch.float32), zero(torch.int64)
    assert M < 2**31, "per-sample element count must fit in int32"
    # .contiguous() is free for the usual contiguous UNet output; channels-last or sliced inputs are copied.
    eps = eps_pred.contiguous()
    nz = noise.contiguous()
    w = weight.reshape(-1).contiguous()
    block = int(block_size or DEFAULT_BLOCK)
    nblk = triton.cdiv(M, block)
    part_sq = torch.empty(B * nblk, dtype=torch.float32, device=device)
    part_bad = torch.empty(B * nblk, dtype=torch.int32, device=device)
    norm = torch.empty((), dtype=torch.float32, device=device)
    loss = torch.empty((), dtype=torch.float32, device=device)
    bad = torch.empty((), dtype=torch.int64, device=device)
    clip = float(grad_clip)
    _sds_grad_kernel[(nblk, B)](
        eps, nz, w, grad, part_sq, part_bad, M, B, float(guidance_scale), clip,
        CLIP=clip > 0, BLOCK=block, num_warps=int(num_warps or DEFAULT_WARPS), enable_fp_fusion=False,
    )
    _sds_finalize_kernel[(1,)](part_sq, part_bad, B * nblk, norm, loss, bad, BLOCK=_FINAL_BLOCK, num_warps=_FINAL_WARPS,
                               enable_fp_fusion=False)
    return grad, norm, loss, bad


def sds_gradient_triton(
    eps_pred: Tensor,
    noise: Tensor,
    weight: Tensor,
    guidance_scale: float,
    grad_clip: float = 0.0,
    *,
    block_size: Optional[int] = None,
    num_warps: Optional[int] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The SDS gradient on x0, ``w(t) * (uncond + s (cond - uncond) - noise)``, in float32 (fused).

    Same contract as ``splatgen.sds.sds_gradient``.

    Args:
        eps_pred: [2B, ...] model predictions, unconditional half first (fp32, fp16 or bf16).
        noise: [B, ...] the noise that was added.
        weight: [B] per-sample w(t).
        guidance_scale: CFG scale s.
        grad_clip: clip every element to [-grad_clip, grad_clip] when > 0.
        block_size, num_warps: tuning knobs for benchmarks (defaults 2048 and 8).

    Returns:
        grad [B, ...] float32 with non-finite elements set to 0, and stats on the device: ``grad_norm`` (0-dim
        float32, L2 norm of the returned gradient) and ``num_nonfinite`` (0-dim int64, elements zeroed).
    """
    grad, norm, _, bad = _sds_forward(eps_pred, noise, weight, guidance_scale, grad_clip, block_size, num_warps)
    return grad, {"grad_norm": norm, "num_nonfinite": bad}


class SDSLossFunction(torch.autograd.Function):
    """``loss = 0.5 ||g||^2`` whose gradient with respect to ``x0`` is exactly ``g`` (the fused SDS gradient).

    forward(x0 [B, ...], eps_pred [2B, ...], noise [B, ...], weight [B], guidance_scale, grad_clip)
        -> (loss [], grad_norm [], num_nonfinite [] int64)
    backward: d loss / d x0 = grad_output * g, cast to x0's dtype; nothing flows to the other inputs (the
    UNet prediction is a constant of the SDS objective).
    """

    @staticmethod
    def forward(ctx, x0, eps_pred, noise, weight, guidance_scale, grad_clip):
        if x0.shape != noise.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
        grad, norm, loss, bad = _sds_forward(eps_pred, noise, weight, guidance_scale, grad_clip)
        ctx.save_for_backward(grad)
        ctx.x0_dtype = x0.dtype
        ctx.mark_non_differentiable(norm, bad)
        return loss, norm, bad

    @staticmethod
    def backward(ctx, grad_loss, _grad_norm, _num_nonfinite):
        (grad,) = ctx.saved_tensors
        grad_x0 = (grad_loss * grad).to(ctx.x0_dtype) if ctx.needs_input_grad[0] else None
        return grad_x0, None, None, None, None, None


def sds_loss_triton(
    x0: Tensor,
    eps_pred: Tensor,
    noise: Tensor,
    weight: Tensor,
    guidance_scale: float,
    grad_clip: float = 0.0,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """SDS loss on ``x0`` [B, ...] through the fused kernel.

    Returns ``(loss, stats)``: ``loss`` is a 0-dim float32 tensor with the value of ``splatgen.sds.sds_loss``
    (0.5 ||grad||^2) and ``d loss / d x0 = grad`` of :func:`sds_gradient_triton`; ``stats`` holds
    ``grad_norm`` and ``num_nonfinite`` (0-dim tensors on the device, nothing synchronised).
    """
    loss, norm, bad = SDSLossFunction.apply(x0, eps_pred, noise, weight, float(guidance_scale), float(grad_clip))
    return loss, {"grad_norm": norm, "num_nonfinite": bad}
