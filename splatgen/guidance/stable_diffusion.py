"""Latent-space guidance from Stable Diffusion 1.x/2.x (a UNet + AutoencoderKL + CLIP in diffusers format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from ..errors import ModelLoadError
from .loading import SD_LAYOUT, freeze, load_component, load_ddpm_scheduler, resolve_model_source
from .multiview import MultiViewSpec
from .text_encoders import HFPromptEncoder, PromptEncoder
from .unet_guidance import UNetGuidance, resize_images, sample_side


class StableDiffusionGuidance(UNetGuidance):
    """Latent-space guidance from Stable Diffusion 1.x/2.x (or any UNet + AutoencoderKL + CLIP in diffusers format).

    Args:
        model: hub id (e.g. ``stabilityai/stable-diffusion-2-1-base``) or local folder with ``unet/``, ``vae/``,
            ``text_encoder/``, ``tokenizer/`` and ``scheduler/``.
        device: where the models run.
        dtype: UNet, text encoder (and by default VAE) dtype: float32, float16 or bfloat16.
        latent_sample: ``"mean"`` (default) encodes to the VAE posterior's mean; ``"sample"`` draws from it.
            The mean is deterministic, so the same render always gives the same x0 and the only noise in the
            SDS gradient is the diffusion noise one chose; SD's posterior std is small next to that noise, so
            sampling (what threestudio and stable-dreamfusion do) changes little but reproducibility.
        vae_dtype: dtype of the VAE if different (e.g. float32 for a VAE that overflows in fp16).
        prediction_type: override the scheduler config's ``prediction_type``.
        keep_text_encoder: keep the text encoder after ``prepare_text`` (to encode another prompt later).

    Raises:
        ModelLoadError: the model could not be found or loaded.
    """

    def __init__(
        self,
        model: str,
        device: Union[torch.device, str],
        dtype: torch.dtype = torch.float32,
        *,
        latent_sample: str = "mean",
        vae_dtype: Optional[torch.dtype] = None,
        prediction_type: Optional[str] = None,
        keep_text_encoder: bool = False,
    ) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        source = resolve_model_source(str(model), SD_LAYOUT)
        unet = load_component("UNet", source, SD_LAYOUT, lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype))
        vae = load_component(
            "VAE", source, SD_LAYOUT, lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=vae_dtype or dtype)
        )
        scheduler = load_ddpm_scheduler(source, SD_LAYOUT)
        device = torch.device(device)
        text_encoder = HFPromptEncoder.from_pretrained(
            source, device, dtype, layout=SD_LAYOUT, tokenizer_cls=CLIPTokenizer, model_cls=CLIPTextModel
        )
        self._setup(unet, vae, scheduler, device, dtype, latent_sample, vae_dtype, prediction_type, str(model))
        if isinstance(source, Path):  # a multi-view model (MVDream converted by splatgen.guidance.mvdream)
            self.set_multiview(MultiViewSpec.read(source))
        self.text_encoder = text_encoder
        self.keep_text_encoder = keep_text_encoder

    @classmethod
    def from_modules(
        cls,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        *,
        text_embeddings: Union[Tensor, Mapping[Optional[str], Tensor], None] = None,
        uncond_embedding: Optional[Tensor] = None,
        text_encoder: Optional[PromptEncoder] = None,
        device: Union[torch.device, str, None] = None,
        dtype: Optional[torch.dtype] = None,
        latent_sample: str = "mean",
        vae_dtype: Optional[torch.dtype] = None,
        prediction_type: Optional[str] = None,
        name: str = "in-memory",
    ) -> "StableDiffusionGuidance":
        """Wrap modules built in memory (random-weight benchmarks, tests) without any files.

        Args:
            unet, vae: a ``UNet2DConditionModel`` and an ``AutoencoderKL``; moved to ``device``/``dtype``
                (default: the UNet's own).
            scheduler: any diffusers scheduler with ``alphas_cumprod`` and a config.
            text_embeddings: [1, L, D] or {None | direction: [1, L, D]} (see :meth:`set_text_embeddings`);
                with ``uncond_embedding`` [1, L, D] (default zeros), ready for ``predict_noise`` at once.
            text_encoder: alternatively, a :class:`PromptEncoder` for ``prepare_text``.
        """
        self = cls.__new__(cls)
        p = next(unet.parameters())
        device = torch.device(device) if device is not None else p.device
        dtype = dtype or p.dtype
        self._setup(unet, vae, scheduler, device, dtype, latent_sample, vae_dtype, prediction_type, name)
        self.text_encoder = text_encoder
        if text_embeddings is not None:
            plain = text_embeddings if isinstance(text_embeddings, Tensor) else text_embeddings[None]
            uncond = uncond_embedding if uncond_embedding is not None else torch.zeros_like(plain)
            self.set_text_embeddings(text_embeddings, uncond)
        return self

    def _setup(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        device: torch.device,
        dtype: torch.dtype,
        latent_sample: str,
        vae_dtype: Optional[torch.dtype],
        prediction_type: Optional[str],
        name: str,
    ) -> None:
        if latent_sample not in ("mean", "sample"):
            raise ValueError(f"latent_sample={latent_sample!r}; expected 'mean' or 'sample'")
        self._setup_unet(unet, scheduler, device, dtype, prediction_type)
        self.model_name = name
        self.latent_sample = latent_sample
        self.vae_dtype = vae_dtype or dtype
        self.vae = freeze(vae, self.device, self.vae_dtype)
        #: the encoder the SDS gradient goes through instead of the VAE's (``set_tiny_encoder``), and compilation
        self.tiny_encoder: Optional[torch.nn.Module] = None
        self.compile_encoder = False
        self._encoder_fn = None
        cfg = vae.config

        self.latent_channels = int(cfg.latent_channels)
        self.scaling_factor = float(cfg.scaling_factor)
        # SD3/Flux VAEs also shift the latents; SD 1.x/2.x have no shift_factor (None).
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)
        # Each encoder block but the last halves the resolution.
        self.vae_factor = 2 ** (len(cfg.block_out_channels) - 1)
        if self.latent_channels != self.in_channels:
            raise ModelLoadError(
                f"{name}: the VAE makes {self.latent_channels}-channel latents but the UNet takes {self.in_channels}"
            )
        h, w = sample_side(unet.config.sample_size)
        self.native_size = (h * self.vae_factor, w * self.vae_factor)
        self.input_size = self.native_size[0] if h == w else None

    def set_vae_checkpointing(self, enabled: bool) -> None:
        """Recompute the VAE encoder's activations in the backward pass instead of storing them: less peak
        memory at 512 x 512 with several views, for one extra encoder forward per step.

        Each down block and the mid block is wrapped in ``torch.utils.checkpoint`` here rather than through
        diffusers' own switch, which older releases honour only in training mode (the VAE is frozen in eval).
        """
        from torch.utils.checkpoint import checkpoint

        enc = self.vae.encoder
        for block in [*enc.down_blocks, enc.mid_block]:
            wrapped = "_splatgen_forward" in block.__dict__
            if enabled and not wrapped:
                plain = block.forward

                def forward(*args, _plain=plain, **kwargs):
                    if torch.is_grad_enabled():
                        return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
                    return _plain(*args, **kwargs)

                block.__dict__["_splatgen_forward"] = plain
                block.forward = forward
            elif not enabled and wrapped:
                del block.__dict__["_splatgen_forward"]
                del block.forward
        self.vae_checkpointing = bool(enabled)

    def set_compile(self, what: str) -> None:
        """``guidance.compile``: 'unet' / 'vae' / 'all' compile the UNet's forward and/or the encoder's forward
        and backward with ``torch.compile`` (shapes static: one graph per render batch shape)."""
        super().set_compile(what)
        self.compile_encoder = what in ("vae", "all")
        self._encoder_fn = None

    def set_tiny_encoder(self, tiny: torch.nn.Module) -> None:
        """Score-distil through a tiny encoder (diffusers' ``AutoencoderTiny``, TAESD) instead of the VAE's: the
        gradient's Jacobian is the tiny encoder's, about 9x fewer FLOPs at 512 x 512. Its latents live in the
        UNet's (already scaled) latent space; previews still decode with the full VAE."""
        tiny = freeze(tiny, self.device, self.vae_dtype)
        ch = int(getattr(tiny.config, "latent_channels", 0))
        if ch != self.latent_channels:
            raise ModelLoadError(f"the tiny encoder makes {ch}-channel latents but the UNet takes {self.latent_channels}")
        factor = int(tiny.config.upsampling_scaling_factor) ** (len(tiny.config.encoder_block_out_channels) - 1)
        if factor != self.vae_factor:
            raise ModelLoadError(f"the tiny encoder shrinks images {factor}x but the model's VAE {self.vae_factor}x: it "
                                 "belongs to another model family")
        self.tiny_encoder = tiny
        self._encoder_fn = None

    def _latent_mean(self, x: Tensor) -> Tensor:
        """The encoder's posterior mean of [B, 3, H, W] in [-1, 1] (VAE dtype), unscaled."""
        tiny = self.tiny_encoder
        if tiny is not None:
            # TAESD's latents are already in the UNet's scaled space: undo the scaling the caller applies.
            z = tiny.encode(x).latents * float(getattr(tiny.config, "scaling_factor", 1.0))
            return z / self.scaling_factor + self.shift_factor
        h = self.vae.encoder(x)
        if getattr(self.vae, "quant_conv", None) is not None:
            h = self.vae.quant_conv(h)
        return h[:, : self.latent_channels]

    def encode(self, images: Tensor) -> Tensor:
        """Renders [B, 3, H, W] in [0, 1] -> latents [B, C, H'/f, W'/f] (float32, differentiable).

        Renders are resized to the model's native size (UNet sample_size x VAE factor, 512 for SD 2.1-base).
        The VAE runs in its dtype; the cast back to float32 happens inside autograd, so the gradient reaching
        ``images`` is float32.
        """
        x = resize_images(images.float(), self.native_size) * 2.0 - 1.0
        if self.latent_sample == "mean":
            fn = self._encoder_fn
            if fn is None:
                fn = torch.compile(self._latent_mean, dynamic=False) if self.compile_encoder else self._latent_mean
                self._encoder_fn = fn
            z = fn(x.to(self.vae_dtype))
        else:
            z = self.vae.encode(x.to(self.vae_dtype)).latent_dist.sample()
        return (z.float() - self.shift_factor) * self.scaling_factor

    def decode(self, x0: Tensor) -> Tensor:
        """Latents [B, C, h, w] -> images [B, 3, h*f, w*f] in [0, 1] (no gradient; for previews)."""
        with torch.no_grad():
            z = x0.float() / self.scaling_factor + self.shift_factor
            img = self.vae.decode(z.to(self.vae_dtype)).sample
        return ((img.float() + 1.0) * 0.5).clamp(0, 1)

    def release(self) -> None:
        super().release()
        self.vae = None
        self.tiny_encoder = None
        self._encoder_fn = None

    def describe(self) -> Dict[str, object]:
        d = super().describe()
        d.update(
            latent_channels=self.latent_channels,
            vae_factor=self.vae_factor,
            scaling_factor=self.scaling_factor,
            latent_sample=self.latent_sample,
            vae_dtype=str(self.vae_dtype).replace("torch.", ""),
            encoder="tiny" if self.tiny_encoder is not None else "vae",
        )
        return d
