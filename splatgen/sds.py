"""Score distillation as pure functions: the PyTorch reference of the fused gradient, and the diffusion
arithmetic the losses of :mod:`splatgen.guidance.losses` share (noising, DDIM steps, exact denoisers).

The fused Triton kernel in ``splatgen_kernels.sds`` computes exactly :func:`sds_gradient` in one pass and
is tested against it. Every loss of splatgen goes through that one gradient,

    grad = w(t) (eps_null + s (eps_cond - eps_null) - baseline)

and differs in what it puts in its slots: SDS measures the guided prediction against the injected noise,
CSD against ``eps_null`` (the classifier-free direction alone), NFSD against zero or a negative prompt's
prediction, ISM against the empty prompt's prediction at the start of an interval, VSD against a model of
the renders' own distribution (see the table in :mod:`splatgen.guidance.losses`).

Notation: x0 are the rendered latents (or pixels) with gradient, t the timesteps [B], abar the cumulative
product of the noise schedule's alphas, ``noise`` the sampled epsilon (or, generally, the baseline), and the
diffusion model's output ``eps_pred`` stacks the unconditional (or negative-prompt) half first and the
conditional half second, ``[2B, ...]``, as one batched UNet call produces it.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """``uncond + s * (cond - uncond)`` (the standard form; s = 1 is the plain conditional model)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def add_noise(x0: Tensor, noise: Tensor, t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per sample."""
    abar = alphas_cumprod.to(x0.device, torch.float32)[t].view(-1, *([1] * (x0.dim() - 1)))
    return (abar.sqrt() * x0.float() + (1.0 - abar).sqrt() * noise.float()).to(x0.dtype)


def ddim_step(x: Tensor, eps: Tensor, abar_from: Tensor, abar_to: Tensor) -> Tensor:
    """One deterministic DDIM step (eta = 0) of [B, ...] samples from noise level ``abar_from`` to ``abar_to``
    ([B] each; a larger ``abar_to`` denoises, a smaller one is DDIM *inversion*), in float32:

        x0_hat = (x - sqrt(1 - abar_from) eps) / sqrt(abar_from)
        x'     = sqrt(abar_to) x0_hat + sqrt(1 - abar_to) eps
    """
    view = (-1, *([1] * (x.dim() - 1)))
    a0 = abar_from.to(x.device, torch.float32).view(view)
    a1 = abar_to.to(x.device, torch.float32).view(view)
    e = eps.float()
    x0_hat = (x.float() - (1.0 - a0).sqrt() * e) / a0.sqrt()
    return a1.sqrt() * x0_hat + (1.0 - a1).sqrt() * e


def posterior_mean(x_t: Tensor, abar: Tensor, points: Tensor, masks: Optional[Tensor] = None,
                   log_prior: Optional[Tensor] = None) -> Tensor:
    """The exact denoiser of a mixture of point masses (the world's oracle prior; VSD's estimator of the renders).

    Args:
        x_t: [B, D] noisy samples.
        abar: [B] cumulative alphas of their timesteps.
        points: [V, D] the data points y_i.
        masks: [B, V] bool, which points each sample's distribution holds (None: all), uniformly.
        log_prior: [B, V] log of each point's prior mass per sample (-inf: not held), instead of ``masks``.

    Returns:
        [B, D] float64 ``sum_i softmax_i(log p_i - ||x_t - sqrt(abar) y_i||^2 / (2 (1 - abar))) y_i``, computed
        with ``||x||^2 - 2 sqrt(abar) x.y + abar ||y||^2`` and a max-subtracted softmax, so it is exact at
        every timestep.
    """
    x = x_t.to(torch.float64)
    Y = points.to(device=x.device, dtype=torch.float64)
    a = abar.to(device=x.device, dtype=torch.float64)
    sa = a.sqrt()[:, None]
    d2 = (x * x).sum(-1, keepdim=True) - 2.0 * sa * (x @ Y.T) + a[:, None] * (Y * Y).sum(-1)[None]
    logits = -d2.clamp_min(0.0) / (2.0 * (1.0 - a))[:, None]
    if masks is not None:
        logits = logits.masked_fill(~masks.to(x.device), float("-inf"))
    if log_prior is not None:
        logits = logits + log_prior.to(x.device, torch.float64)
    w = torch.softmax(logits, dim=-1)
    return w @ Y


def sds_weight(t: Tensor, alphas_cumprod: Tensor, kind: str = "sds", dreamtime_prior: Tensor | None = None) -> Tensor:
    """Per-sample weight w(t) [B] (float32).

    - ``sds``: 1 - abar_t (DreamFusion's choice, sigma_t^2);
    - ``uniform``: 1;
    - ``snr``: sqrt(abar_t) (1 - abar_t) (threestudio's 'SNR-style' weighting);
    - ``dreamtime``: the TP-SDS prior p(t) rescaled to mean 1 over its support (pass ``dreamtime_prior`` [T]).
    """
    if kind not in WEIGHTINGS:
        raise ValueError(f"unknown SDS weighting {kind!r}; choose one of {list(WEIGHTINGS)}")
    return WEIGHTINGS[kind](t, alphas_cumprod.to(t.device, torch.float32)[t], dreamtime_prior)


def _dreamtime_weight(t: Tensor, abar: Tensor, prior: Tensor | None) -> Tensor:
    if prior is None:
        raise ValueError("weighting 'dreamtime' needs the TP-SDS prior (schedules.tp_sds_prior)")
    p = prior.to(t.device, torch.float32)
    return p[t] / p[p > 0].mean()


#: ``guidance.weighting`` -> w(t, abar_t, TP-SDS prior) (see :func:`sds_weight`); the keys are the config's allowed
#: values (``config.WEIGHTING_NAMES``, a test pins them).
WEIGHTINGS: Dict[str, Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]] = {
    "sds": lambda t, abar, prior: 1.0 - abar,
    "uniform": lambda t, abar, prior: torch.ones_like(abar),
    "snr": lambda t, abar, prior: abar.sqrt() * (1.0 - abar),
    "dreamtime": _dreamtime_weight,
}


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
        noise: [B, ...] the noise that was added (for SDS; every other loss puts its baseline here).
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
