"""The interface every guidance model implements (diffusers models and the procedural world's oracle).

The trainer drives a guidance in three explicit calls per step, so each stage can be timed on its own:

1. ``x0 = guidance.encode(images)`` — renders [B, 3, H, W] in [0, 1] (with gradient) to the model's
   input space: VAE latents for latent models, pixels in [-1, 1] at the model's resolution for pixel models.
2. ``x_t = add_noise(x0, noise, t, guidance.alphas_cumprod)`` (see ``splatgen.sds``).
3. ``eps = guidance.predict_noise(x_t, t, directions)`` — [2B, ...], unconditional (or negative prompt)
   half first, conditional half second, without gradient.

Text is encoded once by ``prepare_text`` for every view direction, after which the text encoder may be freed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from ..cameras import DIRECTIONS


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

    @abstractmethod
    def prepare_text(self, prompt: str, negative_prompt: str = "", view_dependent: bool = True) -> None:
        """Encode the prompt for every view direction (and the negative/unconditional prompt) once."""

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] in [0, 1] -> model-space x0 (differentiable)."""

    @abstractmethod
    def predict_noise(self, x_t: Tensor, t: Tensor, directions: Sequence[str]) -> Tensor:
        """[B, ...] noisy inputs, [B] timesteps, B directions -> [2B, ...] predictions (uncond, cond)."""

    def decode(self, x0: Tensor) -> Tensor:
        """Model space -> images [B, 3, H, W] in [0, 1] (for previews; pixel models: identity)."""
        return ((x0.float() + 1.0) * 0.5).clamp(0, 1)

    def release(self) -> None:
        """Free what is not needed any more (called at the end of a run)."""

    def describe(self) -> Dict[str, object]:
        """Facts about the model for the run's log."""
        return {"type": type(self).__name__}
