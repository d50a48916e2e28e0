"""Camera-conditioned multi-view priors (splatgen.guidance.multiview): the camera vector against splatgen's own
camera matrices, cross-view attention against plain attention, the camera input starting as the text-to-image
model, grouped cameras and timesteps in the trainer, and a generation with every loss that allows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import splatgen
from splatgen.cameras import orbit_cameras, sample_orbit_cameras
from splatgen.errors import ConfigError, ModelLoadError
from splatgen.guidance.conditioning import KEY_INDEX, Conditioning, cfg_conditioning
from splatgen.guidance.multiview import (
    SPEC_FILE, CrossViewAttnProcessor, GatedCrossViewAttnProcessor, MultiViewSpec, add_camera_input, camera_vectors,
    install_cross_view_attention, share_within_groups, split_gates,
)
from splatgen.guidance.pixel import PixelGuidance
from splatgen.guidance.tiny import _tiny_unet, make_tiny_pixel

TINY_RUN = ["run.steps=4", "run.log_every=1", "run.preview_views=0", "run.evaluate=false", "run.progress=off",
            "model.num_points=120", "render.resolution=24", "camera.batch_size=4"]


@pytest.fixture(scope="module")
def mv_folder(tmp_path_factory):
    return make_tiny_pixel(tmp_path_factory.mktemp("tiny_mv"), num_views=4)


# ------------------------------------------------------------------------------------------------ the camera
def test_camera_vector_is_the_inverse_of_splatgens_view_matrix():
    cams = orbit_cameras([-10.0, 0.0, 30.0, 89.0, 45.0], [0.0, 90.0, -135.0, 20.0, 180.0], [2.0, 2.2, 2.5, 2.1, 1.0],
                         45.0, 16)
    m = camera_vectors(cams.elevation, cams.azimuth, cams.radius).view(-1, 4, 4).double()
    c2w = torch.linalg.inv(cams.viewmats.double())
    c2w[:, :3, 1:3] *= -1  # OpenCV's camera axes (right, down, forward) -> OpenGL's (right, up, backward)
    torch.testing.assert_close(m, c2w, atol=1e-5, rtol=0)
    # Azimuth 0 at elevation 0: the camera on +X, its right +Y, its up +Z (the convention MVDream is fed with).
    front = camera_vectors(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0])).view(4, 4)
    torch.testing.assert_close(front[:3, 0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(front[:3, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(front[:3, 3], torch.tensor([2.0, 0.0, 0.0]))
    unit = camera_vectors(cams.elevation, cams.azimuth, cams.radius, normalise_distance=True).view(-1, 4, 4)
    torch.testing.assert_close(unit[:, :3, 3].norm(dim=-1), torch.ones(5))
    straight_up = camera_vectors(torch.tensor([90.0]), torch.tensor([30.0]), torch.tensor([2.0])).view(4, 4)
    assert torch.isfinite(straight_up).all()
    torch.testing.assert_close(straight_up[:3, :3] @ straight_up[:3, :3].T, torch.eye(3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="needs every row's camera"):
        camera_vectors(torch.tensor([float("nan")]), torch.tensor([0.0]), torch.tensor([2.0]))


# ------------------------------------------------------------------------------------------------ the network
def _tiny_unet_and_two_groups():
    """A tiny random text-to-image UNet and a batch of two groups of 4 views (x, t, text embeddings)."""
    torch.manual_seed(0)
    unet = _tiny_unet(3, 16, 32).eval()
    return unet, torch.randn(8, 3, 16, 16), torch.full((8,), 500), torch.randn(8, 6, 32)


def test_cross_view_attention_joins_the_views_of_a_group_and_only_them():
    unet, x, t, emb = _tiny_unet_and_two_groups()
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=emb).sample
        assert install_cross_view_attention(unet, 1) > 0
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=emb).sample, plain)  # one view: the same model
        n = install_cross_view_attention(unet, 4)
        assert n == sum(1 for k in unet.attn_processors if k.endswith("attn1.processor"))
        assert all(isinstance(p, CrossViewAttnProcessor) == k.endswith("attn1.processor")
                   for k, p in unet.attn_processors.items())
        joint = unet(x, t, encoder_hidden_states=emb).sample
        x2 = x.clone()
        x2[1] += torch.randn_like(x2[1])  # change view 1 of group 0
        moved = unet(x2, t, encoder_hidden_states=emb).sample
    assert not torch.allclose(joint, plain)
    assert (moved[0] - joint[0]).abs().max() > 1e-4  # view 0 sees view 1
    torch.testing.assert_close(moved[4:], joint[4:])  # the other group does not
    with pytest.raises(ValueError, match="not a multiple of 4"):
        unet(x[:6], t[:6], encoder_hidden_states=emb[:6])


def test_gated_cross_view_attention_starts_single_view_learns_its_gate_and_exports_as_mixes():
    unet, x, t, emb = _tiny_unet_and_two_groups()
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=emb).sample
        install_cross_view_attention(unet, 4)
        joint = unet(x, t, encoder_hidden_states=emb).sample
    n = install_cross_view_attention(unet, 4, gated=True)
    gates = [p for k, p in unet.named_parameters() if k.endswith(".processor.gate")]
    assert len(gates) == n and all(float(g.detach()) == 0.0 for g in gates)
    out = unet(x, t, encoder_hidden_states=emb).sample
    torch.testing.assert_close(out, plain)  # gates at 0: the single-view model exactly
    out.square().mean().backward()
    assert all(g.grad is not None and g.grad.abs() > 0 for g in gates)  # ...and the gates can move off 0
    with torch.no_grad():
        for g in gates:
            g.fill_(20.0)  # tanh(20) = 1: joint attention
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=emb).sample, joint)
        for i, g in enumerate(gates):
            g.fill_(0.1 * (i + 1))
        gated_out = unet(x, t, encoder_hidden_states=emb).sample
    # Export: the weights without the gates, the mixes by layer; the fixed processors give the same function.
    weights, mix = split_gates(unet.state_dict())
    assert not any(k.endswith(".gate") for k in weights) and len(mix) == n
    assert set(mix) == {k for k in unet.attn_processors if k.endswith("attn1.processor")}
    served = _tiny_unet(3, 16, 32).eval()
    served.load_state_dict(weights)
    install_cross_view_attention(served, 4, mix=mix)
    assert all(isinstance(p, CrossViewAttnProcessor) and not isinstance(p, GatedCrossViewAttnProcessor)
               for k, p in served.attn_processors.items() if k.endswith("attn1.processor"))
    with torch.no_grad():
        torch.testing.assert_close(served(x, t, encoder_hidden_states=emb).sample, gated_out)
    spec = MultiViewSpec(num_views=4, cross_view_mix=mix)
    assert MultiViewSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(ModelLoadError, match="does not have"):
        install_cross_view_attention(served, 4, mix={"mid_block.nothing.attn1.processor": 0.5})
    with pytest.raises(ModelLoadError, match=r"must be a number in \[-1, 1\]"):
        MultiViewSpec(num_views=4, cross_view_mix={next(iter(mix)): 3.0})


MIXES = (0.47, -0.7, 0.98, 0.25, 0.0, 1.0)


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _two_pass(unet_or_procs, on: bool = True) -> None:
    """Every cross-view processor of a UNet (or a list of processors) on the reference path (or off it)."""
    procs = unet_or_procs.attn_processors.values() if hasattr(unet_or_procs, "attn_processors") else unet_or_procs
    for p in procs:
        if isinstance(p, (CrossViewAttnProcessor, GatedCrossViewAttnProcessor)):
            getattr(p, "fixed", p).two_pass = on


@pytest.fixture(params=["sdpa", "explicit", "explicit-rows", "explicit-pairs"])
def attention_form(request, monkeypatch):
    """The one-pass form's attention as chosen on this device (fp32 on the CPU: SDPA), or the explicit
    bmm + softmax form forced (the CPU's bf16 choice): whole, in chunks of a few query rows, or of a few (object,
    head) pairs."""
    from splatgen.guidance import multiview

    if request.param != "sdpa":
        monkeypatch.setattr(multiview, "_explicit_attention", lambda x: True)
    if request.param == "explicit-rows":  # 4 views x 7 tokens: 1 query row a chunk (per view alone: 5 of 7)
        monkeypatch.setattr(multiview, "_PROBS_CHUNK", 40)
    if request.param == "explicit-pairs":  # 4 views x 7 tokens: 2 (object, head) pairs of one view's 7 rows
        monkeypatch.setattr(multiview, "_PROBS_CHUNK", 400)
    return request.param


def test_one_pass_cross_view_attention_is_the_two_pass_blend(attention_form):
    """Projections, attention and output projection once (one score matrix in the explicit form) give the wrapped
    processor's joint and per-view outputs blended, ``alone + mix * (joint - alone)``, for mixes inside, outside
    and at the ends of [0, 1]; 4 views of an odd 7 tokens, 2 objects."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=24, heads=3, dim_head=8, out_bias=True).eval()
    h = torch.randn(8, 7, 24)
    ref = CrossViewAttnProcessor(4)
    ref.two_pass = True
    with torch.no_grad():
        ref.mix = 1.0
        joint = ref(attn, h)
        ref.mix = 0.0
        alone = ref(attn, h)
        assert _rel(joint, alone) > 0.1  # the two attentions differ: a wrong blend cannot pass
        for mix in MIXES:
            ref.mix = mix
            old = ref(attn, h)
            torch.testing.assert_close(old, alone + mix * (joint - alone), rtol=1e-5, atol=1e-6)
            new = CrossViewAttnProcessor(4, mix)(attn, h)
            assert _rel(new, old) < 1e-5, (mix, _rel(new, old))
            torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="not a multiple of 4"):
            CrossViewAttnProcessor(4, 0.47)(attn, h[:6])


def test_cross_view_layers_beyond_the_plain_case_take_the_two_pass_path(attention_form):
    """A residual connection, a rescaled output or a group norm: the one-pass form would drop them, so such a layer
    computes the reference path (AttnProcessor2_0's outputs, blended)."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(1)
    h = torch.randn(8, 5, 32)
    layers = [Attention(query_dim=32, heads=4, dim_head=8, residual_connection=True),
              Attention(query_dim=32, heads=4, dim_head=8, rescale_output_factor=2.0),
              Attention(query_dim=32, heads=4, dim_head=8, norm_num_groups=8)]
    with torch.no_grad():
        for attn in layers:
            attn.eval()
            old, new = CrossViewAttnProcessor(4, 0.47), CrossViewAttnProcessor(4, 0.47)
            old.two_pass = True
            torch.testing.assert_close(new(attn, h), old(attn, h), rtol=1e-5, atol=1e-6)


def test_one_pass_gated_cross_view_attention_gives_the_gate_its_two_pass_gradient(attention_form):
    """Training a gate (a 0-d tensor mix): the one-pass form's output and gradients (the gate's, the weights') are
    the reference path's."""
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(2)
    attn = Attention(query_dim=24, heads=3, dim_head=8, out_bias=True)
    h = torch.randn(8, 7, 24, requires_grad=True)
    target = torch.randn(8, 7, 24)
    gated = GatedCrossViewAttnProcessor(4)
    results = []
    for reference in (True, False):
        _two_pass([gated], reference)
        for gate in (0.0, 0.6, -1.1):
            with torch.no_grad():
                gated.gate.fill_(gate)
            params = [gated.gate, h, attn.to_q.weight, attn.to_v.weight, attn.to_out[0].weight]
            for t in params:
                t.grad = None
            out = gated(attn, h)
            ((out - target) ** 2).mean().backward()
            assert gated.gate.grad is not None and gated.gate.grad.abs() > 1e-6
            results.append((out.detach(), [t.grad.clone() for t in params]))
    for (old, old_grads), (new, new_grads) in zip(results[:3], results[3:]):
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)
        for g_new, g_old in zip(new_grads, old_grads):
            torch.testing.assert_close(g_new, g_old, rtol=1e-4, atol=1e-6)


def test_a_whole_multi_view_unet_is_unchanged_by_the_one_pass_form(attention_form):
    """A tiny random 4-view UNet (9x9 = 81 tokens a view in its attention layers) with a different mix in each
    self-attention layer: the one-pass output is the two-pass one's in fp32."""
    torch.manual_seed(3)
    unet = _tiny_unet(3, 18, 32).eval()
    x, t, emb = torch.randn(8, 3, 18, 18), torch.full((8,), 500), torch.randn(8, 6, 32)
    layers = [k for k in unet.attn_processors if k.endswith("attn1.processor")]
    mix = {k: MIXES[i % len(MIXES)] for i, k in enumerate(layers)}
    assert {0.47, -0.7} <= set(mix.values())
    install_cross_view_attention(unet, 4, mix=mix)
    with torch.no_grad():
        _two_pass(unet)
        old = unet(x, t, encoder_hidden_states=emb).sample
        _two_pass(unet, False)
        new = unet(x, t, encoder_hidden_states=emb).sample
        install_cross_view_attention(unet, 4)
        joint = unet(x, t, encoder_hidden_states=emb).sample
    assert _rel(joint, old) > 1e-3  # the mixes matter
    assert _rel(new, old) < 1e-5, _rel(new, old)


def test_the_cpus_bf16_one_pass_form_is_as_close_to_fp32_as_the_two_pass_one():
    """The served form on the CPU (bf16: explicit bmm + softmax, one score matrix) against the fp32 two-pass
    output: no further from it than the bf16 two-pass form, give or take bf16's rounding."""
    from splatgen.guidance import multiview

    torch.manual_seed(4)
    unet = _tiny_unet(3, 18, 32).eval()
    x, t, emb = torch.randn(8, 3, 18, 18), torch.full((8,), 500), torch.randn(8, 6, 32)
    layers = [k for k in unet.attn_processors if k.endswith("attn1.processor")]
    install_cross_view_attention(unet, 4, mix={k: MIXES[i % len(MIXES)] for i, k in enumerate(layers)})
    with torch.no_grad():
        _two_pass(unet)
        ref = unet(x, t, encoder_hidden_states=emb).sample
        unet.to(torch.bfloat16)
        assert multiview._explicit_attention(x.bfloat16())
        old = unet(x.bfloat16(), t, encoder_hidden_states=emb.bfloat16()).sample.float()
        _two_pass(unet, False)
        new = unet(x.bfloat16(), t, encoder_hidden_states=emb.bfloat16()).sample.float()
    assert _rel(new, ref) < 1.5 * _rel(old, ref) + 2e-3, (_rel(new, ref), _rel(old, ref))


def test_camera_input_starts_as_the_text_to_image_model():
    torch.manual_seed(1)
    unet = _tiny_unet(3, 16, 32).eval()
    cam_unet = add_camera_input(unet, 16, seed=3).eval()
    x, t, emb = torch.randn(4, 3, 16, 16), torch.full((4,), 300), torch.randn(4, 6, 32)
    cams = camera_vectors(torch.zeros(4), torch.tensor([0.0, 90.0, 180.0, 270.0]), torch.full((4,), 2.0))
    with torch.no_grad():
        torch.testing.assert_close(cam_unet(x, t, encoder_hidden_states=emb, class_labels=cams).sample,
                                   unet(x, t, encoder_hidden_states=emb).sample)
        torch.nn.init.normal_(cam_unet.class_embedding.linear_2.weight)  # once trained, the camera matters
        assert not torch.allclose(cam_unet(x, t, encoder_hidden_states=emb, class_labels=cams).sample,
                                  unet(x, t, encoder_hidden_states=emb).sample)


def test_model_folder_spec_and_its_errors(mv_folder, tmp_path):
    g = PixelGuidance(str(mv_folder), "cpu")
    assert g.joint_views == 4 and g.multiview == MultiViewSpec(num_views=4)
    assert g.describe()["multiview"]["num_views"] == 4
    g.set_text_embeddings(torch.randn(1, 6, 32), torch.randn(1, 6, 32))
    cams = orbit_cameras([5.0] * 4, [0.0, 90.0, 180.0, 270.0], 2.2, 45.0, 16)
    x = torch.randn(8, 3, 16, 16)
    out = g.predict(x, torch.tensor(400), cfg_conditioning(cams))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # The camera changes the prediction (the tiny model's camera MLP is random, not zero).
    turned = orbit_cameras([5.0] * 4, [45.0, 135.0, 225.0, 315.0], 2.2, 45.0, 16)
    assert not torch.allclose(g.predict(x, torch.tensor(400), cfg_conditioning(turned)), out)
    with pytest.raises(ValueError, match="needs every row's camera"):
        g.predict(x[:4], torch.tensor(400), Conditioning.of(["prompt"] * 4))
    # A single-view UNet with a multiview.json is refused in one line.
    bad = make_tiny_pixel(tmp_path / "bad")
    MultiViewSpec(num_views=4).write(bad)
    with pytest.raises(ModelLoadError, match="class_embed_type='projection'"):
        PixelGuidance(str(bad), "cpu")
    (bad / SPEC_FILE).write_text(json.dumps({"num_views": 4, "views": 2}))
    with pytest.raises(ModelLoadError, match=r"unknown keys \['views'\]"):
        PixelGuidance(str(bad), "cpu")
    (bad / SPEC_FILE).write_text("[4]")
    with pytest.raises(ModelLoadError, match="must hold a JSON object"):
        PixelGuidance(str(bad), "cpu")


# ------------------------------------------------------------------------------------------------ the trainer
def test_grouped_cameras_share_elevation_distance_and_fov_and_span_the_circle():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    single = sample_orbit_cameras(8, 16, g1)
    again = sample_orbit_cameras(8, 16, g2, group_size=1)
    torch.testing.assert_close(single.azimuth, again.azimuth)  # group_size 1 draws exactly as before
    cams = sample_orbit_cameras(8, 16, torch.Generator().manual_seed(5), group_size=4)
    for field in ("elevation", "radius", "fovy"):
        v = getattr(cams, field).view(2, 4)
        assert (v == v[:, :1]).all(), field
    assert not torch.equal(cams.elevation[0], cams.elevation[4])
    steps = torch.remainder(cams.azimuth.view(2, 4).diff(dim=1), 360.0)
    torch.testing.assert_close(steps, torch.full((2, 3), 90.0), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="not a multiple of the prior's 4 views"):
        sample_orbit_cameras(6, 16, torch.Generator(), group_size=4)
    torch.testing.assert_close(share_within_groups(torch.tensor([1, 2, 3, 4, 5, 6, 7, 8]), 4),
                               torch.tensor([1, 1, 1, 1, 5, 5, 5, 5]))


@pytest.mark.parametrize("loss", ["sds", "csd", "nfsd", "ism", "vsd"])
def test_every_loss_trains_with_a_multi_view_prior(mv_folder, loss, caplog):
    with caplog.at_level("INFO", logger="splatgen"):
        r = splatgen.generate("a red mug", overrides=["guidance.type=pixel", f"guidance.model={mv_folder}",
                                                      f"guidance.loss={loss}", *TINY_RUN])
    assert r.history and all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history)
    assert "no view words" in caplog.text


def test_a_gated_prior_with_view_words_serves_its_mixes_and_prompts_with_view_words(mv_folder, tmp_path):
    """The folder the gated recipe exports: multiview.json with per-layer mixes and view_prompts; the guidance
    installs the mixes (a different function from joint attention), the trainer prompts with view words."""
    import shutil

    from splatgen.guidance.multiview import uses_view_words

    gated = tmp_path / "gated"
    shutil.copytree(mv_folder, gated)
    layers = [k for k in PixelGuidance(str(mv_folder), "cpu").unet.attn_processors if k.endswith("attn1.processor")]
    MultiViewSpec(num_views=4, view_prompts=True, cross_view_mix={k: 0.25 for k in layers}).write(gated)
    joint, mixed = PixelGuidance(str(mv_folder), "cpu"), PixelGuidance(str(gated), "cpu")
    assert all(p.mix == 0.25 for k, p in mixed.unet.attn_processors.items() if k.endswith("attn1.processor"))
    assert uses_view_words(mixed, True) is True and uses_view_words(mixed, False) is False
    emb = torch.randn(1, 6, 32)
    cams = orbit_cameras([5.0] * 4, [0.0, 90.0, 180.0, 270.0], 2.2, 45.0, 16)
    x = torch.randn(8, 3, 16, 16)
    for g in (joint, mixed):
        g.set_text_embeddings(emb, emb)
    assert not torch.allclose(joint.predict(x, torch.tensor(400), cfg_conditioning(cams)),
                              mixed.predict(x, torch.tensor(400), cfg_conditioning(cams)))
    r = splatgen.generate("a red mug", overrides=["guidance.type=pixel", f"guidance.model={gated}", *TINY_RUN])
    assert r.history and all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history)


def test_batches_and_single_runs_give_a_multi_view_prior_the_same_prompt_table(mv_folder, tmp_path, monkeypatch):
    """The batch runner prepares the prompt itself: it must leave out the view words as the trainer does."""
    from splatgen.batch import generate_many
    from splatgen.guidance.multiview import uses_view_words

    g = PixelGuidance(str(mv_folder), "cpu")
    assert uses_view_words(g, True) is False and uses_view_words(g, False) is False
    assert uses_view_words(object(), True) is True  # a guidance without a spec: the config decides
    g.keep_text_encoder = True
    g.prepare_text("a red mug", "", uses_view_words(g, True))
    table = g.text_table()
    for k in ("front", "side", "back", "overhead"):  # every direction is the plain prompt
        assert torch.equal(table[KEY_INDEX[k]], table[KEY_INDEX["prompt"]])
    seen = []
    real = PixelGuidance.prepare_text

    def spy(self, prompt, negative_prompt="", view_dependent=True):
        seen.append(view_dependent)
        return real(self, prompt, negative_prompt, view_dependent)

    monkeypatch.setattr(PixelGuidance, "prepare_text", spy)
    res = generate_many(["a red mug", "a blue chair"], tmp_path / "b", config="default",
                        overrides=["guidance.type=pixel", f"guidance.model={mv_folder}", *TINY_RUN])
    assert res["done"] == 2 and res.get("failed", 0) == 0
    assert seen == [False, False]


def test_multi_view_prior_refuses_what_it_cannot_do(mv_folder):
    common = ["guidance.type=pixel", f"guidance.model={mv_folder}", *TINY_RUN]
    with pytest.raises(ConfigError, match="camera.batch_size=6 must be a multiple of the prior's 4 views"):
        splatgen.generate("a red mug", overrides=[*common, "camera.batch_size=6"])
    with pytest.raises(ConfigError, match="perp_neg=true pushes views apart by their view words"):
        splatgen.generate("a red mug", overrides=[*common, "guidance.perp_neg=true"])


def test_the_shipped_prior_is_a_gated_4_view_prior_and_import_takes_only_a_single_view_base(tmp_path):
    """The package's prior denoises 4 views with view words and learnt gates, its card says so and its measured
    text-to-3D numbers; the prior trainer's import, which starts a fine-tune from a single-view base, refuses it in
    one line that says where the base is."""
    from prior_training.train import SINGLE_VIEW_BASE_COMMIT, import_prior
    from splatgen.errors import SplatgenError
    from splatgen.resources import bundled_prior_path

    folder = bundled_prior_path()
    spec = MultiViewSpec.read(folder)
    assert spec is not None and spec.num_views == 4 and spec.view_prompts and len(spec.cross_view_mix) > 0
    card = json.loads((folder / "prior_card.json").read_text())
    assert card["multiview"]["spec"]["cross_view_mix"] == spec.cross_view_mix
    assert "gate" in card["multiview"]["recipe"] and "with each view's view word" in card["multiview"]["recipe"]
    rows = card["multiview"]["text_to_3d"]["rows"]
    assert "this prior, 250 steps" in rows
    from splatgen.api import resolve_config

    # the card names the default the package runs: its steps and its guidance scale, in one row marked the default
    cfg = resolve_config()
    defaults = [name for name in rows if name.endswith("(the default)")]
    assert defaults == [f"this prior, {cfg.run.steps} steps, 5 -> 3.5 (the default)"]
    line = card["multiview"]["text_to_3d"]["guidance_scale"]
    assert f"the default is {cfg.run.steps} steps at guidance scale {cfg.guidance.guidance_scale:g} " in line
    assert card["multiview"]["text_to_3d"]["steps"].startswith(f"{cfg.run.steps} steps since")
    milestones = ", ".join(f"[{f:g}, {s:g}]" for f, s in cfg.guidance.guidance_scale_milestones)
    assert f"guidance.guidance_scale_milestones [{milestones}]" in line
    with pytest.raises(SplatgenError, match=f"is a multi-view prior.*single_view_base.sh.*{SINGLE_VIEW_BASE_COMMIT}"):
        import_prior(folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "prior" / "single_view_base.sh"
    assert f"\nCOMMIT={SINGLE_VIEW_BASE_COMMIT}\n" in script.read_text()  # the script writes the base the message names


def test_a_batch_the_shipped_prior_cannot_take_is_refused_before_any_weights_load(monkeypatch):
    """check_input reads the model folder's multiview.json: a batch of views that is not whole groups of 4 is
    refused in one line naming the values that work, before the guidance loads; the bundled presets fit."""
    from splatgen import components
    from splatgen.api import check_input

    def no_loading(*a, **k):
        raise AssertionError("the guidance was built")

    monkeypatch.setattr(components, "build_guidance", no_loading)
    for batch in (1, 2, 6):
        with pytest.raises(ConfigError, match=rf"camera.batch_size={batch} must be a multiple of the prior's 4 views"
                                              r".*use camera.batch_size=4 or 8$"):
            check_input("a red mug", overrides=[f"camera.batch_size={batch}"])
    for preset in ("default", "fast"):
        cfg, _ = check_input("a red mug", preset)
        assert cfg.camera.batch_size % 4 == 0
    with pytest.raises(ConfigError, match="camera.batch_size=1 must be a multiple"):
        check_input("a red mug", ["default", "nerf"])
    assert check_input("a red mug", ["default", "nerf"], ["camera.batch_size=4"])[0].model.type == "nerf"
    assert check_input("a red mug", "world", ["camera.batch_size=1"])[0].camera.batch_size == 1  # single-view guidance
    from splatgen.batch import plan_items  # a batch refuses it before its first prompt, naming the line

    with pytest.raises(ConfigError, match=r"^prompts:2: camera.batch_size=2 must be a multiple of the prior's 4 views"):
        plan_items(["a red mug", {"prompt": "a blue chair", "overrides": ["camera.batch_size=2"]}])


def test_cross_view_attention_benchmark_compares_the_two_forms_at_smoke_size(tmp_path):
    """benchmarks/perf/cross_view_attention.py (GPU numbers come from the device) at smoke size on the CPU: the
    one-pass SDPA form equals the two-pass reference within rounding and gives the gate the same gradient."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks" / "perf"))
    import cross_view_attention

    result = cross_view_attention.main(["--small", "--device", "cpu", "--out", str(tmp_path / "cva.json")])
    assert len(result["rows"]) == 2 and (tmp_path / "cva.json").exists()
    for row in result["rows"]:
        assert row["max_rel_err"] < 1e-5 and row["ms_one_pass"] > 0 and row["ms_two_pass"] > 0
        assert row["gate_grad_one_pass"] == pytest.approx(row["gate_grad_two_pass"], rel=1e-4)
        assert row["gate_grad_two_pass"] != 0.0
