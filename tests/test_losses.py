"""The score-distillation losses (splatgen.guidance.losses), their conditioning and Perp-Neg: formulas checked
against closed forms, every loss with every kind of guidance on the CPU, the Triton and PyTorch gradients equal,
and VSD's state surviving a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

import splatgen
from splatgen.cameras import orbit_cameras
from splatgen.config import LOSS_NAMES, VSD_ESTIMATOR_NAMES, GuidanceConfig, field_docs, load_config
from splatgen.errors import ConfigError
from splatgen.guidance.base import Guidance
from splatgen.guidance.conditioning import (
    KEY_INDEX, TEXT_KEYS, Conditioning, cfg_conditioning, perp_neg_combine, perp_neg_conditioning,
    perpendicular_component,
)
from splatgen.guidance.losses import LOSSES, VSD_ESTIMATORS, RenderBufferEstimator, build_loss
from splatgen.guidance.tiny import make_tiny_pixel, make_tiny_sd
from splatgen.kernels_glue import sds_loss
from splatgen.sds import add_noise, ddim_step, posterior_mean
from splatgen.world.oracle import ddpm_alphas_cumprod

TINY_RUN = ["run.steps=4", "run.log_every=1", "run.preview_views=0", "run.evaluate=false", "run.progress=off",
            "model.num_points=120", "render.resolution=24", "camera.batch_size=2"]


@pytest.fixture(scope="module")
def tiny_pixel(tmp_path_factory):
    return make_tiny_pixel(tmp_path_factory.mktemp("tiny_pixel"))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


def guidance_overrides(kind: str, folders) -> list:
    if kind == "pixel":
        return ["guidance.type=pixel", f"guidance.model={folders['pixel']}"]
    if kind == "stable-diffusion":
        return ["guidance.type=stable-diffusion", f"guidance.model={folders['sd']}"]
    return ["guidance.type=world", "guidance.world_views=24", "guidance.world_resolution=24"]


# ------------------------------------------------------------------------------------------------ the table
def test_loss_table_is_the_configs_choices_and_documented():
    assert tuple(LOSSES) == LOSS_NAMES
    assert set(VSD_ESTIMATORS) | {"auto"} == set(VSD_ESTIMATOR_NAMES)
    doc = field_docs(GuidanceConfig)["loss"]
    for name in LOSS_NAMES:
        assert f"'{name}'" in doc, f"guidance.loss's docstring does not name {name!r}"
    for paper in ("DreamFusion", "Yu et al.", "Katzir", "LucidDreamer", "ProlificDreamer"):
        assert paper in doc
    with pytest.raises(ConfigError, match="guidance.loss='sdsx' is not allowed; choose one of"):
        load_config(overrides=["guidance.loss=sdsx"])
    with pytest.raises(ConfigError, match="perp_neg=true needs guidance.view_dependent"):
        load_config(overrides=["guidance.perp_neg=true", "guidance.view_dependent=false"])
    for bad in ("guidance.ism_inversion_steps=0", "guidance.ism_interval=0", "guidance.nfsd_t_small=1.5",
                "guidance.vsd_estimator=magic", "guidance.vsd_buffer=0", "guidance.perp_neg_weight=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(overrides=[bad])


# ------------------------------------------------------------------------------------------------ conditioning
def test_conditioning_rows_and_the_cfg_batch():
    cams = orbit_cameras([0.0, 10.0], [0.0, 150.0], 2.2, 45.0, 16)
    c = cfg_conditioning(cams)
    assert len(c) == 4 and [c.key(i) for i in range(4)] == ["negative", "negative", "front", "back"]
    torch.testing.assert_close(c.azimuth, torch.tensor([0.0, 150.0, 0.0, 150.0]))
    torch.testing.assert_close(c.elevation, torch.tensor([0.0, 10.0, 0.0, 10.0]))
    mix = Conditioning.of([{"front": 0.25, "side": 0.75}])
    assert mix.key(0) is None and math.isnan(float(mix.elevation[0]))
    assert mix.weights[0, KEY_INDEX["side"]] == 0.75 and float(mix.weights.sum()) == 1.0
    with pytest.raises(ValueError, match="unknown prompt key 'sideways'"):
        Conditioning.of(["sideways"])


def test_unet_guidance_mixes_text_embeddings_and_keeps_one_text_exact(tiny_pixel):
    from splatgen.guidance import PixelGuidance

    g = PixelGuidance(str(tiny_pixel), "cpu", keep_text_encoder=True)
    g.prepare_text("a red mug", negative_prompt="a blue chair")
    table = g.text_table()
    assert table.shape[0] == len(TEXT_KEYS)
    # "negative" is the negative prompt (what CFG measures against), "uncond" the empty prompt: both kept.
    assert not torch.equal(table[KEY_INDEX["negative"]], table[KEY_INDEX["uncond"]])
    one = g.text_embeddings(Conditioning.of(["back", "uncond"]))
    assert torch.equal(one[0], table[KEY_INDEX["back"]]) and torch.equal(one[1], table[KEY_INDEX["uncond"]])
    mix = g.text_embeddings(Conditioning.of([{"front": 0.3, "side": 0.7}]))
    torch.testing.assert_close(mix[0], 0.3 * table[KEY_INDEX["front"]] + 0.7 * table[KEY_INDEX["side"]])


def test_world_oracle_mixture_is_the_exact_denoiser_of_the_mixed_view_sets():
    from splatgen.world.oracle import WorldGuidance

    g = WorldGuidance(num_views=24, resolution=16, reference_views=1)
    g.prepare_text("a red mug")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 16, 16, generator=gen)
    t = torch.tensor([900])
    got = g.denoise_rows(x, t, Conditioning.of([{"front": 0.25, "back": 0.75}]))
    dirs = g.view_directions
    front = torch.tensor([d == "front" for d in dirs])
    back = torch.tensor([d == "back" for d in dirs])
    prior = torch.zeros(g._all.shape[0], dtype=torch.float64)
    prior[: len(dirs)] = 0.25 * front.double() / front.sum() + 0.75 * back.double() / back.sum()
    want = posterior_mean(x.reshape(1, -1), g._abar64[t], g._all,
                          log_prior=torch.where(prior > 0, prior.log(), torch.tensor(-math.inf))[None])
    torch.testing.assert_close(got.reshape(1, -1), want, rtol=0, atol=1e-12)
    # One text is that text's set alone, as before.
    only_front = g.denoise_rows(x, t, Conditioning.of(["front"]))
    torch.testing.assert_close(only_front.reshape(1, -1), posterior_mean(x.reshape(1, -1), g._abar64[t], g._all,
                                                                        masks=torch.cat([front, torch.zeros(g._all.shape[0] - len(dirs), dtype=torch.bool)])[None]))


# ------------------------------------------------------------------------------------------------ Perp-Neg
def test_perp_neg_weights_follow_the_view():
    cams = orbit_cameras([0.0, 0.0, 0.0, 0.0, 70.0], [0.0, 90.0, 135.0, 180.0, 0.0], 2.2, 45.0, 16)
    pos, negs, w = perp_neg_conditioning(cams)
    # front view: positive is 'front', no push away from itself, a push away from 'side'
    assert pos.key(0) == "front" and w[0, 0] == pytest.approx(0.0, abs=1e-6) and w[0, 1] == pytest.approx(1.574, abs=1e-3)
    # side view: pushed away from 'front' only
    assert pos.key(1) == "side" and w[1, 0] == pytest.approx(1.574, abs=1e-3) and w[1, 1] == pytest.approx(0.0, abs=1e-6)
    # halfway to the back: a mix of side and back
    assert pos.weights[2, KEY_INDEX["side"]] == pytest.approx(0.5) and pos.weights[2, KEY_INDEX["back"]] == pytest.approx(0.5)
    # back view: pushed away from 'front' most (1.97), from 'side' a little (0.39)
    assert pos.key(3) == "back" and negs.key(3) == "side" and negs.key(5 + 3) == "front"
    assert w[3, 0] == pytest.approx(0.394, abs=1e-3) and w[3, 1] == pytest.approx(1.967, abs=1e-3)
    # overhead: no negatives
    assert pos.key(4) == "overhead" and torch.equal(w[4], torch.zeros(2))
    assert torch.equal(perp_neg_conditioning(cams, weight=2.0)[2], 2 * w)


def test_perp_neg_removes_only_the_perpendicular_part_of_a_negative():
    g = torch.Generator().manual_seed(1)
    null = torch.randn(3, 4, 5, 5, generator=g)
    pos = null + torch.randn(3, 4, 5, 5, generator=g)
    d = pos - null
    # A negative along the positive direction changes nothing; an orthogonal one is removed with its weight.
    along = null + 2.0 * d
    ortho_dir = perpendicular_component(torch.randn(3, 4, 5, 5, generator=g), d)
    ortho = null + ortho_dir
    w = torch.tensor([[1.5, 0.5]] * 3)
    out = perp_neg_combine(null, pos, [along, ortho], w)
    torch.testing.assert_close(out, pos - 0.5 * ortho_dir, atol=1e-5, rtol=1e-5)
    dims = (1, 2, 3)
    assert float((perpendicular_component(ortho_dir + 3 * d, d) * d).sum(dims).abs().max()) < 1e-3


# ------------------------------------------------------------------------------------------------ formulas
class PointMass(Guidance):
    """A prior that knows one image per text: the exact denoiser of a point mass (eps = (x - sqrt(a) y) / sqrt(1-a)),
    its image the mix of the texts' images. Enough to check every loss's formula in closed form."""

    def __init__(self, images: dict, shape=(3, 8, 8)):
        self.alphas_cumprod = ddpm_alphas_cumprod().float()
        self.num_train_timesteps = 1000
        self.device = torch.device("cpu")
        self.images = {k: images.get(k, images["prompt"]) for k in TEXT_KEYS}
        self.table = torch.stack([self.images[k].reshape(-1) for k in TEXT_KEYS])
        self.text_ready = True
        self.shape = shape

    def prepare_text(self, prompt, negative_prompt="", view_dependent=True):
        pass

    def encode(self, images):
        return images * 2 - 1

    def target(self, cond: Conditioning) -> torch.Tensor:
        return (cond.weights @ self.table).reshape(len(cond), *self.shape)

    def predict(self, x, t, cond):
        a = self.alphas_cumprod[t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * self.target(cond)) / (1 - a).sqrt()


def _point_mass_setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = {k: torch.rand(3, 8, 8, generator=g) * 2 - 1 for k in ("uncond", "prompt", "front", "back", "side", "overhead")}
    imgs["negative"] = imgs["uncond"]
    cams = orbit_cameras([5.0, 5.0], [0.0, 180.0], 2.2, 45.0, 8)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 8, 8, generator=g)
    return PointMass(imgs), cams, x0, noise


def _cfg(**kw) -> GuidanceConfig:
    return load_config(extra={"guidance": kw}).guidance


def test_sds_csd_and_nfsd_put_their_baselines_in_the_fused_gradient():
    prior, cams, x0, noise = _point_mass_setup()
    t = torch.tensor([700, 100])
    x_t = add_noise(x0, noise, t, prior.alphas_cumprod)
    view = Conditioning.of(list(cams.directions), cams)
    eps_c = prior.predict(x_t, t, view)
    eps_null = prior.predict(x_t, t, Conditioning.of(["negative"] * 2, cams))
    sds = build_loss(_cfg(loss="sds"), prior).terms(x0, t, cams, noise)
    assert torch.equal(sds.baseline, noise) and torch.equal(sds.eps_pair, torch.cat([eps_null, eps_c]))
    csd = build_loss(_cfg(loss="csd"), prior).terms(x0, t, cams, noise)
    torch.testing.assert_close(csd.baseline, eps_null)
    # CSD's gradient is the classifier-free direction alone: w s (eps_cond - eps_null)
    grad_csd = csd.eps_pair[:2] + 7.5 * (csd.eps_pair[2:] - csd.eps_pair[:2]) - csd.baseline
    torch.testing.assert_close(grad_csd, 7.5 * (eps_c - eps_null), atol=1e-4, rtol=1e-5)
    nfsd = build_loss(_cfg(loss="nfsd"), prior).terms(x0, t, cams, noise)
    eps_empty = prior.predict(x_t, t, Conditioning.of(["uncond"] * 2, cams))
    torch.testing.assert_close(nfsd.eps_pair[:2], eps_empty)
    # t = 700 >= 200: the empty prompt's prediction (no negative prompt); t = 100 < 200: zero
    torch.testing.assert_close(nfsd.baseline[0], eps_empty[0])
    assert torch.equal(nfsd.baseline[1], torch.zeros_like(nfsd.baseline[1]))


def test_nfsd_with_a_negative_prompt_measures_against_it():
    g = torch.Generator().manual_seed(3)
    imgs = {k: torch.rand(3, 8, 8, generator=g) for k in ("uncond", "negative", "prompt")}
    prior = PointMass(imgs)
    cams = orbit_cameras([5.0], [0.0], 2.2, 45.0, 8)
    x0, noise, t = torch.rand(1, 3, 8, 8, generator=g), torch.randn(1, 3, 8, 8, generator=g), torch.tensor([600])
    loss = build_loss(_cfg(loss="nfsd", negative_prompt="ugly"), prior)
    terms = loss.terms(x0, t, cams, noise)
    x_t = add_noise(x0, noise, t, prior.alphas_cumprod)
    torch.testing.assert_close(terms.baseline, prior.predict(x_t, t, Conditioning.of(["negative"], cams)))
    assert loss.rows == 3  # empty, view, negative: one call of three rows


def test_ism_retraces_the_ddim_trajectory_and_vanishes_on_the_prior_own_image():
    prior, cams, x0, noise = _point_mass_setup()
    same = PointMass({k: None for k in TEXT_KEYS} | {"prompt": x0[0]} | {k: x0[0] for k in TEXT_KEYS})
    loss = build_loss(_cfg(loss="ism", ism_inversion_steps=3, ism_interval=0.05), same)
    t = torch.tensor([800])
    terms = loss.terms(x0[:1], t, cams[:1], noise[:1])
    a = same.alphas_cumprod
    # For a prior whose only image is the render, DDIM inversion is exact: x_t lies on the noising line of the
    # render with the initial noise, every prediction is that noise, and the interval score difference is 0.
    torch.testing.assert_close(terms.x_t, add_noise(x0[:1], noise[:1], t, a), atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(terms.baseline, noise[:1], atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(terms.eps_pair[1:], terms.baseline, atol=2e-4, rtol=1e-4)
    assert loss.calls == 3 + 1 + 1 and loss.rows == 3 + 1 + 2
    s, points = loss.interval(t)
    assert int(s) == 750 and [int(p) for p in points] == [0, 250, 500, 750]


def test_ddim_step_inverts_and_denoises_exactly_for_a_known_epsilon():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    a = ddpm_alphas_cumprod().float()
    lo, hi = torch.tensor([100, 300]), torch.tensor([600, 900])
    x_lo = add_noise(x0, eps, lo, a)
    torch.testing.assert_close(ddim_step(x_lo, eps, a[lo], a[hi]), add_noise(x0, eps, hi, a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ddim_step(add_noise(x0, eps, hi, a), eps, a[hi], a[lo]), x_lo, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_points_the_render_where_its_formula_says(name):
    """With a closed-form point-mass prior at guidance scale 1, descending SDS or VSD (the renders' exact denoiser)
    carries the render to the view's image; CSD and NFSD (no negative prompt, large t) move it along the classifier
    direction alone, from the null image toward the view's, whatever the render is; and so does ISM: for a point
    mass, DDIM inversion keeps one epsilon along the whole trajectory, so the interval's score difference is
    ``sqrt(abar_t / (1 - abar_t)) (null - view)``, the classifier direction."""
    prior, cams, x0, noise = _point_mass_setup(4)
    loss = build_loss(_cfg(loss=name, vsd_estimator="renders", guidance_scale=1.0), prior)
    target = prior.target(Conditioning.of(list(cams.directions), cams))
    null = prior.target(Conditioning.of(["negative"] * 2, cams))
    x = x0.clone()
    gen = torch.Generator().manual_seed(0)
    abar = prior.alphas_cumprod
    t = torch.tensor([600, 600])
    before = float((x - target).norm())
    for i in range(60):
        terms = loss.terms(x, t, cams, torch.randn(x.shape, generator=gen))
        grad = (1 - abar[t]).view(-1, 1, 1, 1) * (terms.eps_pair[2:] - terms.baseline)  # s = 1
        loss.after_backward(x, t, cams, gen)
        step = -0.1 * grad
        if name in ("csd", "nfsd", "ism"):
            cos = torch.nn.functional.cosine_similarity(step.reshape(2, -1), (target - null).reshape(2, -1))
            assert float(cos.min()) > 0.999
        x = x + step
    if name in ("sds", "vsd"):
        assert float((x - target).norm()) < 0.3 * before


def test_vsd_with_the_render_itself_in_its_buffer_is_sds():
    prior, cams, x0, noise = _point_mass_setup(5)
    est = RenderBufferEstimator(prior, size=4)
    est.update(x0, torch.tensor([0, 0]), cams, torch.Generator())
    t = torch.tensor([500, 800])
    x_t = add_noise(x0, noise, t, prior.alphas_cumprod)
    torch.testing.assert_close(est.predict(x_t, t, cams), noise, atol=1e-4, rtol=1e-4)
    est.update(x0 + 1, torch.tensor([0, 0]), cams, torch.Generator())
    est.update(x0 + 2, torch.tensor([0, 0]), cams, torch.Generator())
    assert est.points.shape[0] == 4 and est.directions == list(cams.directions) * 2  # only the newest 4 kept


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("kind", ["pixel", "stable-diffusion", "world"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_trains_with_every_guidance_on_the_cpu(kind, name, tiny_pixel, tiny_sd):
    folders = {"pixel": tiny_pixel, "sd": tiny_sd}
    perp = "true" if name in ("sds", "ism") else "false"  # Perp-Neg rides along on two of them
    res = splatgen.generate("a red mug", overrides=guidance_overrides(kind, folders) + TINY_RUN + [
        f"guidance.loss={name}", f"guidance.perp_neg={perp}"])
    rows = [r for r in res.history if "loss" in r]
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in rows)
    d = res.distillation
    assert d["loss"] == name and d["perp_neg"] == (perp == "true")
    pair = 4 if perp == "true" else 2
    extra = {"sds": 0, "csd": 0, "nfsd": 0, "ism": 3 + 1, "vsd": 1}[name]
    want_rows = 2 * (pair + extra) if name != "vsd" else None
    if want_rows is not None:
        assert d["prior_rows_per_step"] == want_rows
    else:  # VSD's estimator joins from the second step on (it has seen no render at the first)
        assert 2 * pair < d["prior_rows_per_step"] <= 2 * (pair + 1)
    if name == "vsd":
        assert d["vsd_estimator"] == ("renders" if kind == "world" else "lora")


def test_vsd_lora_estimator_starts_as_the_prior_and_learns(tiny_pixel):
    from splatgen.guidance import PixelGuidance
    from splatgen.guidance.losses import LoRAEstimator

    g = PixelGuidance(str(tiny_pixel), "cpu")
    g.prepare_text("a red mug")
    est = LoRAEstimator(g, rank=4, lr=1e-2, seed=0)
    cams = orbit_cameras([5.0, 20.0], [0.0, 120.0], 2.2, 45.0, 16)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    t = torch.tensor([300, 700])
    view = Conditioning.of(list(cams.directions), cams)
    torch.testing.assert_close(est.predict(x, t, cams), g.predict(x, t, view), atol=1e-5, rtol=1e-5)
    state = est.state_dict()
    x0 = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    for _ in range(3):
        est.update(x0, t, cams, gen)
    moved = est.predict(x, t, cams)
    assert float((moved - g.predict(x, t, view)).abs().max()) > 1e-4
    # The prior itself is untouched, and the estimator's state round-trips.
    fresh = LoRAEstimator(g, rank=4, lr=1e-2, seed=0)
    torch.testing.assert_close(fresh.predict(x, t, cams), g.predict(x, t, view), atol=1e-5, rtol=1e-5)
    fresh.load_state_dict(est.state_dict(), torch.device("cpu"))
    assert torch.equal(fresh.predict(x, t, cams), moved)
    assert set(state) == {"params", "opt"}


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_triton_and_pytorch_gradients_are_equal_for_every_loss(name, tiny_pixel):
    """Every loss goes through the one fused gradient: the Triton kernel (interpreted on the CPU) and the PyTorch
    reference give the same bits for each loss's terms, and the losses built on them the same gradient up to the
    reference's ``x0 - (x0 - g)`` rounding."""
    pytest.importorskip("triton")
    from splatgen.guidance import PixelGuidance

    g = PixelGuidance(str(tiny_pixel), "cpu")
    g.prepare_text("a red mug")
    loss = build_loss(_cfg(loss=name, perp_neg=name == "csd"), g)
    cams = orbit_cameras([5.0, 20.0], [30.0, 160.0], 2.2, 45.0, 16)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    t = torch.tensor([150, 640])
    noise = torch.randn(x0.shape, generator=gen)
    loss.after_backward(x0, t, cams, gen)  # VSD: an estimator that has seen renders
    terms = loss.terms(x0, t, cams, noise)
    w = torch.tensor([0.3, 0.9])
    from splatgen.sds import sds_gradient
    from splatgen_kernels.sds import sds_gradient_triton

    ref, ref_stats = sds_gradient(terms.eps_pair, terms.baseline, w, 7.5)
    fused, fused_stats = sds_gradient_triton(terms.eps_pair, terms.baseline, w, 7.5)
    assert torch.equal(ref, fused) and float(ref.abs().max()) > 0
    grads = {}
    for backend in ("torch", "triton"):
        x = x0.clone().requires_grad_(True)
        value, stats = sds_loss(backend, x, terms.eps_pair, terms.baseline, w, 7.5, 0.0)
        value.backward()
        grads[backend] = x.grad
    assert torch.equal(grads["triton"], fused)
    torch.testing.assert_close(grads["torch"], fused, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(fused.abs().max() + 1))


def test_vsd_run_resumes_bit_for_bit(tmp_path, tiny_pixel):
    """The LoRA, its optimiser and the loss's generator are in the checkpoint: 3 + 3 steps = 6 steps."""
    base = guidance_overrides("pixel", {"pixel": tiny_pixel}) + TINY_RUN + ["run.steps=6", "guidance.loss=vsd",
                                                                              "run.checkpoint_every=3"]
    whole = splatgen.generate("a red mug", out_dir=tmp_path / "whole", overrides=base)
    ck = tmp_path / "whole" / "checkpoints" / "step_000003.pt"
    assert ck.exists()
    from splatgen.fileio import load_checkpoint
    from splatgen.components import build_guidance
    from splatgen.trainer import Trainer

    cfg = whole.config
    payload = load_checkpoint(ck)
    assert payload["loss"]["estimator"] == "lora"
    trainer = Trainer(cfg, build_guidance(cfg, "cpu"))
    trainer.resume(payload)
    tr = trainer.train()
    for k, v in whole.rep.module.params.items():
        assert torch.equal(tr.rep.module.params[k].detach(), v.detach()), k
