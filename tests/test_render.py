"""CPU tests of the renderers: the PyTorch reference rasterizer, SH evaluation and the public helpers.

Expected values come from closed-form formulas (pinhole projection, Gaussian footprints, alpha
compositing, real spherical harmonics from associated Legendre polynomials), or from gsplat's own
pure-PyTorch projection where gsplat is installed; none is captured from this implementation.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from splatgen.cameras import Cameras, orbit_cameras
from splatgen.errors import ConfigError, DeviceError
from splatgen.gaussians import SH_C0, GaussianModel, rgb_to_sh0
from splatgen.render import make_background, render, resolve_backend
from splatgen.render import torch_backend as tb
from splatgen.render.sh import eval_sh, sh_basis, sh_to_rgb

ALPHA_MIN = 1.0 / 255.0


# ------------------------------------------------------------------------------------------ helpers
def intrinsics(fx: float, fy: float, cx: float, cy: float, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=dtype)


def identity_view(batch: int = 1, dtype=torch.float32) -> torch.Tensor:
    """Camera at the origin looking down +z (OpenCV axes): world = camera coordinates."""
    return torch.eye(4, dtype=dtype).expand(batch, 4, 4).clone()


def raster(
    means,
    scales,
    opacities,
    rgb,
    Ks,
    width,
    height,
    quats=None,
    background=(0.0, 0.0, 0.0),
    viewmats=None,
    **kw,
):
    """Render with per-Gaussian constant colours (SH degree 0) through the reference rasterizer."""
    means = torch.as_tensor(means, dtype=torch.float64)
    n = means.shape[0]
    scales = torch.as_tensor(scales, dtype=torch.float64).expand(n, 3)
    opacities = torch.as_tensor(opacities, dtype=torch.float64).expand(n)
    rgb = torch.as_tensor(rgb, dtype=torch.float64).expand(n, 3)
    if quats is None:
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).expand(n, 4)
    viewmats = identity_view(1, torch.float64) if viewmats is None else viewmats.double()
    bg = torch.as_tensor(background, dtype=torch.float64).reshape(-1, 3).expand(viewmats.shape[0], 3)
    return tb.rasterize(
        means, torch.as_tensor(quats, dtype=torch.float64), scales, opacities, rgb_to_sh0(rgb)[:, None, :],
        viewmats, Ks.double().expand(viewmats.shape[0], 3, 3), width, height, bg, 0, **kw,
    )


def cameras_from(viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int) -> Cameras:
    B = viewmats.shape[0]
    return Cameras(
        viewmats=viewmats, Ks=Ks.expand(B, 3, 3).clone(), width=width, height=height,
        elevation=torch.zeros(B), azimuth=torch.zeros(B), radius=torch.ones(B),
        fovy=torch.full((B,), 45.0), directions=["front"] * B,
    )


def model_from(means, scales, opacities, rgb, sh_degree: int = 0, dtype=torch.float32) -> GaussianModel:
    """Isotropic Gaussians with constant colours (higher SH bands zero)."""
    means = torch.as_tensor(means, dtype=dtype)
    n = means.shape[0]
    sh0 = rgb_to_sh0(torch.as_tensor(rgb, dtype=dtype).expand(n, 3))[:, None, :]
    op = torch.as_tensor(opacities, dtype=dtype).expand(n)
    return GaussianModel.from_tensors(
        sh_degree=sh_degree,
        means=means,
        scales=torch.log(torch.as_tensor(scales, dtype=dtype).expand(n, 3)),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype).expand(n, 4),
        opacities=torch.log(op / (1 - op)),
        sh0=sh0,
        shN=torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3, dtype=dtype),
    )


def random_scene(n: int, seed: int, sh_degree: int = 0, dtype=torch.float32):
    """Raw (pre-activation) parameters of n random anisotropic Gaussians in a ball of radius 0.5."""
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return dict(
        means=(torch.rand(n, 3, generator=g) - 0.5).to(dtype),
        log_scales=(math.log(0.08) + 0.4 * torch.randn(n, 3, generator=g)).to(dtype),
        quats=torch.randn(n, 4, generator=g).to(dtype),
        logit_opacities=(torch.randn(n, generator=g) * 0.5).to(dtype),
        sh0=(torch.randn(n, 1, 3, generator=g) * 0.5).to(dtype),
        shN=(torch.randn(n, k - 1, 3, generator=g) * 0.2).to(dtype),
    )


def activated(p):
    return (
        p["means"], p["quats"], torch.exp(p["log_scales"]), torch.sigmoid(p["logit_opacities"]),
        torch.cat([p["sh0"], p["shN"]], dim=1),
    )


# ------------------------------------------------------------------------------ projection / footprint
def test_single_gaussian_lands_on_projected_pixel_with_peak_alpha():
    W, H, f, cx, cy = 32, 24, 40.0, 16.0, 12.0
    # Pixel (col 22, row 8) has its centre at (22.5, 8.5): choose the mean so u = f x / z + cx hits it.
    z = 2.0
    x, y = (22.5 - cx) * z / f, (8.5 - cy) * z / f
    rgb, alpha, depth, means2d, radii = raster([[x, y, z]], 0.03, 0.6, [1.0, 0.0, 0.0], intrinsics(f, f, cx, cy), W, H)
    assert torch.allclose(means2d[0, 0], torch.tensor([22.5, 8.5], dtype=torch.float64), atol=1e-9)
    a = alpha[0, :, :, 0]
    row, col = divmod(int(torch.argmax(a)), W)
    assert (row, col) == (8, 22)
    # The pixel centre sits on the mean: exp(0) = 1, so alpha is exactly the opacity.
    assert a[8, 22].item() == pytest.approx(0.6, abs=1e-9)
    assert a[8, 21].item() == pytest.approx(a[8, 23].item(), rel=1e-9)  # symmetric footprint
    assert a[7, 22].item() == pytest.approx(a[9, 22].item(), rel=1e-9)
    assert radii[0, 0] > 0


@pytest.mark.parametrize("eps2d", [0.3, 0.0])
def test_footprint_sigma_is_f_s_over_z(eps2d):
    # fx != fy: the x and y footprints have different sigmas, catching swapped axes.
    W, H, fx, fy, s, z, op = 40, 40, 40.0, 60.0, 0.05, 2.0, 0.8
    # Principal point on the centre (20.5, 20.5) of pixel (20, 20) and the mean on the optical axis, so
    # the projection Jacobian is exactly diag(f / z) and the footprint sigma exactly f s / z.
    cx, cy = 20.5, 20.5
    mean = [[0.0, 0.0, z]]
    _, alpha, _, _, radii = raster(mean, s, op, [0.5, 0.5, 0.5], intrinsics(fx, fy, cx, cy), W, H, eps2d=eps2d)
    a = alpha[0, :, :, 0]
    var_x = (fx * s / z) ** 2 + eps2d
    var_y = (fy * s / z) ** 2 + eps2d
    for k in (1, 2):
        assert a[20, 20 + k].item() == pytest.approx(op * math.exp(-(k**2) / (2 * var_x)), rel=1e-6)
        assert a[20 + k, 20].item() == pytest.approx(op * math.exp(-(k**2) / (2 * var_y)), rel=1e-6)
        # diagonal: the exponents add for an axis-aligned footprint
        expected = op * math.exp(-(k**2) / (2 * var_x) - (k**2) / (2 * var_y))
        assert a[20 + k, 20 + k].item() == pytest.approx(expected, rel=1e-6)
    # gsplat 1.5 radius: ceil(extend * sigma) per axis with extend = min(3.33, sqrt(2 ln(255 op))).
    extend = min(3.33, math.sqrt(2 * math.log(255 * op)))
    assert radii[0, 0].item() == max(math.ceil(extend * math.sqrt(var_x)), math.ceil(extend * math.sqrt(var_y)))
    # Nothing is drawn outside the radius (alpha < 1/255 there).
    rows, cols = torch.nonzero(a > 0, as_tuple=True)
    r = radii[0, 0].item()
    assert (cols.double() + 0.5 - 20.5).abs().max() <= r and (rows.double() + 0.5 - 20.5).abs().max() <= r
    assert a[a > 0].min() >= ALPHA_MIN


@pytest.mark.parametrize("op", [0.02, 0.1, 0.5, 0.999])
def test_radius_is_gsplat_opacity_aware_bound(op):
    # gsplat 1.5: per-axis radius ceil(extend * sigma_axis), extend = min(3.33, sqrt(2 ln(255 op))), the
    # distance at which alpha falls to 1/255; the reported radius is the larger axis.
    W, H, fx, fy, s, z = 64, 64, 40.0, 80.0, 0.1, 2.0
    _, _, _, _, radii = raster([[0.0, 0.0, z]], s, op, [1.0, 1.0, 1.0], intrinsics(fx, fy, 32.5, 32.5), W, H)
    extend = min(3.33, math.sqrt(2 * math.log(255 * op)))
    sigma_y = math.sqrt((fy * s / z) ** 2 + 0.3)  # the larger axis
    assert radii[0, 0].item() == math.ceil(extend * sigma_y)


def test_matches_naive_dense_compositing():
    """Pairs, bounding boxes, sorting and the segmented scan against a per-Gaussian loop over all pixels."""
    p = random_scene(40, seed=8)
    p["logit_opacities"] = torch.linspace(-5.0, 4.0, 40)  # opacities 0.007 .. 0.98: all radius regimes
    means, quats, scales, opacities, sh = (t.double() for t in activated(p))
    cams = orbit_cameras([20.0, -10.0], [45.0, 190.0], 1.8, 50.0, width=20, height=16)
    viewmats, Ks = cams.viewmats.double(), cams.Ks.double()
    bg = torch.tensor([[0.1, 0.5, 0.9], [1.0, 1.0, 1.0]], dtype=torch.float64)
    rgb, alpha, depth, _, _ = tb.rasterize(means, quats, scales, opacities, sh, viewmats, Ks, 20, 16, bg, 0)

    m2d, conics, depths, radii = tb.project(means, quats, scales, opacities, viewmats, Ks, 20, 16)
    colors = sh_to_rgb(0, sh, means)  # degree 0: direction unused
    centres = [torch.arange(n, dtype=torch.float64) + 0.5 for n in (16, 20)]
    ys, xs = torch.meshgrid(*centres, indexing="ij")
    for b in range(2):
        T = torch.ones(16, 20, dtype=torch.float64)
        done = torch.zeros(16, 20, dtype=torch.bool)
        acc, acc_d = torch.zeros(16, 20, 3, dtype=torch.float64), torch.zeros(16, 20, dtype=torch.float64)
        drawn = 0
        for i in sorted(range(40), key=lambda i: float(depths[b, i])):
            if radii[b, i].max() == 0:
                continue
            dx, dy = m2d[b, i, 0] - xs, m2d[b, i, 1] - ys
            a_, b_, c_ = conics[b, i]
            sig = 0.5 * (a_ * dx * dx + c_ * dy * dy) + b_ * dx * dy
            al = torch.clamp(opacities[i] * torch.exp(-sig), max=0.999)
            use = (sig >= 0) & (al >= ALPHA_MIN) & ~done
            next_T = T * (1 - al)
            stop = use & (next_T <= 1e-4)
            done |= stop
            use &= ~stop
            w = torch.where(use, al * T, torch.zeros_like(T))
            acc += w[..., None] * colors[i]
            acc_d += w * depths[b, i]
            T = torch.where(use, next_T, T)
            drawn += int(use.sum())
        assert drawn > 100
        assert torch.allclose(rgb[b], acc + T[..., None] * bg[b], atol=1e-10)
        assert torch.allclose(alpha[b, ..., 0], 1 - T, atol=1e-10)
        assert torch.allclose(depth[b, ..., 0], acc_d / (1 - T).clamp_min(1e-10), atol=1e-9)


def test_quaternion_rotates_the_footprint():
    W, H, f, z, op = 40, 40, 40.0, 2.0, 0.9
    mean = [[0.0, 0.0, z]]  # on the optical axis, through the centre of pixel (20, 20)
    scales = [0.1, 0.02, 0.02]  # long along the local x axis
    var_long, var_short = (f * 0.1 / z) ** 2 + 0.3, (f * 0.02 / z) ** 2 + 0.3
    K = intrinsics(f, f, 20.5, 20.5)
    c = math.cos(math.pi / 4)
    for quat, (var_x, var_y) in [
        ([1.0, 0.0, 0.0, 0.0], (var_long, var_short)),
        ([c, 0.0, 0.0, c], (var_short, var_long)),  # 90 degrees about z: local x -> camera y
        ([3 * c, 0.0, 0.0, 3 * c], (var_short, var_long)),  # quaternions need not be normalised
    ]:
        _, alpha, _, _, _ = raster(mean, [scales], op, [1.0, 1.0, 1.0], K, W, H, quats=[quat])
        a = alpha[0, :, :, 0]
        assert a[20, 22].item() == pytest.approx(op * math.exp(-4 / (2 * var_x)), rel=1e-6)
        assert a[22, 20].item() == pytest.approx(op * math.exp(-4 / (2 * var_y)), rel=1e-6)


def test_projection_matches_gsplat_pytorch_reference():
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    p = random_scene(300, seed=3)
    means, quats, scales, _, _ = activated(p)
    means = means * 4.0  # spread out so some fall outside the frustum (exercises the Jacobian clamp)
    cams = orbit_cameras([10.0, -20.0], [30.0, 200.0], 2.0, 50.0, width=48, height=32)
    Ks = cams.Ks.clone()
    Ks[:, 0, 2] += 3.0  # off-centre principal point: asymmetric clamp limits
    covars, _ = impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    ref_radii, ref_m2d, ref_depth, ref_conics, _ = impl._fully_fused_projection(
        means, covars, cams.viewmats, Ks, 48, 32, eps2d=0.3, near_plane=0.01, far_plane=1e10
    )
    m2d, conics, depth, radii = tb.project(means, quats, scales, torch.full((300,), 0.99), cams.viewmats, Ks, 48, 32)
    ok = (ref_radii > 0).all(-1) & (radii > 0).all(-1)
    assert ok.sum() > 100
    assert torch.allclose(m2d[ok], ref_m2d[ok], atol=1e-3)
    assert torch.allclose(conics[ok], ref_conics[ok], rtol=1e-4, atol=1e-6)
    assert torch.allclose(depth, ref_depth, atol=1e-6)
    # gsplat's PyTorch reference uses a fixed 3.33-sigma box; the CUDA kernel (which we follow) shrinks it
    # for translucent Gaussians, so ours is never larger.
    assert (radii[ok] <= ref_radii[ok]).all()


# ------------------------------------------------------------------------------------- compositing
def _centre_mean(z: float, f: float, cx: float, cy: float):
    """A mean at depth z projecting exactly onto the centre of the pixel right/below (cx, cy)."""
    return [0.5 * z / f, 0.5 * z / f, z]


def test_front_gaussian_occludes_back_one_regardless_of_index_order():
    W, H, f = 16, 16, 20.0
    K = intrinsics(f, f, 8.0, 8.0)
    red, blue, bg = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]
    op = 0.9
    # Index order blue (far), red (near): sorting by depth, not by index, must put red first.
    means = [_centre_mean(3.0, f, 8, 8), _centre_mean(2.0, f, 8, 8)]
    rgb, alpha, _, _, _ = raster(means, 0.2, op, [blue, red], K, W, H, background=bg)
    px = rgb[0, 8, 8]
    expected = torch.tensor(red) * op + torch.tensor(blue) * (1 - op) * op + torch.tensor(bg) * (1 - op) ** 2
    assert torch.allclose(px, expected.double(), atol=1e-9)
    assert alpha[0, 8, 8, 0].item() == pytest.approx(1 - (1 - op) ** 2, abs=1e-9)
    # Swap the depths: blue now in front.
    means = [_centre_mean(2.0, f, 8, 8), _centre_mean(3.0, f, 8, 8)]
    rgb, _, _, _, _ = raster(means, 0.2, op, [blue, red], K, W, H, background=bg)
    assert rgb[0, 8, 8, 2] > 0.85 and rgb[0, 8, 8, 0] < 0.1


def test_single_gaussian_composites_over_background():
    W, H, f = 16, 16, 20.0
    colour, bg = torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0.9, 0.1, 0.3])
    K = intrinsics(f, f, 8, 8)
    rgb, alpha, _, _, _ = raster([_centre_mean(2.0, f, 8, 8)], 0.1, 0.7, colour, K, W, H, background=bg)
    a = alpha[0]
    expected = a * colour.double() + (1 - a) * bg.double()  # w = alpha for a single Gaussian
    assert torch.allclose(rgb[0], expected, atol=1e-9)
    assert (a > 0).sum() > 9 and (a == 0).sum() > 0  # both covered and uncovered pixels were checked


@pytest.mark.parametrize(
    "ops, green_expected",
    [
        # T after three 0.95 Gaussians is 1.25e-4; a fourth of 0.95 would bring it to 6.25e-6 <= 1e-4.
        ([0.95, 0.95, 0.95, 0.95], 0.0),
        # T after three 0.9 Gaussians is 1e-3; a fourth of 0.5 leaves 5e-4 > 1e-4, so it is drawn.
        ([0.9, 0.9, 0.9, 0.5], 1e-3 * 0.5),
    ],
)
def test_early_termination_like_gsplat(ops, green_expected):
    W, H, f = 8, 8, 10.0
    K = intrinsics(f, f, 4.0, 4.0)
    means = [_centre_mean(z, f, 4, 4) for z in (2.0, 3.0, 4.0, 5.0)]
    red, green = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    rgb, alpha, _, _, _ = raster(means, 0.5, ops, [red, red, red, green], K, W, H)
    px = rgb[0, 4, 4]
    assert px[1].item() == pytest.approx(green_expected, abs=1e-12)
    T3 = (1 - ops[0]) * (1 - ops[1]) * (1 - ops[2])
    assert px[0].item() == pytest.approx(1 - T3, abs=1e-9)
    T_final = T3 * (1 - ops[3]) if green_expected > 0 else T3
    assert alpha[0, 4, 4, 0].item() == pytest.approx(1 - T_final, abs=1e-9)


def test_expected_depth():
    W, H, f = 16, 16, 20.0
    K = intrinsics(f, f, 8.0, 8.0)
    # One Gaussian: expected depth is its camera z wherever it is drawn, whatever its opacity; 0 elsewhere.
    _, alpha, depth, _, _ = raster([_centre_mean(2.5, f, 8, 8)], 0.1, 0.4, [1.0, 1.0, 1.0], K, W, H)
    drawn = alpha > 0
    assert torch.allclose(depth[drawn], torch.full_like(depth[drawn], 2.5), atol=1e-9)
    assert (depth[~drawn] == 0).all() and (~drawn).any()
    # Two Gaussians on the same ray: the weighted mean of their depths at the centre pixel.
    op1, op2 = 0.6, 0.5
    _, _, depth, _, _ = raster(
        [_centre_mean(2.0, f, 8, 8), _centre_mean(4.0, f, 8, 8)], 0.3, [op1, op2], [1.0, 1.0, 1.0], K, W, H
    )
    w1, w2 = op1, (1 - op1) * op2
    assert depth[0, 8, 8, 0].item() == pytest.approx((w1 * 2.0 + w2 * 4.0) / (w1 + w2), rel=1e-9)


# -------------------------------------------------------------------------------------- backgrounds
@pytest.mark.parametrize("kind", ["white", "black", "color", "random"])
def test_background_kinds_and_empty_render(kind):
    g = torch.Generator().manual_seed(7)
    colour = (0.25, 0.5, 0.75)
    bg = make_background(kind, 3, colour, g, "cpu")
    assert bg.shape == (3, 3) and bg.dtype == torch.float32
    assert ((bg >= 0) & (bg <= 1)).all()
    expected = {
        "white": torch.ones(3, 3),
        "black": torch.zeros(3, 3),
        "color": torch.tensor(colour).expand(3, 3),
        "random": torch.rand(3, 3, generator=torch.Generator().manual_seed(7)),
    }[kind]
    assert torch.equal(bg, expected)
    # A scene whose only Gaussian is behind every camera renders the background exactly.
    model = model_from([[0.0, 0.0, -1.0]], 0.1, 0.9, [1.0, 0.0, 0.0])
    cams = cameras_from(identity_view(3), intrinsics(10.0, 10.0, 4.0, 4.0), 8, 8)
    out = render(model, cams, bg)
    assert torch.equal(out.rgb, bg[:, None, None, :].expand(3, 8, 8, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all() and (out.radii == 0).all()


def test_random_background_is_seeded():
    a = make_background("random", 4, (1, 1, 1), torch.Generator().manual_seed(1), "cpu")
    b = make_background("random", 4, (1, 1, 1), torch.Generator().manual_seed(1), "cpu")
    c = make_background("random", 4, (1, 1, 1), torch.Generator().manual_seed(2), "cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # one colour per view


def test_background_errors():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="white"):
        make_background("grey", 2, (1, 1, 1), g, "cpu")
    with pytest.raises(ConfigError, match="background_color"):
        make_background("color", 2, (1.0, 2.0, 0.0), g, "cpu")
    with pytest.raises(ConfigError, match="background_color"):
        make_background("color", 2, (1.0, 0.0), g, "cpu")
    with pytest.raises(ValueError, match="Generator"):
        make_background("random", 2, (1, 1, 1), None, "cpu")


# ---------------------------------------------------------------------------------------- gradients
def test_gradcheck_float64():
    p = random_scene(4, seed=11, sh_degree=1, dtype=torch.float64)
    p["means"] = p["means"] * 0.6
    # Two cameras, a non-square image (catches transposed axes), 3 m away so the Gaussians are a few
    # pixels wide. The scene is smooth: no pair sits within gradcheck's eps of the 1/255 alpha cut.
    cams = orbit_cameras([15.0, -5.0], [20.0, 140.0], 3.0, 40.0, width=9, height=7)
    viewmats, Ks = cams.viewmats.double(), cams.Ks.double()
    background = torch.tensor([[0.2, 0.4, 0.6], [0.9, 0.1, 0.5]], dtype=torch.float64)
    names = ["means", "log_scales", "quats", "logit_opacities", "sh0", "shN"]
    inputs = tuple(p[k].clone().requires_grad_(True) for k in names) + (background.requires_grad_(True),)

    def fn(means, log_scales, quats, logit_op, sh0, shN, bg):
        rgb, alpha, depth, _, _ = tb.rasterize(
            means, quats, torch.exp(log_scales), torch.sigmoid(logit_op), torch.cat([sh0, shN], 1),
            viewmats, Ks, 9, 7, bg, 1,
        )
        return torch.cat([rgb.flatten(), alpha.flatten(), depth.flatten()])

    out = fn(*inputs)
    assert (out[-2 * 9 * 7 :] > 0).sum() > 20  # the Gaussians cover a good part of both images
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=False)


def test_means2d_grad_matches_analytic_derivative():
    # loss = alpha at one pixel to the right of the mean; alpha = o exp(-|d|^2 / (2 var)), so
    # d loss / d mean2d = -loss * (mean2d - p) / var.
    W, H, f, s, z, op = 16, 16, 20.0, 0.1, 2.0, 0.5
    var = (f * s / z) ** 2 + 0.3
    # On the optical axis through pixel centre (8.5, 8.5): the footprint is isotropic with variance var.
    model = model_from([[0.0, 0.0, z]], s, op, [1.0, 1.0, 1.0], dtype=torch.float64)
    cams = cameras_from(identity_view(1, torch.float64), intrinsics(f, f, 8.5, 8.5, torch.float64), W, H)
    out = render(model, cams, torch.zeros(1, 3))
    loss = out.alpha[0, 8, 10, 0]  # two pixels right of the mean (8.5, 8.5)
    loss.backward()
    expected = -loss.item() * torch.tensor([8.5 - 10.5, 0.0]) / var
    assert torch.allclose(out.means2d.grad[0, 0].float(), expected.float(), rtol=1e-5, atol=1e-9)
    assert out.means2d.grad[0, 0, 0] > 0  # moving right brings the Gaussian closer to that pixel
    assert model.means.grad[0, 0] > 0  # and so does moving the world (= camera) x right


def test_means2d_grad_and_radii_of_culled_gaussians():
    W, H, f = 32, 32, 30.0
    means = [
        [0.0, 0.0, 2.0],  # visible, centre
        [0.4, -0.3, 3.0],  # visible, off-centre
        [0.0, 0.0, -1.0],  # behind the camera
        [30.0, 0.0, 2.0],  # far off-screen to the right
        [0.0, 0.0, 50.0],  # beyond far_plane = 20
        [0.1, 0.1, 2.0],  # opacity 0.003 < 1/255
    ]
    model = model_from(means, 0.05, torch.tensor([0.8, 0.8, 0.8, 0.8, 0.8, 0.003]), [0.3, 0.6, 0.9])
    cams = cameras_from(identity_view(), intrinsics(f, f, 16.0, 16.0), W, H)
    out = render(model, cams, make_background("white", 1, (1, 1, 1), None, "cpu"), far_plane=20.0)
    assert out.radii.dtype == torch.int32 and out.radii.shape == (1, 6)
    assert (out.radii[0, :2] > 0).all()
    assert (out.radii[0, 2:] == 0).all()
    out.rgb.sum().backward()
    g = out.means2d.grad
    assert g is not None and g.shape == (1, 6, 2)
    assert (g[0, :2].abs().sum(-1) > 0).all()
    assert (g[0, 2:] == 0).all()
    assert torch.isfinite(model.means.grad).all()
    assert (model.means.grad[2:] == 0).all()


def test_non_finite_gaussians_are_culled_with_zero_gradient():
    # A NaN mean and a scale whose covariance overflows float32 (runaway optimisation): both culled, their
    # gradients zero rather than NaN (as gsplat, which skips culled Gaussians in backward), and the
    # healthy Gaussian renders exactly as it does alone.
    K = intrinsics(20.0, 20.0, 8.0, 8.0)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3)
    bg = torch.ones(1, 3)

    def run(means, scales):
        means, scales = torch.tensor(means, requires_grad=True), torch.tensor(scales, requires_grad=True)
        sh = torch.zeros(means.shape[0], 4, 3, requires_grad=True)
        out = tb.rasterize(means, quats[: means.shape[0]], scales, torch.full((means.shape[0],), 0.5), sh,
                           identity_view(), K, 16, 16, bg, 1)
        out[0].sum().backward()
        return out, means.grad, scales.grad, sh.grad

    out, g_means, g_scales, g_sh = run([[0.0, 0.0, 2.0], [math.nan, 0.0, 2.0], [0.0, 0.0, 2.0]],
                                       [[0.1] * 3, [0.1] * 3, [1e20] * 3])
    alone, *_ = run([[0.0, 0.0, 2.0]], [[0.1] * 3])
    assert out[4][0].tolist()[1:] == [0, 0] and out[4][0, 0] > 0
    assert torch.equal(out[0], alone[0])
    for g in (g_means, g_scales, g_sh):
        assert torch.isfinite(g).all() and (g[1:] == 0).all()
    assert g_means[0].abs().sum() > 0


def test_chunked_rendering_equals_single_pass():
    p = random_scene(200, seed=5, sh_degree=2)
    cams = orbit_cameras([10.0, 30.0], [0.0, 100.0], 2.2, 45.0, width=32, height=24)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])

    def run(max_pairs):
        leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        means, quats, scales, opacities, sh = activated(leaves)
        out = tb.rasterize(means, quats, scales, opacities, sh, cams.viewmats, cams.Ks, 32, 24, bg, 2,
                           max_pairs_per_chunk=max_pairs)
        (out[0] * torch.linspace(0, 1, 3)).sum().backward(retain_graph=True)
        (out[2].sum() * 0.01).backward()
        return out, {k: v.grad for k, v in leaves.items()}, out[3].grad

    m2d, _, _, radii = tb.project(*activated(p)[:4], cams.viewmats, cams.Ks, 32, 24)
    vis = radii[0].amax(-1) > 0
    assert len(tb._row_bands(m2d[0, vis], radii[0, vis], 32, 24, 2000)) > 2  # really several bands
    ref, ref_grads, ref_m2d_grad = run(tb.DEFAULT_MAX_PAIRS)
    out, grads, m2d_grad = run(2000)
    for a, b in zip(ref, out):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    for k in ref_grads:
        assert torch.allclose(ref_grads[k], grads[k], atol=1e-5, rtol=1e-4), k
    assert torch.allclose(ref_m2d_grad, m2d_grad, atol=1e-6, rtol=1e-4)


def test_batched_cameras_equal_single_renders():
    g = torch.Generator().manual_seed(2)
    model = GaussianModel.init_ball(300, init_scale=0.05, init_opacity=0.5, sh_degree=1, generator=g)
    model.params["shN"].data.normal_(0.0, 0.3, generator=g)
    cams = orbit_cameras([0.0, 20.0, 40.0], [0.0, 120.0, 240.0], [2.0, 2.3, 2.6], 45.0, width=24, height=20)
    bg = make_background("random", 3, (1, 1, 1), g, "cpu")
    batched = render(model, cams, bg, sh_degree=1)
    for i in range(3):
        single = render(model, cams[i], bg[i : i + 1], sh_degree=1)
        for name in ("rgb", "alpha", "depth", "means2d"):
            assert torch.allclose(getattr(batched, name)[i], getattr(single, name)[0], atol=1e-6), name
        assert torch.equal(batched.radii[i], single.radii[0])


# ----------------------------------------------------------------------------------------------- SH
def _legendre(l: int, m: int, x: float) -> float:
    """Associated Legendre P_l^m(x), m >= 0, with the Condon-Shortley phase (standard recurrences)."""
    pmm = 1.0
    if m > 0:
        somx2 = math.sqrt((1 - x) * (1 + x))
        fact = 1.0
        for _ in range(m):
            pmm *= -fact * somx2
            fact += 2.0
    if l == m:
        return pmm
    pmmp1 = x * (2 * m + 1) * pmm
    if l == m + 1:
        return pmmp1
    for ll in range(m + 2, l + 1):
        pll = ((2 * ll - 1) * x * pmmp1 - (ll + m - 1) * pmm) / (ll - m)
        pmm, pmmp1 = pmmp1, pll
    return pmmp1


def _real_sh(l: int, m: int, d) -> float:
    """Real spherical harmonic Y_lm (Condon-Shortley phase) at a unit direction d, from its definition."""
    x, y, z = d
    theta, phi = math.acos(max(-1.0, min(1.0, z))), math.atan2(y, x)
    am = abs(m)
    K = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
    if m == 0:
        return K * _legendre(l, 0, math.cos(theta))
    trig = math.cos(am * phi) if m > 0 else math.sin(am * phi)
    return math.sqrt(2) * K * trig * _legendre(l, am, math.cos(theta))


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_basis_matches_legendre_definition(degree):
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(6, 3, generator=g, dtype=torch.float64)
    dirs = torch.cat([dirs, torch.eye(3, dtype=torch.float64), -torch.eye(3, dtype=torch.float64)])
    scaled = dirs * torch.rand(dirs.shape[0], 1, generator=g, dtype=torch.float64).add(0.5) * 3  # any length
    basis = sh_basis(degree, scaled)
    assert basis.shape == (dirs.shape[0], (degree + 1) ** 2)
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    for i, d in enumerate(unit.tolist()):
        for l in range(degree + 1):
            for m in range(-l, l + 1):
                assert basis[i, l * l + l + m].item() == pytest.approx(_real_sh(l, m, d), abs=1e-9), (l, m)


def test_eval_sh_matches_gsplat_reference():
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    g = torch.Generator().manual_seed(4)
    coeffs = torch.randn(50, 16, 3, generator=g)
    dirs = torch.randn(50, 3, generator=g)
    for degree in range(4):
        ref = impl._spherical_harmonics(degree, dirs, coeffs)
        assert torch.allclose(eval_sh(degree, coeffs, dirs), ref, atol=1e-5), degree


def test_sh_gradcheck_degree3():
    g = torch.Generator().manual_seed(9)
    sh = torch.randn(5, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    dirs = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, d: eval_sh(3, s, d), (sh, dirs))


def test_sh_to_rgb_offset_and_clamp():
    sh = torch.zeros(3, 1, 3)
    sh[0, 0] = 1.0 / SH_C0  # -> 1.5: not clamped above (as gsplat)
    sh[1, 0] = -2.0 / SH_C0  # -> -1.5: clamped to 0
    rgb = sh_to_rgb(0, sh, torch.randn(3, 3))
    assert torch.allclose(rgb[0], torch.full((3,), 1.5)) and (rgb[1] == 0).all()
    assert torch.allclose(rgb[2], torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="K >= 4"):
        eval_sh(1, sh, torch.randn(3, 3))


def test_view_dependent_colour_uses_direction_from_camera():
    # Only the (l=1, m=1) coefficient, basis -C1 * x, is set on the red channel. A camera at azimuth 0
    # sits on +X and looks along -X at the Gaussian (x = -1); one at azimuth 180 looks along +X.
    C1, coef, sh0 = 0.48860251190292, 0.5, 0.1
    model = model_from([[0.0, 0.0, 0.0]], 0.2, 0.9, [0.5, 0.5, 0.5], sh_degree=1)
    model.params["sh0"].data[:] = sh0
    model.params["shN"].data[0, 2, 0] = coef  # index 3 overall = 2 within shN
    cams = orbit_cameras([0.0, 0.0], [0.0, 180.0], 2.0, 40.0, width=16, height=16)
    bg = torch.tensor([[0.3, 0.3, 0.3], [0.3, 0.3, 0.3]])
    out = render(model, cams, bg, sh_degree=1)
    a = out.alpha[:, 8, 8]  # a pixel next to the projected centre (8, 8)
    colour = (out.rgb[:, 8, 8] - (1 - a) * bg) / a  # a single Gaussian: rgb = a c + (1 - a) bg
    base = 0.5 + SH_C0 * sh0
    assert colour[0, 0].item() == pytest.approx(base + C1 * coef, abs=1e-4)
    assert colour[1, 0].item() == pytest.approx(base - C1 * coef, abs=1e-4)
    assert colour[0, 1].item() == pytest.approx(base, abs=1e-4)  # green has no view dependence
    # With sh_degree=0 the view dependence is off.
    out0 = render(model, cams, bg, sh_degree=0)
    assert torch.allclose(out0.rgb[0], out0.rgb[1], atol=1e-6)


# ------------------------------------------------------------------------------ backend choice, errors
def test_resolve_backend():
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(DeviceError, match="gsplat needs CUDA; use render.backend=torch"):
        resolve_backend("gsplat", torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"\['auto', 'torch', 'gsplat'\]"):
        resolve_backend("cuda", "cpu")


def test_render_input_errors():
    model = model_from([[0.0, 0.0, 2.0]], 0.1, 0.5, [1.0, 1.0, 1.0], sh_degree=1)
    cams = cameras_from(identity_view(2), intrinsics(10.0, 10.0, 4.0, 4.0), 8, 8)
    with pytest.raises(ValueError, match=r"background must be \[B=2, 3\]"):
        render(model, cams, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="sh_degree"):
        render(model, cams, torch.zeros(2, 3), sh_degree=2)
    with pytest.raises(DeviceError):
        render(model, cams, torch.zeros(2, 3), backend="gsplat")
    with pytest.raises(ValueError, match="quats must have shape"):
        tb.rasterize(torch.zeros(3, 3), torch.zeros(2, 4), torch.ones(3, 3), torch.ones(3), torch.zeros(3, 1, 3),
                     identity_view(), intrinsics(10, 10, 4, 4), 8, 8, torch.zeros(1, 3), 0)


def test_cpu_cost_64px_5k_gaussians():
    """A 64x64 render of 5k Gaussians with backward is interactive on a CPU (about 0.1 s on an idle core).

    The deterministic part: the work is the (pixel, Gaussian) pairs inside the screen bounding boxes,
    a small fraction of the dense H * W * N. The wall-clock bound is loose because CI cores are shared;
    it only catches a blow-up (for instance a dense evaluation).
    """
    g = torch.Generator().manual_seed(0)
    model = GaussianModel.init_ball(5000, generator=g)
    cams = orbit_cameras([15.0], [30.0], 2.2, 45.0, width=64)
    bg = make_background("white", 1, (1, 1, 1), None, "cpu")
    render(model, cams, bg)  # warm-up (allocator, first-call dispatch)
    start = time.perf_counter()
    out = render(model, cams, bg)
    (out.rgb.mean() + out.depth.mean()).backward()
    elapsed = time.perf_counter() - start
    visible = out.radii[0] > 0
    assert visible.sum() > 4000
    xy_radii = torch.stack([out.radii[0, visible]] * 2, dim=-1)
    pix, _ = tb._pixel_pairs(out.means2d[0, visible].detach(), xy_radii, 64, 0, 64)
    assert pix.numel() < 0.05 * 64 * 64 * 5000  # dense would be 1.0; this scene needs ~0.016
    assert elapsed < 10.0, f"64x64 x 5k Gaussians forward+backward took {elapsed:.2f} s"


def test_one_home_for_the_gaussian_formulas():
    """The rotation of a quaternion, SH_C0 and the SH basis count are gsplat's layout (splatgen.gaussians): the
    renderer, densification and the mesh exporter use that one copy."""
    from splatgen import densify, gaussians
    from splatgen.export import mesh
    from splatgen.render import sh

    assert SH_C0 == 0.5 / math.sqrt(math.pi) and sh.SH_C0 == SH_C0
    assert sh.num_sh_bases is gaussians.num_sh_bases
    for module in (tb, densify, mesh):
        assert module.quat_to_rotmat is gaussians.quat_to_rotmat, module.__name__
    q = torch.tensor([[[2.0, 0.0, 0.0, 2.0]]])  # 90 degrees about z, any norm, any batch shape
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(gaussians.quat_to_rotmat(q), expected.expand(1, 1, 3, 3), atol=1e-6, rtol=0)
