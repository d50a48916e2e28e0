"""Guidance backends on tiny random-weight models (CPU, no downloads).

The tiny SD model has 3 latent channels, a VAE factor of 2 and scaling factor 0.5 on purpose: any
hard-coded 4 / 8 / 0.18215 in the guidance makes these tests fail.
"""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from splatgen.cameras import DIRECTIONS
from splatgen.config import GuidanceConfig
from splatgen.errors import ConfigError, ModelLoadError, PromptError
from splatgen.components import build_guidance
from splatgen.config import Config
from splatgen.guidance import PixelGuidance, StableDiffusionGuidance, directional_prompt, resolve_dtype
from splatgen.guidance.unet_guidance import prediction_to_epsilon
from splatgen.guidance.tiny import load_model_config, make_tiny_pixel, make_tiny_sd, random_text_embeddings
from splatgen.sds import add_noise, classifier_free_guidance, sds_gradient, sds_loss, sds_weight

LONG_PROMPT = "a very detailed photograph of an antique wooden rocking chair with a red cushion"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tiny_models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"sd": make_tiny_sd(root / "sd"), "pixel": make_tiny_pixel(root / "pixel")}


@pytest.fixture(scope="module")
def sd(tiny_dirs: dict) -> StableDiffusionGuidance:
    g = build_guidance(Config(guidance=GuidanceConfig(type="stable-diffusion", model=str(tiny_dirs["sd"]))), "cpu")
    assert isinstance(g, StableDiffusionGuidance)
    g.prepare_text("a cat")
    return g


@pytest.fixture(scope="module")
def pixel(tiny_dirs: dict) -> PixelGuidance:
    g = build_guidance(Config(guidance=GuidanceConfig(type="pixel", model=str(tiny_dirs["pixel"]))), "cpu")
    assert isinstance(g, PixelGuidance)
    g.prepare_text("a cat")
    return g


def _latents(g: StableDiffusionGuidance, B: int, seed: int = 0) -> torch.Tensor:
    h = g.native_size[0] // g.vae_factor
    return torch.randn(B, g.latent_channels, h, h, generator=torch.Generator().manual_seed(seed))


# ---- Stable Diffusion (latent) ---------------------------------------------------------------------------------


def test_sd_sizes_come_from_the_configs(sd: StableDiffusionGuidance) -> None:
    vcfg, ucfg = sd.vae.config, sd.unet.config
    # The tiny model is built so that SD's constants would be wrong.
    assert (vcfg.latent_channels, 2 ** (len(vcfg.block_out_channels) - 1), vcfg.scaling_factor) != (4, 8, 0.18215)
    assert sd.latent_channels == vcfg.latent_channels == ucfg.in_channels
    assert sd.vae_factor == 2 ** (len(vcfg.block_out_channels) - 1)
    assert sd.scaling_factor == vcfg.scaling_factor
    assert sd.input_size == ucfg.sample_size * sd.vae_factor
    assert sd.num_train_timesteps == 1000 and sd.alphas_cumprod.shape == (1000,)
    assert sd.alphas_cumprod.dtype == torch.float32


def test_sd_encode_shape_value_and_resize(sd: StableDiffusionGuidance) -> None:
    side = sd.input_size
    images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    z = sd.encode(images)
    lat = side // sd.vae_factor
    assert z.shape == (2, sd.vae.config.latent_channels, lat, lat) and z.dtype == torch.float32
    with torch.no_grad():  # posterior mean times the config's scaling factor
        ref = sd.vae.encode(images * 2 - 1).latent_dist.mean * sd.vae.config.scaling_factor
    torch.testing.assert_close(z.detach(), ref)
    # Renders of another size are resized to the native size first.
    assert sd.encode(torch.rand(2, 3, side + 7, side + 7)).shape == z.shape
    assert sd.decode(z).shape == (2, 3, side, side)


def test_sd_gradient_flows_to_images(sd: StableDiffusionGuidance) -> None:
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    x0 = sd.encode(images)
    t = torch.tensor([100, 700])
    noise = torch.randn_like(x0)
    eps = sd.predict_noise(add_noise(x0, noise, t, sd.alphas_cumprod), t, ["front", "back"])
    grad, _ = sds_gradient(eps, noise, sds_weight(t, sd.alphas_cumprod), guidance_scale=10.0)
    sds_loss(x0, grad).backward()
    assert images.grad is not None and images.grad.dtype == torch.float32
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in sd.unet.parameters()) and not sd.vae.training


def test_predict_noise_halves(sd: StableDiffusionGuidance) -> None:
    x_t, t = _latents(sd, 2), torch.tensor([500, 500])
    a = sd.predict_noise(x_t, t, ["front", "back"])
    b = sd.predict_noise(x_t, t, ["side", "overhead"])
    assert a.shape == (4, *x_t.shape[1:]) and a.dtype == torch.float32
    torch.testing.assert_close(a[:2], b[:2])  # unconditional half: independent of the view direction
    assert not torch.allclose(a[2:], b[2:])  # conditional half: depends on it
    assert not torch.allclose(a[2], a[3])  # same x_t, different directions in one batch


def test_predict_noise_matches_separate_unet_calls_and_cfg(sd: StableDiffusionGuidance) -> None:
    x_t, t = _latents(sd, 2, seed=3), torch.tensor([50, 900])
    eps = sd.predict_noise(x_t, t, ["front", None])
    with torch.no_grad():
        uncond = sd.unet(x_t, t, encoder_hidden_states=sd._uncond.expand(2, -1, -1)).sample
        cond = sd.unet(x_t, t, encoder_hidden_states=torch.cat([sd._cond["front"], sd._cond[None]])).sample
    torch.testing.assert_close(eps[:2], uncond, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eps[2:], cond, atol=1e-5, rtol=1e-4)
    s = 7.5
    torch.testing.assert_close(classifier_free_guidance(eps[:2], eps[2:], s), uncond + s * (cond - uncond), atol=1e-4, rtol=1e-4)


def test_v_prediction_is_converted_to_epsilon(sd: StableDiffusionGuidance) -> None:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction")
    v_model = StableDiffusionGuidance.from_modules(
        sd.unet, sd.vae, sched, text_embeddings=sd._cond, uncond_embedding=sd._uncond
    )
    assert v_model.prediction_type == "v_prediction"  # read from the scheduler config
    x_t, t = _latents(sd, 2, seed=4), torch.tensor([10, 990])
    raw = sd.predict_noise(x_t, t, ["front", "back"])  # same UNet read as epsilon = the raw output
    eps = v_model.predict_noise(x_t, t, ["front", "back"])
    abar = sched.alphas_cumprod[torch.cat([t, t])].view(-1, 1, 1, 1)
    torch.testing.assert_close(eps, abar.sqrt() * raw + (1 - abar).sqrt() * torch.cat([x_t, x_t]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_prediction_to_epsilon_recovers_the_noise(kind: str) -> None:
    g = torch.Generator().manual_seed(5)
    abar_table = torch.linspace(0.999, 0.01, 1000)
    x0, noise, t = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g), torch.tensor([0, 400, 999])
    abar = abar_table[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    pred = abar.sqrt() * noise - (1 - abar).sqrt() * x0 if kind == "v_prediction" else x0
    torch.testing.assert_close(prediction_to_epsilon(pred, x_t, t, abar_table, kind), noise, atol=1e-4, rtol=1e-4)


def test_from_modules_with_random_embeddings(sd: StableDiffusionGuidance) -> None:
    from diffusers import DDPMScheduler

    cond, uncond = random_text_embeddings(7, sd.unet.config.cross_attention_dim)
    g = StableDiffusionGuidance.from_modules(sd.unet, sd.vae, DDPMScheduler(), text_embeddings=cond, uncond_embedding=uncond)
    assert g.text_ready and g.text_encoder is None and g.predict_noise(_latents(sd, 1), torch.tensor(3), ["side"]).shape[0] == 2


# ---- text ------------------------------------------------------------------------------------------------------


def test_text_encoder_is_freed_after_prepare_text(tiny_dirs: dict) -> None:
    g = StableDiffusionGuidance(str(tiny_dirs["sd"]), "cpu")
    assert g.text_encoder is not None and not g.text_ready
    g.prepare_text("a red chair", negative_prompt="blurry")
    assert g.text_ready
    assert g.text_encoder is None
    assert set(g._cond) == {None, *DIRECTIONS}
    with pytest.raises(RuntimeError, match="released"):
        g.prepare_text("another prompt")
    kept = StableDiffusionGuidance(str(tiny_dirs["sd"]), "cpu", keep_text_encoder=True)
    kept.prepare_text("a red chair", view_dependent=False)
    assert kept.text_encoder is not None and set(kept._cond) == {None}


def test_negative_prompt_replaces_the_unconditional(tiny_dirs: dict, sd: StableDiffusionGuidance) -> None:
    g = StableDiffusionGuidance(str(tiny_dirs["sd"]), "cpu")
    g.prepare_text("a cat", negative_prompt="ugly")
    assert not torch.allclose(g._uncond, sd._uncond)  # sd used "" (the plain unconditional embedding)
    torch.testing.assert_close(g._cond["front"], sd._cond["front"])


def test_truncation_warning(tiny_dirs: dict) -> None:
    g = StableDiffusionGuidance(str(tiny_dirs["sd"]), "cpu", keep_text_encoder=True)
    with pytest.warns(UserWarning) as rec:
        g.prepare_text(LONG_PROMPT)
    messages = [str(w.message) for w in rec]
    cut = [m for m in messages if "token(s) longer than the text encoder's 32" in m]
    assert len(cut) == 1 and "sees only" in cut[0] and cut[0] in g.prompt_warnings
    assert any("view-dependent" in m for m in messages)  # the ', front view' suffixes are cut too
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g.prepare_text("a cat")
    assert not [w for w in rec if "token" in str(w.message)] and g.prompt_warnings == []
    # Fits alone but not with ", overhead view" appended: the view suffix would be lost.
    with pytest.warns(UserWarning, match="view-dependent"):
        g.prepare_text("a small red wooden chair")


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused(sd: StableDiffusionGuidance, pixel: PixelGuidance, prompt: str) -> None:
    for g in (sd, pixel):
        with pytest.raises(PromptError, match="empty"):
            g.prepare_text(prompt)


def test_directional_prompt() -> None:
    assert directional_prompt("a cat", "back") == "a cat, back view"
    assert directional_prompt("a cat", None) == "a cat"


# ---- loading errors --------------------------------------------------------------------------------------------


def test_missing_folder_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    for kind in ("stable-diffusion", "pixel"):
        with pytest.raises(ModelLoadError) as err:
            build_guidance(Config(guidance=GuidanceConfig(type=kind, model=str(missing))), "cpu")
        assert str(missing) in str(err.value) and "huggingface-cli download" in str(err.value)
    with pytest.raises(ModelLoadError, match="empty"):
        build_guidance(Config(guidance=GuidanceConfig(type="stable-diffusion", model="")), "cpu")


def test_scheduler_of_another_class_is_read_as_ddpm(tiny_dirs: dict, tmp_path: Path) -> None:
    """SD 2.1-base ships a PNDMScheduler config; its betas and prediction_type are what we need."""
    from diffusers import PNDMScheduler

    folder = tmp_path / "pndm_sd"
    shutil.copytree(tiny_dirs["sd"], folder)
    shutil.rmtree(folder / "scheduler")
    PNDMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction", skip_prk_steps=True
    ).save_pretrained(folder / "scheduler")
    g = StableDiffusionGuidance(str(folder), "cpu")
    assert g.prediction_type == "v_prediction" and g.num_train_timesteps == 1000
    expected = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)
    torch.testing.assert_close(g.alphas_cumprod, expected)


def test_folder_without_unet_is_a_model_load_error(tiny_dirs: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken_sd"
    shutil.copytree(tiny_dirs["sd"], broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelLoadError) as err:
        StableDiffusionGuidance(str(broken), "cpu")
    assert str(broken) in str(err.value) and "unet/" in str(err.value)
    (broken / "unet").mkdir()  # present but empty: the loader's own error, wrapped
    with pytest.raises(ModelLoadError) as err:
        StableDiffusionGuidance(str(broken), "cpu")
    assert "UNet" in str(err.value) and str(broken) in str(err.value) and "Error" in str(err.value)


def test_unknown_backend(tmp_path: Path) -> None:
    cfg = Config(guidance=GuidanceConfig(type="stable-diffusion", model=str(tmp_path)))
    cfg.guidance.type = "nope"
    with pytest.raises(ConfigError, match="nope"):
        build_guidance(cfg, "cpu")


# ---- dtypes ----------------------------------------------------------------------------------------------------


def test_resolve_dtype() -> None:
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("fp32", "cuda:0") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    from splatgen.guidance.loading import cpu_has_native_bf16

    assert resolve_dtype("fast", "cpu") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert resolve_dtype("fast", torch.device("cuda")) == torch.float16
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        assert resolve_dtype("fp16", "cpu") == torch.float32
    with pytest.raises(ConfigError):
        resolve_dtype("fp8", "cpu")


def test_sd_in_bfloat16(tiny_dirs: dict) -> None:
    g = StableDiffusionGuidance(str(tiny_dirs["sd"]), "cpu", torch.bfloat16)
    g.prepare_text("a cat")
    assert next(g.unet.parameters()).dtype == torch.bfloat16 and g._uncond.dtype == torch.bfloat16
    images = torch.rand(1, 3, g.input_size, g.input_size).requires_grad_(True)
    x0 = g.encode(images)
    assert x0.dtype == torch.float32
    eps = g.predict_noise(x0.detach(), torch.tensor([300]), ["front"])
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()
    x0.square().sum().backward()
    assert images.grad.dtype == torch.float32 and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


# ---- pixel space -----------------------------------------------------------------------------------------------


def test_pixel_guidance(pixel: PixelGuidance) -> None:
    side = pixel.unet.config.sample_size
    assert pixel.input_size == side and pixel.text_encoder is None
    images = torch.rand(2, 3, 2 * side + 3, 2 * side + 3, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    x0 = pixel.encode(images)
    assert x0.shape == (2, 3, side, side) and x0.min() >= -1 and x0.max() <= 1
    a = pixel.predict_noise(x0.detach(), torch.tensor([200, 800]), ["front", "side"])
    b = pixel.predict_noise(x0.detach(), torch.tensor([200, 800]), ["back", "overhead"])
    assert a.shape == (4, 3, side, side)
    torch.testing.assert_close(a[:2], b[:2])
    assert not torch.allclose(a[2:], b[2:])
    (x0 * a[2:]).sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    native = torch.rand(1, 3, side, side)
    torch.testing.assert_close(pixel.decode(pixel.encode(native)), native)


def test_pixel_folder_without_text_encoder(tiny_dirs: dict, tmp_path: Path) -> None:
    broken = tmp_path / "pixel_no_text"
    shutil.copytree(tiny_dirs["pixel"], broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(ModelLoadError, match="text encoder"):
        PixelGuidance(str(broken), "cpu")


# ---- bundled SD 2.1-base configs -------------------------------------------------------------------------------


def test_sd21_configs_have_the_real_shapes() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):  # shapes only: no 3.5 GB of random weights on the CPU
        unet = UNet2DConditionModel.from_config(load_model_config("sd21_base_unet"))
        vae = AutoencoderKL.from_config(load_model_config("sd21_base_vae"))
    assert sum(p.numel() for p in unet.parameters()) == 865_910_724  # SD 2.1's UNet
    assert unet.config.cross_attention_dim == 1024 and unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == 512
    assert vae.config.scaling_factor == 0.18215 and vae.config.latent_channels == 4
    assert math.isclose(load_model_config("sd21_base_scheduler")["beta_end"], 0.012)


def test_vae_checkpointing_gives_the_same_gradient(sd: StableDiffusionGuidance) -> None:
    """Recomputing the encoder's activations in backward must not change the gradient reaching the images, and
    must really recompute (the blocks run again during backward)."""
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 16, 16, generator=g)
    weight = torch.randn(2, sd.latent_channels, 8, 8, generator=g)

    def grad() -> torch.Tensor:
        x = images.clone().requires_grad_(True)
        (sd.encode(x) * weight).sum().backward()
        return x.grad

    calls = []
    inner = sd.vae.encoder.down_blocks[0].resnets[0]
    forward = inner.forward  # a module inside a checkpointed block: called again when the block is recomputed

    def counted(*a, **k):
        calls.append(1)
        return forward(*a, **k)

    inner.forward = counted
    try:
        plain = grad()
        n_plain = len(calls)
        sd.set_vae_checkpointing(True)
        checkpointed = grad()
        n_ckpt = len(calls) - n_plain
        with torch.no_grad():
            sd.encode(images)
        n_nograd = len(calls) - n_plain - n_ckpt
    finally:
        sd.set_vae_checkpointing(False)
        del inner.forward
    assert (n_plain, n_ckpt, n_nograd) == (1, 2, 1)
    assert "forward" not in sd.vae.encoder.down_blocks[0].__dict__  # switched off again: plain modules
    assert plain.abs().sum() > 0
    torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-6)


def test_tiny_encoder_replaces_the_vae_for_the_gradient(sd: StableDiffusionGuidance) -> None:
    from diffusers import AutoencoderTiny

    def tiny(blocks):
        return AutoencoderTiny(latent_channels=sd.latent_channels, encoder_block_out_channels=(8,) * blocks,
                               decoder_block_out_channels=(8,) * blocks, num_encoder_blocks=(1,) * blocks,
                               num_decoder_blocks=(1,) * blocks)

    with pytest.raises(ModelLoadError, match="shrinks images"):
        sd.set_tiny_encoder(tiny(4))
    full = sd.encode(torch.rand(2, 3, 32, 32))
    try:
        sd.set_tiny_encoder(tiny(2))  # the tiny SD's VAE halves the side once, like a two-block TAESD
        x = torch.rand(2, 3, 32, 32, requires_grad=True)
        z = sd.encode(x)
        assert z.shape == full.shape and not torch.allclose(z, full)
        z.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        assert sd.describe()["encoder"] == "tiny"
    finally:
        sd.tiny_encoder, sd._encoder_fn = None, None
