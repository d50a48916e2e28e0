"""Pixel-space guidance from a text-conditional ``UNet2DConditionModel`` (Imagen/DeepFloyd-IF-like; the
bundled prior is one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from ..errors import ModelLoadError
from .loading import PIXEL_LAYOUT, layout_help, load_component, load_ddpm_scheduler, resolve_model_source
from .multiview import MultiViewSpec
from .text_encoders import PROMPT_ENCODER_LOADERS, PromptEncoder
from .unet_guidance import UNetGuidance, resize_images, sample_side


class PixelGuidance(UNetGuidance):
    """Pixel-space guidance from a text-conditional ``UNet2DConditionModel`` (an Imagen/DeepFloyd-IF-like base stage).

    Args:
        model: hub id or folder with ``unet/`` (in_channels 3), ``scheduler/`` and a text encoder: by default
            ``text_encoder/`` + ``tokenizer/`` (transformers; the class is read from the config), or another
            backend registered in :data:`PROMPT_ENCODER_LOADERS`.
        device, dtype: as for :class:`StableDiffusionGuidance`.
        text_encoder: a ready :class:`PromptEncoder` (then the folder needs no text encoder).
        prediction_type, keep_text_encoder: as for :class:`StableDiffusionGuidance`.
    """

    def __init__(
        self,
        model: str,
        device: Union[torch.device, str],
        dtype: torch.dtype = torch.float32,
        *,
        text_encoder: Optional[PromptEncoder] = None,
        prediction_type: Optional[str] = None,
        keep_text_encoder: bool = False,
    ) -> None:
        from diffusers import UNet2DConditionModel

        extra = "" if text_encoder is not None else " and a text encoder (" + " or ".join(f"{k}/" for k in PROMPT_ENCODER_LOADERS) + ")"
        source = resolve_model_source(str(model), PIXEL_LAYOUT, extra)
        device = torch.device(device)
        if text_encoder is None:
            text_encoder = self._load_prompt_encoder(source, device, dtype)
        unet = load_component("UNet", source, PIXEL_LAYOUT, lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype))
        scheduler = load_ddpm_scheduler(source, PIXEL_LAYOUT)
        self._setup(unet, scheduler, device, dtype, prediction_type, str(model))
        if isinstance(source, Path):  # a camera-conditioned multi-view prior declares itself with multiview.json
            self.set_multiview(MultiViewSpec.read(source))
        self.text_encoder = text_encoder
        self.keep_text_encoder = keep_text_encoder

    @staticmethod
    def _load_prompt_encoder(source: Union[Path, str], device: torch.device, dtype: torch.dtype) -> PromptEncoder:
        names = list(PROMPT_ENCODER_LOADERS)
        if isinstance(source, Path):
            found = [n for n in names if (source / n).is_dir()]
            if not found:
                raise ModelLoadError(
                    f"model folder {str(source)!r} has no text encoder: expected one of {[n + '/' for n in names]} "
                    "(text_encoder/ goes with tokenizer/). " + layout_help(PIXEL_LAYOUT)
                )
            name = found[0]
        else:
            name = names[0]  # hub ids: the default (transformers) layout
        return PROMPT_ENCODER_LOADERS[name](source, device, dtype, PIXEL_LAYOUT)

    @classmethod
    def from_modules(
        cls,
        unet: torch.nn.Module,
        scheduler: Any,
        *,
        text_embeddings: Union[Tensor, Mapping[Optional[str], Tensor], None] = None,
        uncond_embedding: Optional[Tensor] = None,
        text_encoder: Optional[PromptEncoder] = None,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        prediction_type: Optional[str] = None,
        name: str = "in-memory",
        multiview: Optional[MultiViewSpec] = None,
    ) -> "PixelGuidance":
        """Wrap an in-memory UNet and scheduler (see :meth:`StableDiffusionGuidance.from_modules`); ``multiview``
        makes it a camera-conditioned multi-view prior."""
        self = cls.__new__(cls)
        p = next(unet.parameters())
        self._setup(unet, scheduler, torch.device(device) if device is not None else p.device, dtype or p.dtype, prediction_type, name)
        self.set_multiview(multiview)
        self.text_encoder = text_encoder
        if text_embeddings is not None:
            plain = text_embeddings if isinstance(text_embeddings, Tensor) else text_embeddings[None]
            self.set_text_embeddings(text_embeddings, uncond_embedding if uncond_embedding is not None else torch.zeros_like(plain))
        return self

    def _setup(
        self, unet: torch.nn.Module, scheduler: Any, device: torch.device, dtype: torch.dtype, prediction_type: Optional[str], name: str
    ) -> None:
        self._setup_unet(unet, scheduler, device, dtype, prediction_type)
        self.model_name = name
        if self.in_channels != 3:
            raise ModelLoadError(f"{name}: a pixel-space UNet must take 3 channels (RGB); this one takes {self.in_channels}")
        self.native_size = sample_side(unet.config.sample_size)
        self.input_size = self.native_size[0] if self.native_size[0] == self.native_size[1] else None

    def encode(self, images: Tensor) -> Tensor:
        """Renders [B, 3, H, W] in [0, 1] -> [B, 3, s, s] in [-1, 1] at the UNet's sample size (float32, differentiable)."""
        return resize_images(images.float(), self.native_size) * 2.0 - 1.0

    def decode(self, x0: Tensor) -> Tensor:
        """[-1, 1] pixels -> [0, 1] (the identity up to the value range)."""
        return ((x0.float() + 1.0) * 0.5).clamp(0, 1)
