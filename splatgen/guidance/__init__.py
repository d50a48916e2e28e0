"""Guidance models: a diffusion prior that scores renders (see ``base.Guidance`` for the three-call protocol).

``load_guidance(cfg, device)`` picks the backend from ``cfg.type`` through a plain dict:

- ``'stable-diffusion'``: :class:`StableDiffusionGuidance` (latent space, SD 1.x/2.x in diffusers format);
- ``'pixel'``: :class:`PixelGuidance` (a pixel-space text-conditional UNet);
- ``'world'``: the procedural world's exact oracle, ``splatgen.world.oracle.WorldGuidance`` (imported lazily).
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, Optional, Union

import torch

from ..config import GuidanceConfig
from ..errors import ConfigError
from .base import Guidance, directional_prompt
from .diffusers_guidance import PixelGuidance, PromptEncoder, StableDiffusionGuidance

__all__ = [
    "Guidance",
    "directional_prompt",
    "StableDiffusionGuidance",
    "PixelGuidance",
    "PromptEncoder",
    "load_guidance",
    "resolve_dtype",
]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str, device: Union[torch.device, str]) -> torch.dtype:
    """The torch dtype for a config value ``'auto' | 'fp32' | 'fp16' | 'bf16'`` on ``device``.

    ``'auto'`` is fp16 on CUDA and fp32 elsewhere. fp16 on the CPU falls back to fp32 with a warning: many
    CPU ops have no fp16 kernel (and those that do are slow). bf16 on a GPU without bf16 support falls back
    to fp16 with a warning.
    """
    device = torch.device(device)
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ConfigError(f"guidance.dtype={name!r} is not allowed; choose one of {['auto'] + list(_DTYPES)}")
    dtype = _DTYPES[name]
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("guidance.dtype=fp16 on the CPU: many CPU ops lack fp16 kernels, using fp32 instead", UserWarning, stacklevel=2)
        return torch.float32
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("guidance.dtype=bf16 is not supported by this GPU; using fp16 instead", UserWarning, stacklevel=2)
        return torch.float16
    return dtype


def _stable_diffusion(cfg: GuidanceConfig, device: torch.device, dtype: torch.dtype) -> Guidance:
    return StableDiffusionGuidance(cfg.model, device, dtype)


def _pixel(cfg: GuidanceConfig, device: torch.device, dtype: torch.dtype) -> Guidance:
    model = cfg.model
    if model == "bundled":
        # The prior trained on the procedural world and shipped in the package (splatgen/assets/prior).
        from ..prior import bundled_prior_path, check_prior_folder

        model = str(bundled_prior_path())
        check_prior_folder(model)
    return PixelGuidance(model, device, dtype)


def _world(cfg: GuidanceConfig, device: torch.device, dtype: torch.dtype) -> Guidance:
    # Imported here, not at the top: the world module is optional and must not be needed by the other backends.
    try:
        from ..world.oracle import WorldGuidance  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name not in ("splatgen.world", "splatgen.world.oracle"):
            raise  # a dependency of the world module is missing: report that, not a missing backend
        raise ConfigError(
            "guidance.type='world' needs splatgen.world.oracle.WorldGuidance, which this installation does not "
            "have yet; use guidance.type='stable-diffusion' or 'pixel' with guidance.model=<folder>"
        ) from exc
    if hasattr(WorldGuidance, "from_config"):
        return WorldGuidance.from_config(cfg, device, dtype)
    return WorldGuidance(cfg, device, dtype)


#: Backend constructors by ``guidance.type``.
GUIDANCE_BACKENDS: Dict[str, Callable[[GuidanceConfig, torch.device, torch.dtype], Guidance]] = {
    "stable-diffusion": _stable_diffusion,
    "pixel": _pixel,
    "world": _world,
}


def load_guidance(
    cfg: GuidanceConfig, device: Union[torch.device, str], dtype: Optional[torch.dtype] = None
) -> Guidance:
    """Build the guidance that ``cfg.type`` names, on ``device`` in ``dtype`` (default: ``resolve_dtype(cfg.dtype)``).

    Raises:
        ConfigError: unknown ``cfg.type`` (or a backend that is not installed).
        ModelLoadError: the weights could not be loaded.
    """
    device = torch.device(device)
    if cfg.type not in GUIDANCE_BACKENDS:
        raise ConfigError(f"guidance.type={cfg.type!r} is not allowed; choose one of {list(GUIDANCE_BACKENDS)}")
    if dtype is None:
        dtype = resolve_dtype(cfg.dtype, device)
    guidance = GUIDANCE_BACKENDS[cfg.type](cfg, device, dtype)
    if hasattr(guidance, "cuda_graph"):
        guidance.cuda_graph = bool(cfg.cuda_graph)
    if cfg.vae_checkpointing and hasattr(guidance, "set_vae_checkpointing"):
        guidance.set_vae_checkpointing(True)
    return guidance
