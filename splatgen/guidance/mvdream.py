"""MVDream's public checkpoints as splatgen guidance: convert once into a diffusers folder, then load it like any
Stable Diffusion folder (``guidance.type=stable-diffusion``), which its ``multiview.json`` makes a 4-view prior.

    python -m splatgen.guidance.mvdream --checkpoint sd-v2.1-base-4view.pt \\
        --base /path/to/stable-diffusion-2-1-base --to ./mvdream-sd21
    splatgen generate "a corgi wearing a top hat" --config mvdream guidance.model=./mvdream-sd21

What the checkpoint holds (MVDream, Shi et al. 2023; the layout read from the authors' public model code, not from
the weights, which never reached this project's machines): one flat state dict in the original Stable Diffusion
(LDM) naming — ``model.diffusion_model.*`` the UNet (SD-2.1-base's: 320 channels, multipliers 1-2-4-4, two
ResNet layers per level, linear transformer projections, 64-channel heads, 1024-d text context) plus
``camera_embed.{0,2}`` (Linear(16, 1280) - SiLU - Linear(1280, 1280), added to the timestep embedding),
``first_stage_model.*`` the KL-f8 VAE, ``cond_stage_model.*`` the OpenCLIP ViT-H/14 text tower, and the noise
schedule's buffers. Its self-attention runs across the 4 views (no extra weights) and the camera is each view's
camera-to-world matrix with the position scaled to unit length, in the convention of MVDream's threestudio
extension, which is :func:`splatgen.guidance.multiview.camera_vectors` with ``normalise_distance=True``.

The conversion: the UNet and the VAE through diffusers' own converters of the LDM layout
(``diffusers.loaders.single_file_utils``), the camera MLP onto diffusers' ``class_embedding`` (``class_embed_type
= 'projection'``); the text encoder, tokenizer and scheduler come from a Stable Diffusion 2.1 base folder or hub id
(``--base``): the same OpenCLIP ViT-H text tower in the layout transformers loads, as MVDream's threestudio
guidance does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ModelLoadError, SplatgenError
from .multiview import MultiViewSpec, camera_unet_config

#: the state-dict prefixes of an MVDream (LDM-layout) checkpoint
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
#: MVDream's camera MLP -> diffusers' projection class embedding
CAMERA_KEYS = {
    "camera_embed.0.weight": "class_embedding.linear_1.weight",
    "camera_embed.0.bias": "class_embedding.linear_1.bias",
    "camera_embed.2.weight": "class_embedding.linear_2.weight",
    "camera_embed.2.bias": "class_embedding.linear_2.bias",
}
#: what MVDream's 4-view models expect from the trainer (4 views, unit-distance cameras, no view words; trained at
#: elevations 0-30 degrees)
MVDREAM_SPEC = MultiViewSpec(num_views=4, camera="c2w16", normalise_distance=True, view_prompts=False,
                             elevation_range=(0.0, 30.0))


def mvdream_unet_config(base_unet_config: Dict[str, Any], camera_dim: int = 16, sample_size: int = 32) -> Dict[str, Any]:
    """MVDream's UNet as a diffusers config: the SD UNet's config with the camera input and its 256-px (32-latent)
    sample size."""
    return {**camera_unet_config(base_unet_config, camera_dim), "sample_size": int(sample_size)}


def read_checkpoint(path: Path) -> Dict[str, Tensor]:
    """The flat state dict of a ``.pt``/``.ckpt``/``.bin`` (torch) or ``.safetensors`` checkpoint (a
    ``{"state_dict": ...}`` wrapper is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"MVDream checkpoint {str(path)!r} does not exist (expected a file such as sd-v2.1-base-4view.pt)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: one line, not a pickle traceback
        raise ModelLoadError(f"{path} could not be read as a checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    return state


def convert_unet(state: Dict[str, Tensor], config: Dict[str, Any]) -> Dict[str, Tensor]:
    """The UNet's weights in diffusers' naming (``config``: the camera-conditioned diffusers config)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    missing = [k for k in CAMERA_KEYS if UNET_PREFIX + k not in state]
    if missing:
        found = sorted({k.split(".")[0] for k in state})[:6]
        raise ModelLoadError(f"not an MVDream checkpoint: no {UNET_PREFIX}{missing[0]} (top-level keys: {found}); "
                             "a plain Stable Diffusion checkpoint has no camera input")
    plain = {k: v for k, v in config.items() if k not in ("class_embed_type", "projection_class_embeddings_input_dim")}
    out = convert_ldm_unet_checkpoint(state, plain)
    for src, dst in CAMERA_KEYS.items():
        out[dst] = state[UNET_PREFIX + src]
    return out


def convert_vae(state: Dict[str, Tensor], config: Dict[str, Any]) -> Optional[Dict[str, Tensor]]:
    """The VAE's weights in diffusers' naming, or None when the checkpoint holds no ``first_stage_model``."""
    if not any(k.startswith(VAE_PREFIX) for k in state):
        return None
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    return convert_ldm_vae_checkpoint(state, config)


def _base_folder(base: str, name: str) -> Path:
    """``name/`` of the base model: a local folder, or fetched from the hub (the user's machine)."""
    p = Path(base).expanduser()
    if p.is_dir():
        if not (p / name).is_dir():
            raise ModelLoadError(f"{p} has no {name}/ (expected a Stable Diffusion 2.1 base folder in diffusers layout)")
        return p / name
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base, allow_patterns=[f"{name}/*"])) / name
    except Exception as exc:
        raise ModelLoadError(f"--base {base!r} is neither a folder nor a reachable hub id ({type(exc).__name__}: {exc})") from None


def convert(checkpoint: Path, base: str, to: Path, overwrite: bool = False) -> Path:
    """Write a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
    ``multiview.json``) from an MVDream checkpoint and a Stable Diffusion 2.1 base (text encoder, tokenizer,
    scheduler; its VAE when the checkpoint has none)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    to = Path(to)
    if to.exists() and not overwrite:
        raise SplatgenError(f"{to} exists; pass --overwrite to replace it")
    state = read_checkpoint(checkpoint)
    unet_cfg = json.loads((_base_folder(base, "unet") / "config.json").read_text())
    cfg = mvdream_unet_config(unet_cfg)
    unet = UNet2DConditionModel.from_config(cfg)
    weights = convert_unet(state, dict(unet.config))
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{checkpoint}: the UNet does not match MVDream's SD-2.1 layout (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
    tmp = to.with_name(to.name + ".tmp-convert")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unet.save_pretrained(tmp / "unet", safe_serialization=True)
    vae_dir = _base_folder(base, "vae")
    vae_cfg = json.loads((vae_dir / "config.json").read_text())
    vae_weights = convert_vae(state, vae_cfg)
    if vae_weights is None:
        shutil.copytree(vae_dir, tmp / "vae")
    else:
        vae = AutoencoderKL.from_config(vae_cfg)
        vae.load_state_dict(vae_weights)
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
    for name in ("text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(_base_folder(base, name), tmp / name)
    MVDREAM_SPEC.write(tmp)
    (tmp / "CONVERTED_FROM.txt").write_text(f"{Path(checkpoint).name} (MVDream) + {base} (text encoder, tokenizer, "
                                            "scheduler) by splatgen.guidance.mvdream\n")
    if to.exists():
        shutil.rmtree(to)
    tmp.replace(to)
    return to


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m splatgen.guidance.mvdream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="MVDream's sd-v2.1-base-4view.pt (or .safetensors)")
    ap.add_argument("--base", required=True, help="Stable Diffusion 2.1 base: a diffusers folder or a hub id")
    ap.add_argument("--to", type=Path, required=True, help="the diffusers folder to write")
    ap.add_argument("--overwrite", action="store_true")
    ns = ap.parse_args(argv)
    try:
        print(convert(ns.checkpoint, ns.base, ns.to, ns.overwrite))
    except SplatgenError as exc:
        print(f"splatgen.guidance.mvdream: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
