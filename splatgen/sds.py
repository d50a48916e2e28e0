"""Score distillation sampling (SDS) as pure functions: the PyTorch reference.

The fused Triton kernel in ``splatgen_kernels.sds`` computes exactly :func:`sds_gradient` in one pass and
is tested against it.

Notation: x0 are the rendered latents (or pixels) with gradient, t the timesteps [B], abar the cumulative
product of the noise schedule's alphas, ``noise`` the sampled epsilon, and the diffusion model's output
``eps_pred`` stacks the unconditional (or negative-prompt) half first and the conditional half second,
``[2B, ...]``, as one batched UNet call produces it.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

WEIGHTINGS = ("sds", "uniform", "snr", "dreamtime")


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """``uncond + s * (cond - uncond)`` (the standard form; s = 1 is the plain conditional model)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per sample."""
    abar = alphas_cumprod.to(x0.device, torch.float32)[t].view(-1, *([1] * (x0.dim() - 1)))
    return (abar.sqrt() * x0.float() + (1.0 - abar).sqrt() * noise.float()).to(x0.dtype)


def sds_weight(t: Tensor, alphas_cumprod: Tensor, kind: str = "sds", dreamtime_prior: Tensor | None = None) -> Tensor:
    """Per-sample weight w(t) [B] (float32).

    - ``sds``: 1 - abar_t (DreamFusion's choice, sigma_t^2);
    - ``uniform``: 1;
    - ``snr``: sqrt(abar_t) (1 - abar_t) (threestudio's 'SNR-style' weighting);
    - ``dreamtime``: the TP-SDS prior p(t) rescaled to mean 1 over its support (pass ``dreamtime_prior`` [T]).
    """
    abar = alphas_cumprod.to(t.device, torch.float32)[t]
    if kind == "sds":
        return 1.0 - abar
    if kind == "uniform":
        return torch.ones_like(abar)
    if kind == "snr":
        return abar.sqrt() * (1.0 - abar)
    if kind == "dreamtime":
        if dreamtime_prior is None:
            raise ValueError("weighting 'dreamtime' needs the TP-SDS prior (schedules.tp_sds_prior)")
        p = dreamtime_prior.to(t.device, torch.float32)
        return p[t] / p[p > 0].mean()
    raise ValueError(f"unknown SDS weighting {kind!r}; choose one of {list(WEIGHTINGS)}")


def sds_gradient(
    eps_pred: Tensor,
    noise: Tensor,
    weight: Tensor,
    guidance_scale: float,
    grad_clip: float = 0.0,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The SDS gradient on x0: ``w(t) * (uncond + s (cond - uncond) - noise)``, in float32.

    Args:
        eps_pred: [2B, ...] model predictions, unconditional half first.
        noise: [B, ...] the noise that was added.
        weight: [B] per-sample w(t).
        guidance_scale: CFG scale s.
        grad_clip: clip every element to [-grad_clip, grad_clip] when > 0.

    Returns:
        grad [B, ...] float32 with non-finite elements set to 0, and stats: ``grad_norm`` (L2 norm of the
        returned gradient) and ``num_nonfinite`` (how many elements were zeroed).
    """
    B = noise.shape[0]
    if eps_pred.shape[0] != 2 * B or eps_pred.shape[1:] != noise.shape[1:]:
        raise ValueError(f"eps_pred {tuple(eps_pred.shape)} must be [2B, ...] for noise {tuple(noise.shape)}")
    e = eps_pred.float()
    eps_hat = classifier_free_guidance(e[:B], e[B:], guidance_scale)
    grad = weight.float().view(-1, *([1] * (noise.dim() - 1))) * (eps_hat - noise.float())
    if grad_clip > 0:
        grad = grad.clamp(-grad_clip, grad_clip)
    bad = ~torch.isfinite(grad)
    grad = torch.where(bad, torch.zeros_like(grad), grad)
    return grad, {"grad_norm": grad.norm(), "num_nonfinite": bad.sum()}


def sds_loss(x0: Tensor, grad: Tensor) -> Tensor:
    """A scalar whose gradient with respect to ``x0`` is exactly ``grad`` (summed over the batch).

    ``0.5 * ||x0 - stopgrad(x0 - grad)||^2`` has d/dx0 = grad, and its value (0.5 ||grad||^2) is a
    meaningful number to log, unlike ``(x0 * grad).sum()``.
    """
    target = (x0.detach().float() - grad).detach()
    return 0.5 * torch.nn.functional.mse_loss(x0.float(), target, reduction="sum")
