"""Random-weight diffusion models for tests, smoke runs and benchmarks (no downloads, fixed seeds).

- :func:`make_tiny_sd` / :func:`make_tiny_pixel` write complete diffusers-format folders (UNet, VAE, CLIP text
  encoder with a hand-written character-level tokenizer, DDPM scheduler) of a few hundred kB that load through
  the same ``from_pretrained`` path as the real models. The tiny SD deliberately uses 3 latent channels, a
  VAE factor of 2 and scaling factor 0.5, so any hard-coded 4 / 8 / 0.18215 breaks the tests.
- :func:`build_sd21_shaped` instantiates UNet + VAE from the real Stable Diffusion 2.1-base configs in
  ``model_configs/`` with random weights: the outputs are meaningless, the cost is the real model's.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ..cameras import DIRECTIONS

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

#: Stable Diffusion's training schedule (shared by SD 1.x and 2.x).
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)


def load_model_config(name: str) -> Dict[str, Any]:
    """A bundled config from ``model_configs/`` by file stem, e.g. ``'sd21_base_unet'``."""
    path = MODEL_CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json"))
        raise FileNotFoundError(f"no bundled model config {name!r}; known: {known}")
    return json.loads(path.read_text())


def _tiny_vocab() -> Dict[str, int]:
    """A character-level byte-BPE vocabulary: specials, then each character alone and word-final (``</w>``).

    With no merges every character is one token, which keeps the tokenizer tiny while covering lowercase
    prompts; unknown characters map to ``<|endoftext|>`` (the unk token), as in CLIP.
    """
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + ",.'-!?":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return vocab


def save_tiny_clip_text_encoder(
    folder: Union[str, Path], *, hidden_size: int = 32, model_max_length: int = 32, seed: int = 0
) -> Tuple[Path, Path]:
    """Write ``tokenizer/`` and ``text_encoder/`` (a 2-layer CLIPTextModel) under ``folder``.

    The tokenizer is built from a vocab.json/merges.txt written here (the tiny CLIP tokenizers of the
    diffusers/transformers test suites are downloaded from the hub, which this project cannot rely on).
    """
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    raw = folder / "_tokenizer_src"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = _tiny_vocab()
    (raw / "vocab.json").write_text(json.dumps(vocab))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    (raw / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length})
    )
    # Round-trip through CLIPTokenizer so the saved files are whatever this transformers version writes.
    tokenizer = CLIPTokenizer.from_pretrained(raw)
    tokenizer.save_pretrained(folder / "tokenizer")
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=model_max_length,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        projection_dim=hidden_size,
    )
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    return folder / "tokenizer", folder / "text_encoder"


def _tiny_unet(in_channels: int, sample_size: int, cross_attention_dim: int, camera_dim: int = 0) -> Any:
    from diffusers import UNet2DConditionModel

    camera = {"class_embed_type": "projection", "projection_class_embeddings_input_dim": camera_dim} if camera_dim else {}
    return UNet2DConditionModel(
        **camera,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def make_tiny_sd(
    folder: Union[str, Path],
    *,
    seed: int = 0,
    latent_channels: int = 3,
    scaling_factor: float = 0.5,
    vae_blocks: int = 2,
    unet_sample_size: int = 8,
    model_max_length: int = 32,
    prediction_type: str = "epsilon",
) -> Path:
    """Write a tiny random-weight Stable-Diffusion-like model (diffusers layout) into ``folder``.

    Defaults: 3 latent channels, VAE factor 2 (``vae_blocks=2``), scaling factor 0.5, UNet sample size 8, so
    the native render size is 16x16; CLIP hidden size 32 and a 32-token context.

    Returns:
        ``folder`` as a Path, holding ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.
    """
    from diffusers import AutoencoderKL, DDPMScheduler

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = 32
    save_tiny_clip_text_encoder(folder, hidden_size=hidden, model_max_length=model_max_length, seed=seed)
    torch.manual_seed(seed + 1)
    _tiny_unet(latent_channels, unet_sample_size, hidden).save_pretrained(folder / "unet")
    torch.manual_seed(seed + 2)
    widths = tuple(8 * 2**i for i in range(vae_blocks))
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_blocks,
        up_block_types=("UpDecoderBlock2D",) * vae_blocks,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=unet_sample_size * 2 ** (vae_blocks - 1),
        scaling_factor=scaling_factor,
    ).save_pretrained(folder / "vae")
    DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type).save_pretrained(folder / "scheduler")
    return folder


def make_tiny_pixel(
    folder: Union[str, Path],
    *,
    seed: int = 0,
    sample_size: int = 16,
    model_max_length: int = 32,
    prediction_type: str = "epsilon",
    num_views: int = 1,
) -> Path:
    """Write a tiny random-weight pixel-space text-conditional model (``unet/`` with 3 channels, ``scheduler/``,
    ``text_encoder/`` + ``tokenizer/``) into ``folder`` and return it. ``num_views`` > 1: a camera-conditioned
    multi-view prior of that many views (camera input and ``multiview.json``, :mod:`splatgen.guidance.multiview`)."""
    from diffusers import DDPMScheduler

    from .multiview import MultiViewSpec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hidden = 32
    save_tiny_clip_text_encoder(folder, hidden_size=hidden, model_max_length=model_max_length, seed=seed)
    torch.manual_seed(seed + 1)
    spec = MultiViewSpec(num_views=num_views) if num_views > 1 else None
    _tiny_unet(3, sample_size, hidden, spec.camera_dim if spec else 0).save_pretrained(folder / "unet")
    if spec is not None:
        spec.write(folder)
    DDPMScheduler(**SD_SCHEDULE, prediction_type=prediction_type).save_pretrained(folder / "scheduler")
    return folder


def random_text_embeddings(
    seq_len: int, dim: int, *, device: Union[torch.device, str] = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Tuple[Dict[Optional[str], Tensor], Tensor]:
    """Random [1, seq_len, dim] embeddings for the plain prompt and each view direction, and an uncond one."""
    g = torch.Generator().manual_seed(seed)
    keys = [None] + list(DIRECTIONS)
    cond = {k: torch.randn(1, seq_len, dim, generator=g).to(device, dtype) for k in keys}
    uncond = torch.randn(1, seq_len, dim, generator=g).to(device, dtype)
    return cond, uncond


def build_sd21_shaped(
    device: Union[torch.device, str], dtype: torch.dtype = torch.float16, *, seed: int = 0, text_len: int = 77,
    multiview: bool = False, unet_config: Optional[Dict[str, Any]] = None,
) -> Any:
    """A :class:`StableDiffusionGuidance` with the exact shapes of SD 2.1-base and random weights (benchmarks).

    UNet (866M parameters) and VAE come from ``model_configs/sd21_base_{unet,vae}.json``, the schedule from
    ``sd21_base_scheduler.json``; the text encoder is replaced by random 77 x 1024 embeddings per direction.
    Modules are built directly on ``device`` (no 3.5 GB fp32 copy on the CPU first). ``multiview``: MVDream's shape
    instead (the same UNet with its camera MLP, 4 views attending to each other, 256-px input;
    :mod:`splatgen.guidance.mvdream`). ``unet_config`` replaces the UNet's config (smoke tests).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from .stable_diffusion import StableDiffusionGuidance

    device = torch.device(device)
    torch.manual_seed(seed)
    ucfg = dict(unet_config or load_model_config("sd21_base_unet"))
    if multiview:
        from .mvdream import mvdream_unet_config

        ucfg = mvdream_unet_config(ucfg, sample_size=ucfg.get("sample_size", 64) // 2)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(ucfg)
        vae = AutoencoderKL.from_config(load_model_config("sd21_base_vae"))
    scheduler = DDPMScheduler.from_config(load_model_config("sd21_base_scheduler"))
    cond, uncond = random_text_embeddings(text_len, int(unet.config.cross_attention_dim), device=device, dtype=dtype, seed=seed)
    g = StableDiffusionGuidance.from_modules(
        unet, vae, scheduler, text_embeddings=cond, uncond_embedding=uncond, device=device, dtype=dtype,
        name=("mvdream-sd21-shaped" if multiview else "sd21-base-shaped") + " (random weights)"
    )
    if multiview:
        from .mvdream import MVDREAM_SPEC

        g.set_multiview(MVDREAM_SPEC)
    return g
