"""The pure-PyTorch NeRF baseline (splatgen.nerf): encoding, field, occupancy grid, renderer, model, export."""

import dataclasses
import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from splatgen.cameras import orbit_cameras
from splatgen.config import NerfConfig
from splatgen.export import load_ply, save_ply
from splatgen.gaussians import sh0_to_rgb
from splatgen.nerf import HashGridEncoding, NeRFField, NeRFModel, OccupancyGrid, nerf_to_gaussian_params, render_nerf
from splatgen.nerf.encoding import PRIMES
from splatgen.nerf.render import camera_rays, composite_weights, ray_aabb

torch.set_num_threads(1)

SMALL = dict(num_levels=4, log2_hashmap_size=12, desired_resolution=64, grid_resolution=16, num_steps=16,
             upsample_steps=8, export_resolution=16)


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return NeRFModel.from_config(NerfConfig(**{**SMALL, **kw}))


def cams4(size=16):
    return orbit_cameras([0.0, 30.0, -20.0, 60.0], [0.0, 90.0, 200.0, 300.0], 2.5, 45.0, size)


# ---------------------------------------------------------------- stubs
class ConstField(torch.nn.Module):
    """Constant density inside a region (default: everywhere), constant albedo; counts evaluated points."""

    def __init__(self, sigma=1.0, albedo=(0.2, 0.4, 0.6), bound=1.0, region=None, normal=None):
        super().__init__()
        self.normal_fn = normal
        self.bound = bound
        self.sigma = sigma
        self.albedo = torch.nn.Parameter(torch.tensor(albedo))
        self.region = region
        self.seen = []

    def density(self, x):
        self.seen.append(x.detach().clone())
        s = torch.full_like(x[:, 0], self.sigma)
        return s if self.region is None else torch.where(self.region(x), s, torch.zeros_like(s))

    def forward(self, x):
        return self.density(x), self.albedo.expand(x.shape[0], 3)

    def normal(self, x):
        return torch.nn.functional.normalize(x, dim=-1) if self.normal_fn is None else self.normal_fn(x)


# ---------------------------------------------------------------- encoding
def reference_encoding(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """Per point and level with Python integers: uint32 hash / dense index, explicit trilinear weights."""
    T = 1 << enc.log2_hashmap_size
    table = enc.embeddings.detach().double()
    out = torch.zeros(x.shape[0], enc.num_levels, enc.level_dim, dtype=torch.float64)
    for i, p in enumerate(((x.double() + enc.bound) / (2 * enc.bound)).clamp(0, 1).tolist()):
        for lvl, res in enumerate(enc.resolutions):
            pos = [c * res for c in p]
            g = [min(int(math.floor(c)), res - 1) for c in pos]
            t = [c - gi for c, gi in zip(pos, g)]
            if enc.interpolation == "smoothstep":
                t = [v * v * (3 - 2 * v) for v in t]
            for corner in range(8):
                c = [g[d] + ((corner >> d) & 1) for d in range(3)]
                w = 1.0
                for d in range(3):
                    w *= t[d] if (corner >> d) & 1 else 1 - t[d]
                if (res + 1) ** 3 <= T:
                    row = c[0] + c[1] * (res + 1) + c[2] * (res + 1) ** 2
                else:
                    h = ((c[0] * PRIMES[0]) ^ (c[1] * PRIMES[1]) ^ (c[2] * PRIMES[2])) & 0xFFFFFFFF
                    row = h % T
                out[i, lvl] += w * table[enc.level_offsets[lvl] + row]
    return out.reshape(x.shape[0], -1)


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_hash_encoding_matches_bruteforce_reference(interpolation):
    torch.manual_seed(0)
    enc = HashGridEncoding(bound=1.5, num_levels=4, level_dim=2, base_resolution=8, log2_hashmap_size=12,
                           desired_resolution=48, interpolation=interpolation)
    assert enc.dense == [True, True, False, False]  # res 8, 14 dense; 26, 48 hashed
    enc.embeddings.data.normal_()
    x = torch.rand(40, 3) * 3.0 - 1.5
    x[0] = torch.tensor([1.5, -1.5, 1.5])  # box corners / faces
    x[1] = torch.tensor([0.0, 1.5, -0.3])
    got = enc(x).double()
    torch.testing.assert_close(got, reference_encoding(enc, x), rtol=1e-4, atol=1e-4)
    # the autograd path (input requiring grad) computes the same values
    torch.testing.assert_close(enc(x.clone().requires_grad_(True)), got.float())


def test_level_resolutions_and_dense_levels_are_collision_free():
    enc = HashGridEncoding(bound=1.0, num_levels=4, level_dim=2, base_resolution=16, log2_hashmap_size=14,
                           desired_resolution=64, interpolation="linear")
    assert enc.resolutions == [16, 25, 40, 64]
    assert enc.dense == [True, False, False, False]  # 17^3 <= 2^14 < 26^3
    res = enc.resolutions[0]
    # Label every row of the dense level with its number; querying every vertex must return distinct rows.
    with torch.no_grad():
        enc.embeddings.zero_()
        n0 = enc.level_sizes[0]
        enc.embeddings[:n0, 0] = torch.arange(n0, dtype=torch.float32)
    v = torch.stack(torch.meshgrid(*[torch.arange(res + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    x = v.float() / res * 2.0 - 1.0
    rows = enc(x)[:, 0].round().long()
    assert rows.unique().numel() == (res + 1) ** 3
    assert int(rows.max()) < n0
    # hashed levels do collide for a fine grid (sanity check that the table really is smaller)
    assert enc.level_sizes[3] == 1 << 14 < 65**3


def test_gradients_reach_the_table_and_match_autograd():
    torch.manual_seed(1)
    enc = HashGridEncoding(bound=1.0, num_levels=3, level_dim=2, base_resolution=4, log2_hashmap_size=10,
                           desired_resolution=32, interpolation="smoothstep", chunk=64)  # several chunks
    enc.embeddings.data.normal_()
    x = torch.rand(300, 3) * 2 - 1
    g = torch.randn(300, enc.output_dim)
    (enc(x) * g).sum().backward()  # custom function (recomputing backward)
    fast = enc.embeddings.grad.clone()
    enc.embeddings.grad = None
    (enc(x.clone().requires_grad_(True)) * g).sum().backward()  # plain autograd
    assert fast.abs().sum() > 0
    torch.testing.assert_close(fast, enc.embeddings.grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- rendering
def test_camera_rays_match_the_world_raycaster_convention():
    from splatgen.world.raycast import _camera_rays

    cams = cams4(8)
    o, d, zf = camera_rays(cams)
    o2, d2, zf2 = _camera_rays(cams, 1, torch.float32)
    torch.testing.assert_close(o, o2)
    torch.testing.assert_close(d, d2)
    torch.testing.assert_close(zf, zf2)


def test_ray_aabb():
    o = torch.tensor([[3.0, 0, 0], [3.0, 0, 0], [0.0, 0, 0]])
    d = torch.tensor([[-1.0, 0, 0], [0.0, 1, 0], [1.0, 0, 0]])
    near, far, hit = ray_aabb(o, d, 1.0)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(near[[0, 2]], torch.tensor([2.0, 0.01]))
    torch.testing.assert_close(far[[0, 2]], torch.tensor([4.0, 1.0]))


def test_compositing_matches_hand_computation():
    sigma = torch.tensor([[1.0, 2.0, 3.0]])
    delta = torch.tensor([[0.5, 0.25, 1.0]])
    a = [1 - math.exp(-0.5), 1 - math.exp(-0.5), 1 - math.exp(-3.0)]
    w = [a[0], (1 - a[0]) * a[1], (1 - a[0]) * (1 - a[1]) * a[2]]
    torch.testing.assert_close(composite_weights(sigma, delta), torch.tensor([w]))


def test_render_constant_medium_is_analytic():
    """A homogeneous box: alpha = 1 - exp(-sigma * chord), rgb = alpha * albedo + (1 - alpha) * bg."""
    f = ConstField(sigma=0.7)
    cams = orbit_cameras([0.0], [0.0], 3.0, 30.0, 9)
    bg = torch.tensor([[1.0, 0.0, 0.5]])
    out = render_nerf(f, None, cams, bg, num_steps=8, upsample_steps=0)
    o, d, _ = camera_rays(cams)
    near, far, hit = ray_aabb(o.reshape(-1, 3), d.reshape(-1, 3), 1.0)
    chord = torch.where(hit, far - near, torch.zeros_like(far)).reshape(1, 9, 9, 1)
    alpha = 1 - torch.exp(-0.7 * chord)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-5, rtol=1e-5)
    expected = alpha * f.albedo.detach() + (1 - alpha) * bg[0]
    torch.testing.assert_close(out.rgb, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(out.alpha[0, 4, 4, 0], torch.tensor(1 - math.exp(-1.4)), atol=1e-5)


def test_depth_of_a_thin_slab():
    """A dense slab at x in [-0.04, 0.04] seen from (2, 0, 0): camera z ~ 1.96 on every pixel."""
    f = ConstField(sigma=500.0, region=lambda x: x[:, 0].abs() < 0.04)
    cams = orbit_cameras([0.0], [0.0], 2.0, 40.0, 12)
    out = render_nerf(f, None, cams, torch.ones(1, 3), num_steps=64, upsample_steps=32)
    a = out.alpha[0, ..., 0]
    assert bool((a > 0.99).all())
    torch.testing.assert_close(out.depth[0, ..., 0], torch.full_like(a, 1.965), atol=0.015, rtol=0)
    # camera z, not the distance along the ray: the corner pixel's ray is longer than 2 but its z is not
    assert abs(float(out.depth[0, 0, 0, 0]) - float(out.depth[0, 6, 6, 0])) < 0.02


def test_orientation_loss_penalises_normals_facing_away():
    """Normals (sign(x), 0, 0); seen from +x, the back half's normals face away from the camera."""
    cams = orbit_cameras([0.0], [0.0], 3.0, 20.0, 6)
    light = torch.tensor([[1.0, 0.0, 0.0]])
    kw = dict(num_steps=32, upsample_steps=16, shading="lambertian", light_dirs=light, ambient=0.2)

    def normal(x):
        return torch.nn.functional.pad(torch.sign(x[:, :1]), (0, 2))

    with torch.no_grad():
        front = render_nerf(ConstField(50.0, region=lambda x: x[:, 0] > 0, normal=normal), None, cams,
                            torch.ones(1, 3), **kw)
        back = render_nerf(ConstField(50.0, region=lambda x: x[:, 0] < 0, normal=normal), None, cams,
                           torch.ones(1, 3), **kw)
    assert float(front.losses["orient"]) < 1e-3
    assert float(back.losses["orient"]) > 0.5 * float(back.losses["opacity"]) > 0.3
    # and the front half is lit (n.l > 0) while the back half only gets the ambient term
    assert float(front.rgb[0, 3, 3, 0]) > 0.15 > float(back.rgb[0, 3, 3, 0] - (1 - back.alpha[0, 3, 3, 0]))


def test_untrained_blob_is_opaque_in_the_middle_only():
    m = small_model()
    m.update_occupancy(0)
    assert 0 < m.num_occupied() < 16**3 // 4
    cams = orbit_cameras([15.0], [30.0], 2.5, 45.0, 16)
    with torch.no_grad():
        out = m.render(cams, torch.zeros(1, 3))
    assert float(out.alpha[0, 8, 8, 0]) > 0.9
    assert float(out.alpha[0, 0, 0, 0]) < 0.05
    assert 1.8 < float(out.depth[0, 8, 8, 0]) < 2.5


def test_all_occupied_grid_equals_no_grid_and_empty_cells_are_never_evaluated():
    m = small_model()
    cams = cams4(12)
    bg = torch.rand(4, 3)
    with torch.no_grad():
        a = m.render(cams, bg, use_grid=False)
        b = m.render(cams, bg)  # fresh grid: every cell occupied
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.depth, b.depth)
    assert b.stats["samples_evaluated"] == b.stats["samples"]

    grid = OccupancyGrid(1.0, 8)
    centers = grid.cell_centers(torch.arange(8**3))
    grid.bitfield.copy_(centers[:, 0] < 0)  # half of the box empty
    f = ConstField(sigma=3.0)
    out = render_nerf(f, grid, cams, bg, num_steps=16, upsample_steps=8)
    pts = torch.cat(f.seen)
    assert pts.shape[0] == out.stats["samples_evaluated"] < out.stats["samples"]
    assert bool(grid.query(pts).all()) and bool((pts[:, 0] <= 0).all())
    # same picture as a field that is itself empty there
    g = ConstField(sigma=3.0, region=lambda x: grid.query(x))
    ref = render_nerf(g, None, cams, bg, num_steps=16, upsample_steps=8)
    torch.testing.assert_close(out.rgb, ref.rgb, atol=1e-5, rtol=1e-5)


def test_occupancy_update_decays_and_thresholds():
    grid = OccupancyGrid(1.0, 4, density_thresh=10.0, decay=0.5)
    f = ConstField(sigma=8.0, region=lambda x: x[:, 2] > 0)
    grid.update(f, step=0)
    assert grid.num_occupied() == 32  # upper half: 8 > mean 4
    assert float(grid.threshold) == pytest.approx(4.0)
    f.sigma = 0.0
    grid.update(f, step=16)  # decayed to 4, mean 2 -> still occupied
    assert grid.num_occupied() == 32 and int(grid.last_step) == 16
    assert not bool(grid.query(torch.tensor([[0.0, 0.0, 1.2]])).any())  # outside the box


def test_chunked_no_grad_render_equals_unchunked():
    m = small_model()
    m.update_occupancy(0)
    cams = cams4(10)
    bg = torch.rand(4, 3)
    light = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    with torch.no_grad():
        a = m.render(cams, bg, shading="lambertian", light_dirs=light, ambient=0.3, chunk=37)
        b = m.render(cams, bg, shading="lambertian", light_dirs=light, ambient=0.3, chunk=10**9)
    for k in ("rgb", "alpha", "depth", "normals"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), atol=1e-5, rtol=1e-5)


def test_shading_modes_gradients_and_losses():
    m = small_model()
    m.update_occupancy(0)
    cams = cams4(8)
    light = torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)
    g = torch.Generator().manual_seed(0)
    for shading in ("albedo", "lambertian", "textureless", "normal"):
        m.zero_grad()
        out = m.render(cams, torch.ones(4, 3), shading=shading, light_dirs=light,
                       ambient=torch.tensor([0.1, 0.5, 1.0, 0.2]), perturb=True, generator=g)
        assert set(out.losses) == ({"entropy", "opacity"} | ({"orient"} if shading != "albedo" else set()))
        assert (out.normals is None) == (shading == "albedo")
        assert 0.0 <= float(out.rgb.detach().min()) and float(out.rgb.detach().max()) <= 1.0 + 1e-5
        (out.rgb.mean() + m.regularization(out)).backward()
        gr = m.field.encoding.embeddings.grad
        assert gr is not None and bool(torch.isfinite(gr).all()) and float(gr.abs().sum()) > 0
    # textureless with ambient 1 is white where opaque
    with torch.no_grad():
        out = m.render(cams, torch.zeros(4, 3), shading="textureless", light_dirs=light, ambient=1.0)
    torch.testing.assert_close(out.rgb, out.alpha.expand_as(out.rgb), atol=1e-5, rtol=1e-5)


def test_short_fit_to_a_sphere_silhouette():
    m = small_model(lr=1e-2)
    cams = cams4(16)
    o, d, _ = camera_rays(cams)
    oc = o - torch.tensor([0.2, 0.0, 0.1])
    b = (oc * d).sum(-1)
    target = ((b * b - ((oc * oc).sum(-1) - 0.25)) > 0).float()[..., None]  # sphere of radius 0.5

    def loss_now():
        with torch.no_grad():
            return float(((m.render(cams, torch.ones(4, 3)).alpha - target) ** 2).mean())

    m.update_occupancy(0)
    before = loss_now()
    opt = m.make_optimizer()
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        m.maybe_update_occupancy(step, g)
        out = m.render(cams, torch.ones(4, 3), perturb=True, generator=g)
        loss = ((out.alpha - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.is_finite()
    after = loss_now()
    assert after < 0.1 * before, (before, after)


def test_state_round_trip_gives_identical_render():
    m = small_model(lr=1e-2)
    opt = m.make_optimizer()
    cams = cams4(8)
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        m.maybe_update_occupancy(step, g)
        out = m.render(cams, torch.ones(4, 3), perturb=True, generator=g)
        opt.zero_grad()
        out.rgb.mean().backward()
        opt.step()
    m.update_occupancy(16, g)
    state = m.state()
    m2 = small_model(seed=123)
    m2.load_state(state)
    m3 = NeRFModel.from_state(state)
    with torch.no_grad():
        a = m.render(cams, torch.ones(4, 3))
        for other in (m2, m3):
            b = other.render(cams, torch.ones(4, 3))
            assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
            assert torch.equal(other.grid.bitfield, m.grid.bitfield)
            assert int(other.grid.num_updates) == int(m.grid.num_updates) == 2


def test_param_groups():
    m = small_model(lr=2e-3, encoder_lr_mult=10.0)
    groups = m.param_groups()
    assert [gr["lr"] for gr in groups] == [pytest.approx(2e-2), pytest.approx(2e-3)]
    assert groups[0]["params"] == [m.field.encoding.embeddings]
    n = sum(p.numel() for gr in groups for p in gr["params"])
    assert n == sum(p.numel() for p in m.parameters())
    opt = m.make_optimizer()
    assert opt.defaults["eps"] == 1e-15 and opt.defaults["betas"] == (0.9, 0.99)


def test_sample_shading_schedule():
    m = small_model(albedo_ratio=0.2, textureless_ratio=0.25, min_ambient=0.1)
    g = torch.Generator().manual_seed(0)
    pos = orbit_cameras([10.0] * 3, [0.0, 120.0, 240.0], 2.5, 45.0, 8).viewmats
    cam_pos = -torch.einsum("bji,bj->bi", pos[:, :3, :3], pos[:, :3, 3])
    shading, amb, light = m.sample_shading(199, 1000, 3, g, cam_pos)
    assert shading == "albedo" and torch.equal(amb, torch.ones(3))
    counts = {"lambertian": 0, "textureless": 0}
    ambients, cosines = [], []
    for step in range(200, 600):
        shading, amb, light = m.sample_shading(step, 1000, 3, g, cam_pos)
        counts[shading] += 1
        ambients.append(float(amb[0]))
        assert amb.shape == (3,) and bool((amb == amb[0]).all())
        torch.testing.assert_close(light.norm(dim=-1), torch.ones(3))
        cosines.append((light * torch.nn.functional.normalize(cam_pos, dim=-1)).sum(-1))
    assert float(torch.cat(cosines).mean()) > 0.8  # the light comes from about the camera
    assert 60 < counts["textureless"] < 140
    assert 0.1 <= min(ambients) < 0.2 and 0.9 < max(ambients) <= 1.0


def test_export_ply_round_trip(tmp_path):
    m = small_model()
    m.update_occupancy(0)
    n = save_ply(nerf_to_gaussian_params(m), tmp_path / "nerf.ply")
    assert 0 < n < 16**3 // 4
    back = load_ply(tmp_path / "nerf.ply")
    assert back.params["means"].shape == (n, 3)
    xyz, rgb, dens = m.extract_points()
    torch.testing.assert_close(back.params["means"].detach(), xyz)
    assert float(back.params["means"].detach().norm(dim=-1).max()) < 0.6  # only the blob is dense
    torch.testing.assert_close(sh0_to_rgb(back.params["sh0"].detach()[:, 0]), rgb, atol=1e-5, rtol=1e-5)
    cell = 2.0 / 16
    torch.testing.assert_close(back.params["scales"].detach(), torch.full((n, 3), math.log(cell / 2)))
    alpha = torch.sigmoid(back.params["opacities"].detach())
    torch.testing.assert_close(alpha, (1 - torch.exp(-dens * cell)).clamp(1e-4, 1 - 1e-4), atol=1e-5, rtol=1e-4)
    assert save_ply(nerf_to_gaussian_params(m, max_points=5), tmp_path / "few.ply") == 5


def test_from_config_validates():
    with pytest.raises(ValueError):
        NeRFModel.from_config(dataclasses.replace(NerfConfig(**SMALL), density_activation="relu"))


def test_regularization_leaves_out_a_term_whose_weight_is_zero():
    """What a training step adds (NerfRepresentation calls this): a zero weight drops its term, so a NaN there
    cannot reach the loss; ``orient`` counts only when the render computed normals."""
    nan = torch.tensor(float("nan"))
    off = small_model(lambda_entropy=1e-3, lambda_orient=0.0, lambda_opacity=0.0)
    reg = off.regularization(SimpleNamespace(losses={"entropy": torch.tensor(0.5), "orient": nan, "opacity": nan}))
    assert float(reg) == pytest.approx(1e-3 * 0.5)
    on = small_model(lambda_entropy=1e-3, lambda_orient=1e-2, lambda_opacity=0.1)
    losses = {"entropy": torch.tensor(0.5), "orient": torch.tensor(2.0), "opacity": torch.tensor(0.25)}
    assert float(on.regularization(SimpleNamespace(losses=losses))) == pytest.approx(1e-3 * 0.5 + 1e-2 * 2.0 + 0.1 * 0.25)
    del losses["orient"]
    assert float(on.regularization(SimpleNamespace(losses=losses))) == pytest.approx(1e-3 * 0.5 + 0.1 * 0.25)


def test_the_nerf_config_is_the_one_home_of_the_fields_defaults():
    """The field and its encoding take NerfConfig's values without defaults of their own, so a default is
    written once (in NerfConfig) and a model built from a config is built from all of it."""
    names = {f.name for f in dataclasses.fields(NerfConfig)}
    for cls, some in ((NeRFField, {"hidden_dim", "num_layers", "blob_radius"}),
                      (HashGridEncoding, {"bound", "num_levels", "log2_hashmap_size"})):
        params = inspect.signature(cls).parameters
        shared = names & set(params)
        assert some <= shared
        repeated = sorted(n for n in shared if params[n].default is not inspect.Parameter.empty)
        assert not repeated, f"{cls.__name__} repeats NerfConfig's defaults of {repeated}"
    m = small_model(level_dim=3, bound=1.5, hidden_dim=16)
    enc = m.field.encoding
    assert m.field.bound == 1.5 and (enc.bound, enc.num_levels, enc.level_dim, enc.log2_hashmap_size) == (1.5, m.cfg.num_levels, 3,
                                                                                m.cfg.log2_hashmap_size)
    assert enc.resolutions[0] == m.cfg.base_resolution and enc.resolutions[-1] == m.cfg.desired_resolution
    assert m.field.mlp[0].out_features == 16 and len(m.field.mlp) == m.cfg.num_layers
