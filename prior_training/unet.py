"""The prior's diffusion model: a pixel-space diffusers ``UNet2DConditionModel`` at 64x64 and its noise schedule.

- UNet: RGB in and out (epsilon prediction), four resolutions 64/32/16/8 with widths (32, 64, 128, 192), one
  ResNet layer per block at 64 and 32 and two at 16 and 8, text cross-attention at 16x16 and 8x8 (and in
  the middle block), 4 heads, ``cross_attention_dim`` = the CLIP text tower's width (192). 15.8 M
  parameters (30 MiB in fp16), 5.6 GFLOP per 64x64 forward pass.
- Schedule: ``DDPMScheduler`` with 1000 steps, epsilon prediction and Stable Diffusion's ``scaled_linear``
  betas (0.00085 to 0.012). The same abar(t) as SD and as the world's oracle prior means the timestep
  schedules of splatgen (TP-SDS's constants were tuned on SD) see the same signal-to-noise ratio at the
  same t whichever prior guides.
- Loss: MSE on epsilon with the Min-SNR-gamma weight ``min(SNR(t), gamma) / SNR(t)`` (gamma = 5, Hang et
  al. 2023), which stops the easy low-noise timesteps from dominating and speeds up convergence.
- Sampling (2D samples for the evaluation): deterministic DDIM with classifier-free guidance. The schedule's
  last abar is 0.0047, not 0: training inputs at t = 999 still hold 7% of the image, which is mostly white
  background, so sampling starts from a white image noised to t = 999 (``start="white"``) rather than from
  pure noise (``start="noise"``).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import torch
from torch import Tensor

UNET_CONFIG: Dict[str, Any] = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 128, 192),
    layers_per_block=(1, 1, 2, 2),
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=192,
    attention_head_dim=4,  # diffusers' historical name: the number of heads
    norm_num_groups=16,
)
#: the test path's UNet (32x32, two resolutions, ~0.3 M parameters).
TINY_UNET_CONFIG: Dict[str, Any] = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=2,
    norm_num_groups=8,
)

SCHEDULER_CONFIG: Dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
)


def make_unet(config: Dict[str, Any], cross_attention_dim: Optional[int] = None, seed: int = 0):
    """A randomly initialised ``UNet2DConditionModel`` (float32) from ``config``."""
    from diffusers import UNet2DConditionModel

    cfg = dict(config)
    if cross_attention_dim is not None:
        cfg["cross_attention_dim"] = int(cross_attention_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**cfg)


def make_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def min_snr_weight(alphas_cumprod: Tensor, t: Tensor, gamma: float = 5.0) -> Tensor:
    """[B] Min-SNR-gamma loss weight for epsilon prediction: ``min(SNR, gamma) / SNR`` (1 at high noise)."""
    abar = alphas_cumprod[t]
    snr = abar / (1.0 - abar)
    return torch.clamp(snr, max=gamma) / snr


def diffusion_loss(
    unet: torch.nn.Module,
    x0: Tensor,
    emb: Tensor,
    alphas_cumprod: Tensor,
    generator: Optional[torch.Generator] = None,
    snr_gamma: float = 5.0,
    class_labels: Optional[Tensor] = None,
    group_size: int = 1,
) -> Tensor:
    """The training loss of one batch: x0 [B, 3, S, S] in [-1, 1], text embeddings [B, L, D].

    The multi-view prior's batches (``prior_training.multiview``): ``class_labels`` [B, 16] the views' cameras, and
    one timestep per group of ``group_size`` consecutive rows (the views of one object); ``group_size=1`` draws
    exactly as the single-view prior's training does."""
    B = x0.shape[0]
    T = alphas_cumprod.shape[0]
    dev = generator.device if generator is not None else x0.device
    t = torch.randint(0, T, (B // group_size,), generator=generator, device=dev)
    t = (t.repeat_interleave(group_size) if group_size > 1 else t).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=dev).to(x0.device)
    abar = alphas_cumprod[t].view(B, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise
    pred = unet(x_t, t, encoder_hidden_states=emb, class_labels=class_labels).sample
    per_sample = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))
    w = min_snr_weight(alphas_cumprod, t, snr_gamma) if snr_gamma > 0 else torch.ones_like(per_sample)
    return (w * per_sample).mean()


class EMA:
    """Exponential moving average of a model's parameters with the usual warm-up of the decay:
    ``decay_n = min(max_decay, (1 + n) / (10 + n))`` at the n-th update."""

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.999) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay = float(max_decay)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.max_decay, (1 + self.updates) / (10 + self.updates))
        ema = [p for p in self.model.parameters()]
        cur = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, cur, 1.0 - decay)

    def state_dict(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "max_decay": self.max_decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


@torch.no_grad()
def ddim_sample(
    unet: torch.nn.Module,
    cond: Tensor,
    uncond: Tensor,
    alphas_cumprod: Tensor,
    steps: int = 50,
    guidance_scale: float = 5.0,
    generator: Optional[torch.Generator] = None,
    start: str = "white",
    batch_size: int = 256,
) -> Tensor:
    """Deterministic DDIM samples [N, 3, S, S] in [-1, 1] for text embeddings ``cond`` [N, L, D].

    ``uncond`` [1, L, D] is the empty prompt's embedding; classifier-free guidance
    ``eps = eps_u + s (eps_c - eps_u)``; x0 is clipped to [-1, 1] at every step (and eps recomputed from it).
    Timesteps: ``steps`` values evenly spaced from T-1 down to 0. Noise comes from ``generator`` (CPU).
    """
    if start not in ("white", "noise"):
        raise ValueError(f"start={start!r}; expected 'white' or 'noise'")
    device = cond.device
    p = next(unet.parameters())
    S = unet.config.sample_size
    S = (S, S) if isinstance(S, int) else tuple(S)
    abar_all = alphas_cumprod.to(device, torch.float32)
    T = abar_all.shape[0]
    ts = torch.linspace(T - 1, 0, steps).round().long().tolist()
    out = []
    for b0 in range(0, cond.shape[0], batch_size):
        c = cond[b0 : b0 + batch_size]
        n = c.shape[0]
        noise = torch.randn(n, 3, *S, generator=generator).to(device)
        a_T = abar_all[ts[0]]
        x = (a_T.sqrt() * torch.ones_like(noise) if start == "white" else 0.0) + (1.0 - a_T).sqrt() * noise
        emb = torch.cat([uncond.expand(n, -1, -1), c]).to(p.dtype)
        x0 = x
        for i, t in enumerate(ts):
            a = abar_all[t]
            a_prev = abar_all[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=device)
            tt = torch.full((2 * n,), t, device=device, dtype=torch.long)
            e = unet(torch.cat([x, x]).to(p.dtype), tt, encoder_hidden_states=emb).sample.float()
            e_u, e_c = e[:n], e[n:]
            eps = e_u + guidance_scale * (e_c - e_u)
            x0 = ((x - (1.0 - a).sqrt() * eps) / a.sqrt()).clamp(-1.0, 1.0)
            eps = (x - a.sqrt() * x0) / (1.0 - a).sqrt()
            x = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps
        out.append(x0.clamp(-1.0, 1.0))
    return torch.cat(out)
