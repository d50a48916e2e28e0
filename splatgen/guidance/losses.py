"""Score-distillation losses: which noisy input the prior scores, and what its guided score is measured against.

Every loss here hands the trainer the same four tensors, from which the fused gradient of
:func:`splatgen.sds.sds_gradient` (PyTorch) or ``splatgen_kernels.sds`` (Triton) is computed in one pass::

    grad(x0) = w(t) (eps_null + s (eps_cond - eps_null) - baseline)

``eps_null`` and ``eps_cond`` are the prior's predictions at the loss's noisy input ``x_t`` for the text
classifier-free guidance measures against (the negative prompt, or the empty prompt) and for the view's own
prompt (with Perp-Neg, the combination of :func:`~splatgen.guidance.conditioning.perp_neg_combine`), ``s`` the
guidance scale and ``w(t)`` the weighting (``guidance.weighting``). The losses differ in ``x_t`` and the
baseline:

======  ==========================================================  =================================  ============
loss    noisy input x_t                                             baseline                           UNet rows / view
======  ==========================================================  =================================  ============
sds     sqrt(abar_t) x0 + sqrt(1 - abar_t) eps                      eps, the injected noise            2
csd     the same                                                    eps_null                           2
nfsd    the same                                                    0 (t < t_small) or eps_neg(x_t)    2 (+1 with a negative prompt)
ism     DDIM inversion of x0 to s = t - delta, one DDIM step to t   eps_empty(x_s, s)                  2 + k + 1
vsd     as sds                                                      eps_phi(x_t; y, c), renders' model 2 + 1 (+1 to train phi)
======  ==========================================================  =================================  ============

(Perp-Neg adds 2 rows per view to the guided pair: the two negative directions.)

- **SDS** (Poole et al. 2022, DreamFusion): ``w(t) (eps_hat(x_t; y) - eps)``. The noise term is a zero-mean
  residual the 3D model cannot fit; it averages out only over many steps, and its variance is what makes SDS
  blurry and lets it drift the longer it runs.
- **CSD** (Yu et al. 2023, "Text-to-3D with Classifier Score Distillation"): the gradient is the
  classifier-free direction alone, ``w(t) s (eps(x_t; y) - eps(x_t; null))``: the implicit classifier's score
  ``grad log p(y | x_t)``, without the unconditional score or the noise. Here the baseline is ``eps_null``, so
  the fused formula gives exactly that.
- **NFSD** (Katzir et al. 2023, "Noise-Free Score Distillation", ICLR 2024): the predicted noise decomposes as
  ``delta_D + delta_N + s delta_C`` (domain, noise, condition) with ``delta_C = eps(x_t; y) - eps(x_t; empty)``;
  NFSD drops the noise part: for ``t < t_small`` (200 of 1000) ``delta_D + delta_N ~ eps(x_t; empty)`` is mostly
  domain, so the gradient is ``w (eps(x_t; empty) + s delta_C)``; above it, ``delta_D = eps(x_t; empty) -
  eps(x_t; negative)`` with the paper's negative prompt ("unrealistic, blurry, low quality, out of focus, ugly,
  low contrast, dull, dark, low-resolution, gloomy" for Stable Diffusion; set ``guidance.negative_prompt``), so
  ``grad = w (eps(empty) + s delta_C - eps(negative))``. Without a negative prompt that term is 0 and NFSD is CSD
  at large t. Here ``eps_null`` is the empty prompt's prediction and the baseline is 0 or ``eps(negative)``.
- **ISM** (Liang et al. 2024, "LucidDreamer: Interval Score Matching", CVPR): replace the one-step noising
  by a deterministic DDIM inversion: ``x_s`` is ``x0`` (barely noised at t = 0) carried to ``s = t - delta`` by k
  DDIM inversion steps with the empty prompt's predictions, then ``x_t`` one DDIM step further; the gradient
  is the score difference across the interval, ``w(t) (eps_hat(x_t, t; y) - eps(x_s, s; empty))``. Its pseudo
  ground truth is consistent with ``x0`` (the inversion retraces the sampler's own trajectory), so the gradient
  has low variance and does not average views into a blur. Costs k + 1 extra UNet calls of B rows per step.
- **VSD** (Wang et al. 2023, "ProlificDreamer", NeurIPS): the renders are particles of a distribution whose score
  ``eps_phi(x_t; y, c)`` is learnt alongside the 3D model; the gradient is ``w(t) (eps_hat(x_t; y) - eps_phi(x_t;
  y, c))``. ``eps_phi`` is a LoRA of the prior's own UNet with a camera embedding (``vsd_estimator=lora``,
  initialised as the prior, trained one step per step on the renders with the diffusion loss), or, for priors
  without a UNet (the world's oracle) and as a cheap option for any, the exact denoiser of the recent renders
  (``vsd_estimator=renders``: a mixture of point masses at the last renders of the same view direction).

Where the loss keeps state (VSD's estimator), :meth:`DistillationLoss.state_dict` goes into the run's checkpoints,
so a resumed run ends with the same bytes as one that never stopped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ..cameras import Cameras
from ..config import GuidanceConfig
from ..errors import ConfigError
from ..sds import add_noise, ddim_step, posterior_mean
from .base import Guidance
from .conditioning import NULL_KEY, Conditioning, angle_features, perp_neg_combine, perp_neg_conditioning
from .multiview import share_within_groups
from .unet_guidance import prediction_to_epsilon


@dataclass
class ScoreTerms:
    """What a loss hands to the fused gradient (see the module docstring); all float32 on the device.

    eps_pair: [2B, ...] ``eps_null`` then ``eps_cond``; baseline: [B, ...]; x_t: the noisy input the prior saw
    (for previews and statistics)."""

    eps_pair: Tensor
    baseline: Tensor
    x_t: Tensor


class DistillationLoss:
    """Base of the losses: the classifier-free (optionally Perp-Neg) pair at a noisy input, and the counters.

    Subclasses implement :meth:`terms`. ``calls`` and ``rows`` count the prior's forward calls and the rows
    (samples) they held since the start, so the cost of a loss is measured, not assumed.
    """

    name = "base"

    def __init__(self, cfg: GuidanceConfig, guidance: Guidance, overhead_elevation: float = 60.0):
        self.cfg = cfg
        self.guidance = guidance
        self.overhead_elevation = overhead_elevation
        self.calls = 0
        self.rows = 0

    # ---- the prior, counted ---------------------------------------------------------------------------------
    def predict(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        return self.guidance.predict(x, t, cond)

    def guided_pair(self, x_t: Tensor, t: Tensor, cams: Cameras, null_key: str = NULL_KEY,
                    extra: Optional[Conditioning] = None) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """``(eps_null, eps_cond, eps_extra)`` at ``x_t`` [B, ...] in one prior call: the null text, the views'
        own prompts (Perp-Neg's positive and negatives when ``guidance.perp_neg``), and ``extra`` rows (B of them,
        at the same ``x_t``) when given."""
        B = x_t.shape[0]
        null = Conditioning.of([null_key] * B, cams)
        if self.cfg.perp_neg:
            pos, negs, weights = perp_neg_conditioning(cams, self.overhead_elevation, self.cfg.perp_neg_weight)
            parts = [null, pos, negs]
        else:
            parts = [null, Conditioning.of(list(cams.directions), cams)]
        if extra is not None:
            parts.append(extra)
        cond = Conditioning.cat(parts)
        n = len(cond) // B
        eps = self.predict(x_t.repeat(n, *([1] * (x_t.dim() - 1))), t.repeat(n), cond)
        chunks = list(eps.split(B))
        eps_null = chunks[0]
        if self.cfg.perp_neg:
            eps_cond = perp_neg_combine(eps_null, chunks[1], chunks[2:4], weights)
            rest = chunks[4:]
        else:
            eps_cond = chunks[1]
            rest = chunks[2:]
        return eps_null, eps_cond, (rest[0] if rest else None)

    # ---- the loss -------------------------------------------------------------------------------------------
    def terms(self, x0: Tensor, t: Tensor, cams: Cameras, noise: Tensor) -> ScoreTerms:
        """The guided pair and the baseline for renders ``x0`` [B, ...] (no gradient needed) at timesteps ``t``
        [B], with ``noise`` [B, ...] the step's standard-normal draw."""
        raise NotImplementedError

    def after_backward(self, x0: Tensor, t: Tensor, cams: Cameras, generator: torch.Generator) -> Dict[str, Tensor]:
        """Called once per step after the 3D model's backward pass (VSD trains its estimator here); returns its
        statistics as device tensors (VSD: the estimator's diffusion loss), left unsynchronised."""
        return {}

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint must hold to continue exactly (None: stateless)."""
        return None

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        if state is not None:
            raise ValueError(f"the {self.name} loss keeps no state, but the checkpoint holds some")

    def release(self) -> None:
        """Free what the loss holds beyond the guidance (VSD's estimator)."""

    def describe(self) -> Dict[str, Any]:
        return {"loss": self.name, "perp_neg": bool(self.cfg.perp_neg)}


class SDS(DistillationLoss):
    """Score distillation sampling (DreamFusion): the baseline is the injected noise."""

    name = "sds"

    def baseline(self, noise: Tensor, eps_null: Tensor) -> Tensor:
        return noise

    def terms(self, x0, t, cams, noise):
        x_t = add_noise(x0, noise, t, self.guidance.alphas_cumprod)
        eps_null, eps_cond, _ = self.guided_pair(x_t, t, cams)
        return ScoreTerms(torch.cat([eps_null, eps_cond]), self.baseline(noise, eps_null), x_t)


class CSD(SDS):
    """Classifier score distillation (Yu et al. 2023): SDS's noisy input, the baseline ``eps_null``, leaving
    ``w s (eps_cond - eps_null)``."""

    name = "csd"

    def baseline(self, noise: Tensor, eps_null: Tensor) -> Tensor:
        return eps_null


class NFSD(DistillationLoss):
    """Noise-free score distillation (Katzir et al. 2023): classifier-free guidance against the empty prompt;
    baseline 0 below ``nfsd_t_small`` and the negative prompt's prediction above it."""

    name = "nfsd"

    def __init__(self, cfg: GuidanceConfig, guidance: Guidance, overhead_elevation: float = 60.0):
        super().__init__(cfg, guidance, overhead_elevation)
        self.has_negative = bool(cfg.negative_prompt.strip())
        self.t_small = int(round(cfg.nfsd_t_small * guidance.num_train_timesteps))

    def terms(self, x0, t, cams, noise):
        x_t = add_noise(x0, noise, t, self.guidance.alphas_cumprod)
        B = x0.shape[0]
        extra = Conditioning.of(["negative"] * B, cams) if self.has_negative else None
        eps_empty, eps_cond, eps_neg = self.guided_pair(x_t, t, cams, null_key="uncond", extra=extra)
        # Without a negative prompt eps(negative) = eps(empty): the domain term vanishes above t_small.
        high = eps_neg if eps_neg is not None else eps_empty
        small = (t.to(x_t.device) < self.t_small).view(-1, *([1] * (x_t.dim() - 1)))
        baseline = torch.where(small, torch.zeros_like(high), high)
        return ScoreTerms(torch.cat([eps_empty, eps_cond]), baseline, x_t)


class ISM(DistillationLoss):
    """Interval score matching (LucidDreamer): DDIM inversion of the render to ``s = t - delta``, one more DDIM
    step to ``t``; the baseline is the empty prompt's prediction at ``(x_s, s)``."""

    name = "ism"

    def __init__(self, cfg: GuidanceConfig, guidance: Guidance, overhead_elevation: float = 60.0):
        super().__init__(cfg, guidance, overhead_elevation)
        T = guidance.num_train_timesteps
        self.delta = max(1, int(round(cfg.ism_interval * T)))
        self.k = int(cfg.ism_inversion_steps)

    def interval(self, t: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``s = max(t - delta, 0)`` and the k + 1 inversion points ``0 = s_0 <= s_1 <= ... <= s_k = s`` (each
        [B] long): k equal DDIM inversion steps from the (barely noised) render to ``s``."""
        s = (t - self.delta).clamp_min(0)
        points = [torch.div(s * i, self.k, rounding_mode="floor") for i in range(self.k + 1)]
        return s, points

    def terms(self, x0, t, cams, noise):
        abar = self.guidance.alphas_cumprod.to(x0.device, torch.float32)
        t = t.to(x0.device)
        B = x0.shape[0]
        empty = Conditioning.of(["uncond"] * B, cams)
        s, points = self.interval(t)
        x = add_noise(x0, noise, points[0], abar)
        for a, b in zip(points[:-1], points[1:]):
            e = self.predict(x, a, empty)
            x = ddim_step(x, e, abar[a], abar[b])
        eps_s = self.predict(x, s, empty)
        x_t = ddim_step(x, eps_s, abar[s], abar[t])
        eps_null, eps_cond, _ = self.guided_pair(x_t, t, cams)
        return ScoreTerms(torch.cat([eps_null, eps_cond]), eps_s, x_t)


# --------------------------------------------------------------------------------------------------- VSD
class RenderBufferEstimator:
    """VSD's ``eps_phi`` as the exact denoiser of the recent renders: a mixture of point masses at the last
    ``size`` renders (model space), restricted to those of the same view direction when there are any. Works
    for every prior (it needs only its noise schedule); the closed-form counterpart of the world's oracle."""

    def __init__(self, guidance: Guidance, size: int):
        self.guidance = guidance
        self.size = int(size)
        self.points: Optional[Tensor] = None  # [n, D] float32
        self.directions: List[str] = []

    def ready(self) -> bool:
        return self.points is not None and self.points.shape[0] > 0

    def predict(self, x_t: Tensor, t: Tensor, cams: Cameras) -> Tensor:
        assert self.points is not None
        abar = self.guidance.alphas_cumprod.to(x_t.device, torch.float64)[t.to(x_t.device)]
        same = torch.tensor([[d == e for e in self.directions] for d in cams.directions], dtype=torch.bool)
        masks = torch.where(same.any(-1, keepdim=True), same, torch.ones_like(same)).to(x_t.device)
        B = x_t.shape[0]
        x0 = posterior_mean(x_t.reshape(B, -1), abar, self.points, masks=masks).reshape(x_t.shape)
        a = abar.view(-1, *([1] * (x_t.dim() - 1)))
        return ((x_t.double() - a.sqrt() * x0) / (1.0 - a).sqrt()).float()

    def update(self, x0: Tensor, t: Tensor, cams: Cameras, generator: torch.Generator) -> Dict[str, float]:
        new = x0.detach().float().reshape(x0.shape[0], -1)
        pts = new if self.points is None else torch.cat([self.points, new])
        dirs = self.directions + list(cams.directions)
        self.points, self.directions = pts[-self.size:], dirs[-self.size:]
        return {}

    def state_dict(self) -> Dict[str, Any]:
        return {"points": None if self.points is None else self.points.cpu(), "directions": list(self.directions)}

    def load_state_dict(self, state: Dict[str, Any], device: torch.device) -> None:
        self.points = None if state["points"] is None else state["points"].to(device)
        self.directions = list(state["directions"])

    def release(self) -> None:
        self.points = None


class CameraEmbedding(torch.nn.Module):
    """The camera of a row (:func:`~splatgen.guidance.conditioning.angle_features`) as a vector added to the
    UNet's timestep embedding (diffusers' ``class_embedding`` hook); the last layer starts at zero, so the LoRA
    estimator starts as the prior itself."""

    def __init__(self, out_dim: int, in_dim: int = 5, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(in_dim, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, out_dim))
        torch.nn.init.zeros_(self.net[2].weight)
        torch.nn.init.zeros_(self.net[2].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LoRAEstimator:
    """VSD's ``eps_phi`` as ProlificDreamer trains it: a copy of the prior's UNet with LoRA adapters (peft) on
    its attention projections and a camera embedding, trained on the renders with the diffusion loss
    ``||eps_phi(x_t'; y_view, c) - eps'||^2`` at t' ~ U[0, T) (one step of Adam per training step)."""

    def __init__(self, guidance: Guidance, rank: int, lr: float, seed: int = 0):
        unet = getattr(guidance, "unet", None)
        if unet is None:
            raise ConfigError("guidance.vsd_estimator='lora' needs a prior with a UNet (stable-diffusion or pixel); "
                              "use 'renders' with guidance.type=world")
        try:
            from peft import LoraConfig
        except ImportError:  # pragma: no cover - peft is a dependency
            raise ConfigError("guidance.vsd_estimator='lora' needs the peft package (pip install peft)") from None
        self.guidance = guidance
        est = copy.deepcopy(unet)
        est.requires_grad_(False)
        # LoRA's and the camera MLP's initial weights come from the run's seed, without touching the global RNG.
        devices = [guidance.device] if guidance.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            est.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
            # A multi-view prior reads the camera already (its own camera MLP, kept frozen); a text-to-image
            # prior gets a camera embedding of its own here.
            self.prior_camera = guidance.multiview is not None
            if not self.prior_camera:
                dim = int(est.time_embedding.linear_2.out_features)
                est.class_embedding = CameraEmbedding(dim).to(guidance.device)
        # The trainable weights in float32 whatever the UNet's dtype (fp16 Adam updates would vanish); peft casts
        # the input to the adapter's dtype and the result back.
        self.params = [p for p in est.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()
        self.unet = est
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)

    def _eps(self, x_t: Tensor, t: Tensor, cams: Cameras) -> Tensor:
        g = self.guidance
        cond = Conditioning.of(list(cams.directions), cams)
        emb = g.text_embeddings(cond)  # the view's own prompt
        if self.prior_camera:
            cam = g.camera_labels(cond)
        else:
            cam = angle_features(cond).to(x_t.device)  # float32, as the embedding's weights; diffusers casts its output
        x = x_t.to(g.dtype)
        if getattr(g, "channels_last", False):
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.unet(x, t, encoder_hidden_states=emb, class_labels=cam).sample
        if out.shape[1] == 2 * x_t.shape[1]:
            out = out[:, : x_t.shape[1]]
        return prediction_to_epsilon(out, x_t, t, g.alphas_cumprod, g.prediction_type)

    def ready(self) -> bool:
        return True

    def predict(self, x_t: Tensor, t: Tensor, cams: Cameras) -> Tensor:
        with torch.no_grad():
            return self._eps(x_t.detach(), t, cams)

    def update(self, x0: Tensor, t: Tensor, cams: Cameras, generator: torch.Generator) -> Dict[str, float]:
        g = self.guidance
        B = x0.shape[0]
        tt = torch.randint(0, g.num_train_timesteps, (B,), generator=generator)
        tt = share_within_groups(tt, g.joint_views).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
        x_t = add_noise(x0.detach().float(), noise, tt, g.alphas_cumprod)
        loss = torch.nn.functional.mse_loss(self._eps(x_t, tt, cams), noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"vsd_loss": loss.detach()}

    def state_dict(self) -> Dict[str, Any]:
        return {"params": [p.detach().cpu() for p in self.params], "opt": self.opt.state_dict()}

    def load_state_dict(self, state: Dict[str, Any], device: torch.device) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, state["params"]):
                p.copy_(v.to(p.device))
        self.opt.load_state_dict(state["opt"])

    def release(self) -> None:
        self.unet = None  # type: ignore[assignment]
        self.params = []


#: ``guidance.vsd_estimator`` -> how to build it; 'auto' takes the LoRA where the prior has a UNet.
VSD_ESTIMATORS: Dict[str, Callable[[GuidanceConfig, Guidance, int], Any]] = {
    "lora": lambda cfg, g, seed: LoRAEstimator(g, cfg.vsd_lora_rank, cfg.vsd_lr, seed),
    "renders": lambda cfg, g, seed: RenderBufferEstimator(g, cfg.vsd_buffer),
}


class VSD(DistillationLoss):
    """Variational score distillation (ProlificDreamer): the baseline is ``eps_phi``, a model of the renders'
    own distribution trained alongside (see :data:`VSD_ESTIMATORS`)."""

    name = "vsd"

    def __init__(self, cfg: GuidanceConfig, guidance: Guidance, overhead_elevation: float = 60.0, seed: int = 0):
        super().__init__(cfg, guidance, overhead_elevation)
        kind = cfg.vsd_estimator
        if kind == "auto":
            kind = "lora" if getattr(guidance, "unet", None) is not None else "renders"
        self.estimator_kind = kind
        self.estimator = VSD_ESTIMATORS[kind](cfg, guidance, seed)

    def terms(self, x0, t, cams, noise):
        x_t = add_noise(x0, noise, t, self.guidance.alphas_cumprod)
        eps_null, eps_cond, _ = self.guided_pair(x_t, t, cams)
        if self.estimator.ready():
            self.calls += 1
            self.rows += x0.shape[0]
            baseline = self.estimator.predict(x_t, t.to(x_t.device), cams)
        else:  # no renders seen yet: SDS's baseline
            baseline = noise
        return ScoreTerms(torch.cat([eps_null, eps_cond]), baseline, x_t)

    def after_backward(self, x0, t, cams, generator):
        return self.estimator.update(x0, t.to(x0.device), cams, generator)

    def state_dict(self):
        return {"estimator": self.estimator_kind, **self.estimator.state_dict()}

    def load_state_dict(self, state):
        if state is None or state.get("estimator") != self.estimator_kind:
            raise ValueError(f"the checkpoint holds no state of a VSD {self.estimator_kind} estimator")
        self.estimator.load_state_dict(state, self.guidance.device)

    def release(self):
        self.estimator.release()

    def describe(self):
        return {**super().describe(), "vsd_estimator": self.estimator_kind}


#: ``guidance.loss`` -> its class; the keys are the config's allowed values (``config.LOSS_NAMES``, a test pins them).
LOSSES: Dict[str, type] = {"sds": SDS, "csd": CSD, "nfsd": NFSD, "ism": ISM, "vsd": VSD}


def build_loss(cfg: GuidanceConfig, guidance: Guidance, overhead_elevation: float = 60.0, seed: int = 0) -> DistillationLoss:
    """The loss ``cfg.loss`` names, over ``guidance``."""
    if cfg.loss not in LOSSES:
        raise ConfigError(f"guidance.loss={cfg.loss!r} is not allowed; choose one of {list(LOSSES)}")
    if cfg.loss == "vsd":
        return VSD(cfg, guidance, overhead_elevation, seed)
    return LOSSES[cfg.loss](cfg, guidance, overhead_elevation)

