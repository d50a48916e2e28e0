"""Orbit cameras: OpenCV axes, look-at geometry, directions, determinism."""

import math

import pytest
import torch

from splatgen.cameras import look_at_viewmats, orbit_cameras, sample_orbit_cameras, view_direction


def test_camera_on_x_axis_looks_at_origin():
    cams = orbit_cameras([0.0], [0.0], 2.0, 60.0, 32)
    V = cams.viewmats[0]
    # Origin lands 2 units in front of the camera (camera +z forward), on the optical axis.
    o = V @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(o[:3], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)
    # World +Z (up) maps to image up, i.e. camera -y (OpenCV y points down).
    up = V[:3, :3] @ torch.tensor([0.0, 0.0, 1.0])
    assert up[1] < -0.99
    assert torch.allclose(cams.positions[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)


def test_rotation_is_orthonormal_right_handed():
    pos = torch.randn(16, 3) * 3
    V = look_at_viewmats(pos)
    R = V[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16), atol=1e-5)


def test_intrinsics_fov():
    cams = orbit_cameras([10.0], [30.0], 2.0, 90.0, 64, 32)
    K = cams.Ks[0]
    assert math.isclose(float(K[1, 1]), 16.0, rel_tol=1e-5)  # fy = (h/2) / tan(45 deg)
    assert float(K[0, 2]) == 32.0 and float(K[1, 2]) == 16.0
    small = cams.resized(32)
    assert small.width == 32 and math.isclose(float(small.Ks[0, 0, 0]), float(K[0, 0]) / 2, rel_tol=1e-6)


@pytest.mark.parametrize(
    "elev, azim, expected",
    [(0, 0, "front"), (0, 44, "front"), (0, 46, "side"), (0, -90, "side"), (0, 180, "back"),
     (0, -150, "back"), (70, 0, "overhead"), (59, 180, "back"), (0, 360, "front")],
)
def test_view_direction(elev, azim, expected):
    assert view_direction(elev, azim) == expected


def test_sampler_deterministic_and_spread():
    a = sample_orbit_cameras(4, 32, torch.Generator().manual_seed(5))
    b = sample_orbit_cameras(4, 32, torch.Generator().manual_seed(5))
    c = sample_orbit_cameras(4, 32, torch.Generator().manual_seed(6))
    assert torch.equal(a.viewmats, b.viewmats) and a.directions == b.directions
    assert not torch.equal(a.viewmats, c.viewmats)
    # Four views spread over the circle: consecutive azimuths 90 degrees apart.
    az = torch.sort(torch.remainder(a.azimuth, 360.0)).values
    gaps = torch.diff(torch.cat([az, az[:1] + 360.0]))
    assert torch.allclose(gaps, torch.full((4,), 90.0), atol=1e-3)


def test_sampler_respects_ranges():
    cams = sample_orbit_cameras(64, 16, torch.Generator().manual_seed(0), elevation_range=(0, 30),
                                radius_range=(1.5, 1.6), fovy_range=(40, 41))
    assert float(cams.elevation.min()) >= -1e-4 and float(cams.elevation.max()) <= 30 + 1e-4
    assert float(cams.radius.min()) >= 1.5 and float(cams.radius.max()) <= 1.6
    dist = cams.positions.norm(dim=-1)
    assert torch.allclose(dist, cams.radius, atol=1e-4)
    assert set(cams.directions) <= {"front", "side", "back"}


def test_indexing_keeps_fields():
    cams = sample_orbit_cameras(3, 16, torch.Generator().manual_seed(0))
    one = cams[1]
    assert len(one) == 1 and one.directions == [cams.directions[1]]
    assert torch.equal(one.viewmats[0], cams.viewmats[1])
