"""The procedural world: grammar, ground-truth ray caster, surface samples and metrics (CPU, fast)."""

from __future__ import annotations

import math

import pytest
import torch

from splatgen.cameras import orbit_cameras
from splatgen.errors import PromptError
from splatgen.world import (
    COLOURS,
    FRONT_BACK_KINDS,
    KINDS,
    Primitive,
    WorldObject,
    is_world_prompt,
    make_object,
    object_sdf,
    parse_prompt,
    render_world,
    sample_surface,
)
from splatgen.world.grammar import PRIMITIVE_KINDS, TARGET_RADIUS, TO_X
from splatgen.world.metrics import (
    heldout_cameras,
    janus_score,
    opposite_cameras,
    psnr_foreground,
    silhouette_iou,
    silhouette_precision_recall,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many small tensor ops: one intra-op thread is as fast on a quiet machine and much
    faster on a busy one (no threads spinning for cores that other processes hold)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def single(prim: Primitive) -> WorldObject:
    return WorldObject("test", "red", (prim,), False, "a test", 0)


# ----------------------------------------------------------------------------------------- grammar
def test_grammar_has_enough_kinds_and_front_back_objects():
    assert len(KINDS) >= 12
    assert FRONT_BACK_KINDS <= set(KINDS)
    assert len(FRONT_BACK_KINDS) >= len(KINDS) / 2
    used = {p.kind for k in KINDS for s in range(3) for p in make_object(k, seed=s).primitives}
    assert used == set(PRIMITIVE_KINDS)


def test_captions_and_prompt_forms():
    assert make_object("mug", "red").caption == "a red mug"
    assert make_object("car", "orange").caption == "an orange car"
    ref = parse_prompt("a red mug")
    assert (ref.kind, ref.colour, ref.has_front_back) == ("mug", "red", True)
    for p in ("red mug", "A Red Mug", "  a red mug. ", "a red mug, front view", "a red mug, overhead view",
              "A RED MUG, back view"):
        assert parse_prompt(p) == ref, p
    assert parse_prompt("a gray mug").colour == "grey"
    assert parse_prompt("a mug").colour in COLOURS  # colour drawn from the prompt's seed
    assert parse_prompt("a mug") == parse_prompt("A mug")
    assert is_world_prompt("an orange teapot") and not is_world_prompt("a dragon")
    assert parse_prompt("a red mug", seed=5) == make_object("mug", "red", seed=5)


@pytest.mark.parametrize("prompt", ["a purple dragon", "a mug of coffee", "", "a red red mug", "mug red"])
def test_prompt_outside_the_world_lists_the_vocabulary(prompt):
    with pytest.raises(PromptError) as err:
        parse_prompt(prompt)
    msg = str(err.value)
    assert all(k in msg for k in KINDS) and all(c in msg for c in COLOURS)
    with pytest.raises(PromptError):
        make_object("dragon")
    with pytest.raises(PromptError):
        make_object("mug", "octarine")


def test_objects_are_deterministic_varied_centred_and_bounded():
    for kind in KINDS:
        a, b = make_object(kind, "blue", seed=3), make_object(kind, "blue", seed=3)
        assert a == b
        variants = {make_object(kind, "blue", seed=s).primitives for s in range(4)}
        assert len(variants) == 4, f"{kind}: seeds give identical objects"
        for s in range(3):
            obj = make_object(kind, seed=s)
            assert obj.bounding_radius() == pytest.approx(TARGET_RADIUS, rel=1e-3)
            assert obj.bounding_radius() <= 0.6
            lo, hi = obj.bounds()
            assert torch.allclose((lo + hi) / 2, torch.zeros(3, dtype=torch.float64), atol=1e-6)
            # the bounding radius is real: surface samples reach it but do not exceed it
            pts = sample_surface(obj, 2000, torch.Generator().manual_seed(0))
            r = pts.norm(dim=-1).max().item()
            assert 0.9 * TARGET_RADIUS < r <= TARGET_RADIUS + 1e-4, (kind, r)


# ----------------------------------------------------------------------------------------- ray caster
D, FOVY = 2.25, 45.0


def _focal(res: int) -> float:
    return 0.5 * res / math.tan(math.radians(FOVY) / 2)


def test_sphere_silhouette_and_depth_are_analytic():
    r, res = 0.5, 65  # odd: the centre pixel's ray is the optical axis
    obj = single(Primitive("sphere", (0.0, 0.0, 0.0), (r, r, r)))
    cams = orbit_cameras([0.0, 30.0, -10.0], [0.0, 120.0, -75.0], D, FOVY, res)
    out = render_world(obj, cams)
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    # a sphere centred on the optical axis projects to a disc of radius f tan(asin(r / D))
    area = math.pi * (_focal(res) * math.tan(math.asin(r / D))) ** 2
    for b in range(3):
        assert out["mask"][b].sum().item() == pytest.approx(area, rel=0.01)
        assert out["depth"][b, res // 2, res // 2, 0].item() == pytest.approx(D - r, abs=1e-4)
    assert torch.all(out["rgb"][out["mask"].expand_as(out["rgb"]) == 0] == 1.0)  # white background
    assert torch.all(out["depth"][out["mask"] == 0] == 0)
    # supersampling: coverage fractions, same area
    ss = render_world(obj, cams[:1], supersample=3)
    assert 0 < ss["mask"].min().item() + 1 and ((ss["mask"] > 0) & (ss["mask"] < 1)).any()
    assert ss["mask"].sum().item() == pytest.approx(area, rel=0.005)


def test_box_silhouette_depth_and_rotation():
    h, res = 0.3, 65
    f = _focal(res)
    box = single(Primitive("box", (0.0, 0.0, 0.0), (h, h, h)))
    # facing the front face squarely: a square of side 2 f h / (D - h); its edges fall between pixel centres,
    # so the area is measured with 8x8 supersampling (edge error <= 1/16 px)
    side = 2 * f * h / (D - h)
    ss = render_world(box, orbit_cameras([0.0], [0.0], D, FOVY, res), supersample=8)
    assert ss["mask"].sum().item() == pytest.approx(side * side, rel=0.01)
    out = render_world(box, orbit_cameras([0.0], [0.0], D, FOVY, res))
    assert out["depth"][0, res // 2, res // 2, 0].item() == pytest.approx(D - h, abs=1e-4)
    # turned 45 degrees about z, the nearest thing on the axis is a vertical edge
    turned = single(Primitive("box", (0.0, 0.0, 0.0), (h, h, h), rotation=(0.0, 0.0, 45.0)))
    out = render_world(turned, orbit_cameras([0.0], [0.0], D, FOVY, res))
    assert out["depth"][0, res // 2, res // 2, 0].item() == pytest.approx(D - h * math.sqrt(2), abs=1e-4)
    # off-centre primitive: its image moves to the camera's right (+Y seen from the front)
    shifted = single(Primitive("sphere", (0.0, 0.4, 0.0), (0.2, 0.2, 0.2)))
    m = render_world(shifted, orbit_cameras([0.0], [0.0], D, FOVY, res))["mask"][0, :, :, 0]
    cols = m.nonzero()[:, 1].float().mean().item()
    assert cols == pytest.approx(res / 2 + f * 0.4 / D, abs=0.5)


@pytest.mark.parametrize(
    "prim,depth",
    [
        (Primitive("cylinder", (0.0, 0.0, 0.0), (0.3, 0.4, 0.0)), D - 0.3),  # side
        (Primitive("cylinder", (0.0, 0.0, 0.0), (0.3, 0.4, 0.0), rotation=TO_X), D - 0.4),  # cap
        (Primitive("cone", (0.0, 0.0, 0.0), (0.3, 0.4, 0.1), rotation=TO_X), D - 0.4),  # top cap
        (Primitive("cone", (0.0, 0.0, 0.0), (0.3, 0.4, 0.1), rotation=(0.0, -90.0, 0.0)), D - 0.4),  # bottom cap
        (Primitive("cone", (0.0, 0.0, 0.0), (0.3, 0.4, 0.0)), D - 0.15),  # side, halfway up: r = 0.15
        (Primitive("capsule", (0.0, 0.0, 0.0), (0.2, 0.3, 0.0), rotation=TO_X), D - 0.5),
        (Primitive("torus", (0.0, 0.0, 0.0), (0.35, 0.1, 0.0)), D - 0.45),
        (Primitive("sphere", (0.0, 0.0, 0.0), (0.2, 0.4, 0.3), rotation=(0.0, 0.0, 90.0)), D - 0.4),  # ellipsoid
    ],
)
def test_depth_on_the_optical_axis(prim, depth):
    out = render_world(single(prim), orbit_cameras([0.0], [0.0], D, FOVY, 33))
    assert out["mask"][0, 16, 16, 0].item() == 1.0
    assert out["depth"][0, 16, 16, 0].item() == pytest.approx(depth, abs=2e-4)


def test_torus_hole_and_ring():
    R, r, res = 0.35, 0.1, 65
    obj = single(Primitive("torus", (0.0, 0.0, 0.0), (R, r, 0.0), rotation=TO_X))  # axis toward the camera
    out = render_world(obj, orbit_cameras([0.0], [0.0], D, FOVY, res))
    assert out["mask"][0, res // 2, res // 2, 0].item() == 0.0  # looking through the hole
    col = res // 2 + round(_focal(res) * R / (D - r))  # the ring's nearest circle, at depth D - r
    assert out["mask"][0, res // 2, col, 0].item() == 1.0
    assert out["depth"][0, res // 2, col, 0].item() == pytest.approx(D - r, abs=3e-3)


def test_shading_is_view_consistent_and_objects_batch():
    obj = single(Primitive("box", (0.0, 0.0, 0.0), (0.3, 0.3, 0.3), colour=(0.2, 0.6, 0.9)))
    out = render_world(obj, orbit_cameras([0.0, 0.0], [0.0, 30.0], D, FOVY, 33))
    # the centre pixels of both views see the same (+X) face: one colour whatever the camera
    assert torch.allclose(out["rgb"][0, 16, 16], out["rgb"][1, 16, 14], atol=1e-6)
    a, b = make_object("mug", "red"), make_object("tree", "green")
    cams = orbit_cameras([10.0, 20.0, 30.0], [0.0, 90.0, 200.0], D, FOVY, 24)
    both = render_world([a, b, a], cams, background=(0.0, 0.0, 0.0))
    for i, o in enumerate([a, b, a]):
        one = render_world(o, cams[i], background=(0.0, 0.0, 0.0))
        for key in ("rgb", "mask", "depth"):
            assert torch.allclose(both[key][i], one[key][0], atol=1e-5)


def test_front_and_back_differ_only_by_design():
    """The light has no front/back component, so the back view of an object that is symmetric under
    x -> -x is the mirror image of its front view; a front/back kind must differ from that mirror image."""
    cams = orbit_cameras([15.0, 15.0], [0.0, 180.0], D, FOVY, 32)
    for kind in sorted(KINDS):
        out = render_world(make_object(kind, "blue"), cams, supersample=2)
        front, mirrored_back = out["rgb"][0], out["rgb"][1].flip(1)
        region = ((out["mask"][0] > 0.5) | (out["mask"][1].flip(1) > 0.5))[..., 0]
        diff = (front - mirrored_back).abs().mean(-1)[region].mean().item()
        if kind in FRONT_BACK_KINDS:
            assert diff > 0.04, kind
        else:
            assert diff < 0.015, kind


def test_surface_samples_lie_on_the_surface():
    g = torch.Generator().manual_seed(1)
    for kind in KINDS:
        obj = make_object(kind, seed=1)
        pts = sample_surface(obj, 3000, g)
        assert pts.shape == (3000, 3)
        sdf = object_sdf(obj, pts.double())
        assert sdf.abs().max().item() < 2e-4, kind
    # uniform by area: a box's faces get samples in proportion to their areas
    box = single(Primitive("box", (0.0, 0.0, 0.0), (0.1, 0.2, 0.4)))
    pts = sample_surface(box, 20000, g)
    on_x = (pts[:, 0].abs() > 0.1 - 1e-5).float().mean().item()
    assert on_x == pytest.approx(0.2 * 0.4 / (0.1 * 0.2 + 0.2 * 0.4 + 0.1 * 0.4), abs=0.01)
    # interior points of overlapping parts are dropped
    balls = (Primitive("sphere", (0.0, 0.0, 0.0), (0.3,) * 3), Primitive("sphere", (0.2, 0.0, 0.0), (0.3,) * 3))
    two = WorldObject("t", "red", balls, False, "t", 0)
    pts = sample_surface(two, 4000, g)
    assert object_sdf(two, pts.double()).abs().max().item() < 1e-4


# ----------------------------------------------------------------------------------------- metrics
def test_iou_and_psnr_helpers():
    a = torch.zeros(2, 10, 10, 1)
    b = torch.zeros(2, 10, 10, 1)
    a[0, :, :5] = 1
    b[0, :, :5] = 1  # identical
    a[1, :, :6] = 1
    b[1, :, 3:] = 1  # overlap 3 columns of 10
    assert silhouette_iou(a, b).tolist() == pytest.approx([1.0, 0.3])
    precision, recall = silhouette_precision_recall(a, b)
    assert precision.tolist() == pytest.approx([1.0, 0.5]) and recall.tolist() == pytest.approx([1.0, 3 / 7])
    fat = torch.zeros(1, 10, 10, 1)
    fat[0, :, :8] = 1  # covers all of b[0]'s five columns and three more
    p, r = silhouette_precision_recall(fat, b[:1])
    assert (p.item(), r.item()) == pytest.approx((5 / 8, 1.0))
    empty = torch.zeros(1, 10, 10, 1)
    assert [x.item() for x in silhouette_precision_recall(empty, empty)] == [1.0, 1.0]
    assert [x.item() for x in silhouette_precision_recall(empty, b[:1])] == [0.0, 0.0]
    rgb = torch.rand(2, 10, 10, 3)
    assert psnr_foreground(rgb + 0.1 * b, rgb, b) == pytest.approx(20.0, abs=1e-3)
    assert psnr_foreground(rgb, rgb, b) == 100.0


def test_heldout_cameras_and_janus_on_constructed_cases():
    cams = heldout_cameras(16, 32)
    assert len(cams) == 16 and 0.0 in cams.azimuth.tolist() and 180.0 in cams.azimuth.abs().tolist()
    opp = opposite_cameras(cams)
    assert torch.allclose(torch.remainder(opp.azimuth - cams.azimuth, 360.0), torch.full((16,), 180.0))
    obj = make_object("snowman", "red")
    own = render_world(obj, cams, supersample=2)
    other = render_world(obj, opp, supersample=2)
    region = (own["mask"] > 0.5) | (other["mask"] > 0.5)
    assert janus_score(own["rgb"], own["rgb"], other["rgb"], region)[0] == 0.0
    assert janus_score(other["rgb"], own["rgb"], other["rgb"], region)[0] == 1.0
    # a "two-faced" render: the front view everywhere
    front = own["rgb"][:1].expand_as(own["rgb"])
    sel = (cams.azimuth.abs() >= 135).nonzero().squeeze(-1)  # back views
    score, flags = janus_score(front[sel], own["rgb"][sel], other["rgb"][sel], region[sel])
    assert score >= 0.5


def surface_gaussians(obj: WorldObject, n: int = 3000, std: float = 0.015):
    """Small opaque grey Gaussians on the true surface: a near-perfect reconstruction of the shape."""
    from splatgen.gaussians import GaussianModel

    pts = sample_surface(obj, n, torch.Generator().manual_seed(7))
    params = {
        "means": pts,
        "scales": torch.full((n, 3), math.log(std)),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        "opacities": torch.full((n,), math.log(0.95 / 0.05)),
        "sh0": torch.zeros(n, 1, 3),
        "shN": torch.zeros(n, 0, 3),
    }
    return GaussianModel(params, sh_degree=0)


def test_evaluate_gaussians_on_a_near_perfect_model():
    """The Gaussian renderer and the ray caster agree on cameras: Gaussians on the true surface give
    silhouettes centred on the true ones, the true depth and a small Chamfer distance.

    (Their silhouettes are ~1-2 px too wide: where a face is seen edge-on, hundreds of splats stack up on
    the same pixels and push alpha over 0.5 beyond the edge, so the IoU here is only moderate.)"""
    from splatgen.render import render
    from splatgen.world.metrics import evaluate_gaussians

    obj = make_object("house", "red", seed=1)
    model = surface_gaussians(obj)
    m = evaluate_gaussians(model, obj, n_views=8, resolution=32, n_surface=3000)
    assert m["iou"] > 0.6
    assert m["depth_abs_err"] < 0.06  # mostly silhouette pixels, where splat depth blends front and back
    assert m["chamfer"] < 0.02 and m["chamfer_points"] == 3000
    assert 5.0 < m["psnr_fg"] < 100.0  # grey Gaussians vs a shaded red house
    assert 0.0 <= m["janus"] <= 1.0 and m["janus_views"] == 6
    # an off-centre ball: both renderers put its silhouette at the same sub-pixel position and its surface
    # at the same depth (a half-pixel or axis convention mismatch would fail this)
    ball = single(Primitive("sphere", (0.1, 0.2, -0.1), (0.3, 0.3, 0.3)))
    cams = heldout_cameras(8, 48)
    with torch.no_grad():
        out = render(surface_gaussians(ball, n=4000, std=0.01), cams, torch.ones(8, 3))
    truth = render_world(ball, cams, supersample=4)
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    for b in range(8):
        a, g = out.alpha[b, ..., 0], truth["mask"][b, ..., 0]
        for grid in (xs, ys):
            assert (grid * a).sum() / a.sum() == pytest.approx(((grid * g).sum() / g.sum()).item(), abs=0.05)
    # depth where the ball faces the camera (elsewhere front-to-back compositing favours the nearer of the
    # overlapping splats on the slanted surface: a bias of up to a pixel footprint)
    d = truth["depth"][..., 0]
    dmin = torch.where(d > 0, d, torch.full_like(d, 9.0)).amin(dim=(1, 2), keepdim=True)
    cap = (truth["mask"][..., 0] == 1) & (d < dmin + 0.03)
    err = (out.depth[..., 0] - d)[cap].abs()
    assert err.median().item() < 0.012 and err.max().item() < 0.02
    assert evaluate_gaussians(model, make_object("tree", "green"), n_views=4, resolution=16)["janus"] is None


def test_evaluate_run_writes_metrics_json(tmp_path):
    import json

    from splatgen.config import Config, save_config
    from splatgen.export import save_ply
    from splatgen.world.metrics import evaluate_run

    obj = parse_prompt("a green tree")
    save_ply(surface_gaussians(obj, n=1500), tmp_path / "splats.ply")
    save_config(Config(prompt="a green tree"), tmp_path / "config.yaml")
    metrics = evaluate_run(tmp_path, n_views=4, resolution=24)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert metrics["prompt"] == "a green tree" and metrics["iou"] > 0.4  # splat edges at 24 px: see above
    assert set(metrics) >= {"iou", "psnr_fg", "depth_abs_err", "chamfer", "janus"}
    save_config(Config(prompt="a photo of a cat"), tmp_path / "config.yaml")
    with pytest.raises(PromptError, match="mug"):
        evaluate_run(tmp_path)


def test_evaluator_r_precision_ranks_the_true_caption(tmp_path):
    """The evaluator CLIP shipped with the bundled prior picks the true caption for ground-truth views of a
    world object and not for views of another object; ``evaluate_run`` reports it for a run."""
    import json

    from splatgen.config import Config, save_config
    from splatgen.export import save_ply
    from splatgen.resources import bundled_prior_path
    from splatgen.world.clip_eval import Evaluator, run_r_precision
    from splatgen.world.metrics import evaluate_run

    evaluator = Evaluator(bundled_prior_path() / "evaluator_clip")
    cams = heldout_cameras(8, evaluator.image_size)
    mug = render_world(parse_prompt("a red mug"), cams)["rgb"].permute(0, 3, 1, 2)
    chair = render_world(parse_prompt("a blue chair"), cams)["rgb"].permute(0, 3, 1, 2)
    assert run_r_precision(evaluator, mug, "a red mug", cams.directions) >= 0.75
    assert run_r_precision(evaluator, chair, "a red mug", cams.directions) <= 0.125
    assert run_r_precision(evaluator, mug, "a photo of a cat", cams.directions) is None

    run = tmp_path
    save_ply(surface_gaussians(parse_prompt("a green tree"), n=800), run / "splats.ply")
    save_config(Config(prompt="a green tree"), run / "config.yaml")
    metrics = evaluate_run(run, n_views=4, resolution=24)
    assert 0.0 <= metrics["r_precision"] <= 1.0
    assert json.loads((run / "metrics.json").read_text())["r_precision"] == metrics["r_precision"]
