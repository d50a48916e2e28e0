"""The interface every guidance model implements (diffusers models and the procedural world's oracle).

The trainer drives a guidance in explicit calls per step, so each stage can be timed on its own:

1. ``x0 = guidance.encode(images)`` — renders [B, 3, H, W] in [0, 1] (with gradient) to the model's
   input space: VAE latents for latent models, pixels in [-1, 1] at the model's resolution for pixel models.
2. ``x_t = add_noise(x0, noise, t, guidance.alphas_cumprod)`` (see ``splatgen.sds``).
3. ``eps = guidance.predict(x_t, t, cond)`` — one epsilon prediction per row, without gradient, where
   ``cond`` (:class:`~splatgen.guidance.conditioning.Conditioning`) gives each row its text (a mix of the
   prompt's variants) and its view's camera. The score-distillation losses of :mod:`splatgen.guidance.losses`
   build these batches (classifier-free guidance's ``[null x B, view x B]``, Perp-Neg's negatives, ISM's
   inversion); ``predict_noise(x_t, t, views)`` is the plain classifier-free batch.

Text is encoded once by ``prepare_text`` for every variant of the prompt, after which the text encoder may be
freed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from ..cameras import DIRECTIONS, Cameras
from .conditioning import Conditioning, cfg_conditioning, directions_conditioning


def directional_prompt(prompt: str, direction: Optional[str]) -> str:
    """DreamFusion's view-dependent prompt: ``"<prompt>, <direction> view"`` (``None``: unchanged)."""
    if direction is None:
        return prompt
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown view direction {direction!r}; expected one of {list(DIRECTIONS)}")
    return f"{prompt}, {direction} view"


class Guidance(ABC):
    """A denoiser that scores renders: everything the trainer uses of one, declared here.

    Subclasses set the attributes below in ``__init__`` (``text_ready`` may be a property).
    """

    #: [T] cumulative products of the noise schedule's alphas (float32, on ``device``).
    alphas_cumprod: Tensor
    #: number of training timesteps T of the noise schedule.
    num_train_timesteps: int
    #: renders are resized to this side before ``encode`` (None: any size the model accepts).
    input_size: Optional[int] = None
    device: torch.device
    dtype: torch.dtype = torch.float32
    #: True once the prompt's embeddings are in place; the trainer calls :meth:`prepare_text` only while False
    #: (a guidance handed over with embeddings already set, e.g. random ones in a benchmark, is used as is).
    text_ready: bool = False
    #: the background the model's training images had ('white', 'black', ...), which the trainer then renders
    #: on whatever ``render.background`` says; None: the config decides.
    required_background: Optional[str] = None
    #: views the prior denoises together (a multi-view prior's group; 1 for text-to-image priors): camera batches
    #: come in such groups, one timestep per group (:mod:`splatgen.guidance.multiview`)
    joint_views: int = 1
    #: the multi-view prior's spec (:class:`~splatgen.guidance.multiview.MultiViewSpec`), None for the others
    multiview: Optional[Any] = None

    @abstractmethod
    def prepare_text(self, prompt: str, negative_prompt: str = "", view_dependent: bool = True) -> None:
        """Encode the prompt for every view direction (and the negative/unconditional prompt) once."""

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> model-space x0 (differentiable)."""

    @abstractmethod
    def predict(self, x: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """[N, ...] noisy inputs, [N] (or one) timesteps, N rows of conditioning -> [N, ...] float32 epsilon
        predictions, without gradient. Rows are independent: row i sees ``x[i]`` at ``t[i]`` under ``cond`` row i."""

    def predict_noise(self, x_t: Tensor, t: Tensor, views: Union[Cameras, Sequence[Optional[str]]]) -> Tensor:
        """Classifier-free guidance's batch: [B, ...] noisy inputs, [B] timesteps and B views (cameras, or view
        words with ``None`` for the plain prompt) -> [2B, ...] predictions, the negative (or empty) prompt's
        half first, then each view's direction prompt."""
        cond = cfg_conditioning(views) if isinstance(views, Cameras) else directions_conditioning(views)
        B = x_t.shape[0]
        if len(cond) != 2 * B:
            raise ValueError(f"{len(cond) // 2} views for a batch of {B}")
        t = t.reshape(-1).expand(B) if t.numel() == 1 else t.reshape(-1)
        return self.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), cond)

    def decode(self, x0: Tensor) -> Tensor:
        """Model space -> images [B, 3, H, W] in [0, 1] (for previews; pixel models: identity)."""
        return ((x0.float() + 1.0) * 0.5).clamp(0, 1)

    def release(self) -> None:
        """Free what is not needed any more (called at the end of a run)."""

    def describe(self) -> Dict[str, object]:
        """Facts about the model for the run's log."""
        return {"type": type(self).__name__}
