"""Guidance models: a diffusion prior that scores renders (see :class:`base.Guidance` for what the trainer
uses of one).

One module per job, as diffusers lays out its pipelines:

- :mod:`.base` — the :class:`Guidance` interface and view-dependent prompts;
- :mod:`.loading` — where weights are, ``from_pretrained`` failures as one clear error, dtypes;
- :mod:`.text_encoders` — prompt encoders (transformers CLIP/T5, open_clip text towers);
- :mod:`.cuda_graph` — replaying the UNet from CUDA graphs;
- :mod:`.unet_guidance` — what latent and pixel UNet guidance share (CFG batch, epsilon conversion);
- :mod:`.stable_diffusion` — :class:`StableDiffusionGuidance` (latent space);
- :mod:`.pixel` — :class:`PixelGuidance` (pixel space; the bundled prior is one);
- :mod:`.tiny` — random-weight models for tests and benchmarks.

Which backend a run uses is chosen by ``guidance.type`` in :func:`splatgen.components.build_guidance`.
"""

from .base import Guidance, directional_prompt
from .loading import resolve_dtype
from .pixel import PixelGuidance
from .stable_diffusion import StableDiffusionGuidance
from .text_encoders import HFPromptEncoder, OpenCLIPPromptEncoder, PromptEncoder

__all__ = [
    "Guidance",
    "HFPromptEncoder",
    "OpenCLIPPromptEncoder",
    "PixelGuidance",
    "PromptEncoder",
    "StableDiffusionGuidance",
    "directional_prompt",
    "resolve_dtype",
]
