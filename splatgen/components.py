"""The parts a run is made of, chosen by its config: the guidance (``guidance.type``) and, for prompts of the
procedural world, the ground-truth evaluator. This is wiring: the one place that knows every backend,
through plain dicts, so the trainer below it knows none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch

from .config import Config
from .errors import ConfigError
from .guidance import Guidance, PixelGuidance, StableDiffusionGuidance, resolve_dtype
from .guidance.loading import load_tiny_encoder
from .guidance.multiview import MultiViewSpec, views_error
from .guidance.text_encoders import TEXT_ENCODER_FOLDER, OpenCLIPPromptEncoder
from .prior import bundled_prior_path, check_prior_folder, is_prior_folder, prompt_check
from .representation import Representation
from .world.grammar import is_world_prompt

#: evaluator(rep) -> ground-truth metrics of the model as it is now (see ``Trainer(evaluator=...)``).
Evaluator = Callable[[Representation], Dict[str, Any]]


def _stable_diffusion(cfg: Config, device: torch.device) -> Guidance:
    g = cfg.guidance
    guidance = StableDiffusionGuidance(g.model, device, resolve_dtype(g.dtype, device))
    guidance.cuda_graph = bool(g.cuda_graph)
    guidance.set_compile(g.compile)
    if g.vae == "tiny":
        guidance.set_tiny_encoder(load_tiny_encoder(g.tiny_vae_model, device, guidance.vae_dtype))
    if g.vae_checkpointing:
        guidance.set_vae_checkpointing(True)
    if g.fused_group_norm:
        from .guidance.fused_norm import enable_fused_group_norm  # imports no Triton until the first forward

        enable_fused_group_norm(guidance)
    return guidance


def model_folder(model: str) -> Path:
    """``guidance.model`` as a path: ``'bundled'`` is the prior shipped in the package (splatgen/assets/prior)."""
    return bundled_prior_path() if model == "bundled" else Path(str(model)).expanduser()


def declared_views(cfg: Config) -> int:
    """How many views the configured pixel or Stable Diffusion model denoises together, from its folder's
    ``multiview.json`` without loading it (1: a single-view model, a hub id, the world's guidance)."""
    g = cfg.guidance
    if g.type not in ("pixel", "stable-diffusion"):
        return 1
    folder = model_folder(g.model)
    spec = MultiViewSpec.read(folder) if folder.is_dir() else None
    return spec.num_views if spec is not None else 1


def check_views(cfg: Config) -> None:
    """Refuse, before any weights load, a ``camera.batch_size`` that the configured multi-view model cannot take."""
    refusal = views_error(cfg.camera.batch_size, declared_views(cfg))
    if refusal:
        raise ConfigError(refusal)


def _pixel(cfg: Config, device: torch.device) -> Guidance:
    g = cfg.guidance
    dtype = resolve_dtype(g.dtype, device)
    folder = model_folder(g.model)
    text_encoder = None
    if g.model == "bundled" or (folder.is_dir() and is_prior_folder(folder)):
        # A prior of the world: check the folder first (one clear message), and let its text encoder warn about
        # prompts outside what the prior was trained on.
        check_prior_folder(folder)
        text_encoder = OpenCLIPPromptEncoder.from_folder(folder / TEXT_ENCODER_FOLDER, device)
        name = "the bundled prior" if g.model == "bundled" else f"the prior {str(folder)!r}"
        text_encoder.prompt_check = prompt_check(text_encoder.meta.get("held_out_pairs", ()), name)
    source: Union[str, Path] = folder if text_encoder is not None else g.model
    guidance = PixelGuidance(str(source), device, dtype, text_encoder=text_encoder)
    guidance.cuda_graph = bool(g.cuda_graph)
    guidance.set_compile(g.compile)
    return guidance


def _world(cfg: Config, device: torch.device) -> Guidance:
    from .world.oracle import WorldGuidance  # the world's ray caster: loaded for its guidance only

    return WorldGuidance.from_config(cfg, device)


#: Guidance constructors by ``guidance.type``; each takes the run's whole config.
GUIDANCE_BUILDERS: Dict[str, Callable[[Config, torch.device], Guidance]] = {
    "stable-diffusion": _stable_diffusion,
    "pixel": _pixel,
    "world": _world,
}


def build_guidance(cfg: Config, device: Union[torch.device, str] = "cpu", keep_text_encoder: bool = False) -> Guidance:
    """The guidance ``cfg.guidance.type`` names, on ``device``, built from the run's whole config.

    ``keep_text_encoder``: keep the text encoder after the first prompt, so the guidance can serve several
    prompts (the batch runner); otherwise it is freed once the prompt is encoded.

    Raises:
        ConfigError: unknown ``guidance.type``.
        ModelLoadError: the weights could not be loaded.
    """
    kind = cfg.guidance.type
    if kind not in GUIDANCE_BUILDERS:
        raise ConfigError(f"guidance.type={kind!r} is not allowed; choose one of {list(GUIDANCE_BUILDERS)}")
    guidance = GUIDANCE_BUILDERS[kind](cfg, torch.device(device))
    if keep_text_encoder and hasattr(guidance, "keep_text_encoder"):
        guidance.keep_text_encoder = True
    return guidance


def build_evaluator(cfg: Config) -> Optional[Evaluator]:
    """The ground-truth evaluator of ``cfg.prompt`` when it names an object of the procedural world, else None
    (the world's ray caster and metrics are loaded for world prompts only)."""
    if not is_world_prompt(cfg.prompt):
        return None
    from .world.metrics import world_evaluator

    return world_evaluator(cfg.prompt)
