"""Orbit cameras around the origin.

Conventions (used by every module of splatgen):

- World: right-handed, **+Z up**. The object's canonical front faces **azimuth 0**, i.e. the +X axis.
- A camera at elevation ``e`` and azimuth ``a`` (degrees) and distance ``r`` sits at
  ``r * (cos e cos a, cos e sin a, sin e)`` and looks at the origin.
- ``viewmats`` are world-to-camera 4x4 matrices in **OpenCV axes** (x right, y down, z forward), the
  layout gsplat expects; ``Ks`` are 3x3 pixel intrinsics for ``width x height``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

import torch
from torch import Tensor

DIRECTIONS = ("front", "side", "back", "overhead")


@dataclass
class Cameras:
    """A batch of B pinhole cameras.

    Attributes:
        viewmats: [B, 4, 4] world-to-camera, OpenCV axes.
        Ks: [B, 3, 3] intrinsics in pixels.
        width, height: image size in pixels the intrinsics refer to.
        elevation, azimuth: [B] degrees; azimuth in (-180, 180].
        radius: [B] distance to the origin.
        fovy: [B] vertical field of view in degrees.
        directions: B view-dependent prompt directions, each one of ``DIRECTIONS``.
    """

    viewmats: Tensor
    Ks: Tensor
    width: int
    height: int
    elevation: Tensor
    azimuth: Tensor
    radius: Tensor
    fovy: Tensor
    directions: List[str]

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    def to(self, device: torch.device | str) -> "Cameras":
        return replace(
            self,
            viewmats=self.viewmats.to(device),
            Ks=self.Ks.to(device),
            elevation=self.elevation.to(device),
            azimuth=self.azimuth.to(device),
            radius=self.radius.to(device),
            fovy=self.fovy.to(device),
        )

    def resized(self, width: int, height: Optional[int] = None) -> "Cameras":
        """The same cameras rendering ``width x height`` pixels (same field of view)."""
        height = width if height is None else height
        Ks = self.Ks.clone()
        Ks[:, 0, :] *= width / self.width
        Ks[:, 1, :] *= height / self.height
        return replace(self, Ks=Ks, width=width, height=height)

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        sel = list(range(len(self)))[idx] if isinstance(idx, slice) else [int(i) for i in idx]
        index = torch.as_tensor(sel, dtype=torch.long, device=self.device)
        return replace(
            self,
            viewmats=self.viewmats[index],
            Ks=self.Ks[index],
            elevation=self.elevation[index],
            azimuth=self.azimuth[index],
            radius=self.radius[index],
            fovy=self.fovy[index],
            directions=[self.directions[i] for i in sel],
        )

    @property
    def camtoworlds(self) -> Tensor:
        """[B, 4, 4] camera-to-world matrices (OpenCV axes)."""
        return torch.linalg.inv(self.viewmats)

    @property
    def positions(self) -> Tensor:
        """[B, 3] camera centres in world space."""
        return self.camtoworlds[:, :3, 3]


def view_direction(
    elevation: float, azimuth: float, front_half_angle: float = 45.0, overhead_elevation: float = 60.0
) -> str:
    """DreamFusion's view-dependent prompt direction of one view (degrees in, one of ``DIRECTIONS`` out)."""
    if elevation > overhead_elevation:
        return "overhead"
    a = (azimuth + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    if abs(a) <= front_half_angle:
        return "front"
    if abs(a) >= 180.0 - front_half_angle:
        return "back"
    return "side"


def look_at_viewmats(positions: Tensor, target: Optional[Tensor] = None) -> Tensor:
    """World-to-camera matrices [B, 4, 4] (OpenCV axes) of cameras at ``positions`` [B, 3] looking at
    ``target`` (origin by default) with world +Z as up."""
    B = positions.shape[0]
    dtype, device = positions.dtype, positions.device
    target = torch.zeros_like(positions) if target is None else target.expand_as(positions)
    forward = torch.nn.functional.normalize(target - positions, dim=-1)  # camera +z
    up = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device).expand(B, 3)
    right = torch.linalg.cross(forward, up)  # camera +x
    # Looking straight up or down: any horizontal right vector will do.
    degenerate = right.norm(dim=-1) < 1e-6
    if degenerate.any():
        right[degenerate] = torch.tensor([0.0, -1.0, 0.0], dtype=dtype, device=device)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right)  # camera +y (points down in the image)
    R = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coords
    viewmats = torch.zeros(B, 4, 4, dtype=dtype, device=device)
    viewmats[:, :3, :3] = R
    viewmats[:, :3, 3] = -(R @ positions.unsqueeze(-1)).squeeze(-1)
    viewmats[:, 3, 3] = 1.0
    return viewmats


def intrinsics(fovy_deg: Tensor, width: int, height: int) -> Tensor:
    """Pixel intrinsics [B, 3, 3] for vertical fields of view ``fovy_deg`` [B] and square pixels."""
    fy = 0.5 * height / torch.tan(torch.deg2rad(fovy_deg) * 0.5)
    K = torch.zeros(fovy_deg.shape[0], 3, 3, dtype=fovy_deg.dtype, device=fovy_deg.device)
    K[:, 0, 0] = fy
    K[:, 1, 1] = fy
    K[:, 0, 2] = width * 0.5
    K[:, 1, 2] = height * 0.5
    K[:, 2, 2] = 1.0
    return K


def orbit_cameras(
    elevation: Sequence[float] | Tensor,
    azimuth: Sequence[float] | Tensor,
    radius: Sequence[float] | Tensor | float,
    fovy: Sequence[float] | Tensor | float,
    width: int,
    height: Optional[int] = None,
    front_half_angle: float = 45.0,
    overhead_elevation: float = 60.0,
    device: torch.device | str = "cpu",
) -> Cameras:
    """Cameras at the given elevations/azimuths (degrees), looking at the origin."""
    height = width if height is None else height
    elev = torch.as_tensor(elevation, dtype=torch.float32, device=device).reshape(-1)
    azim = torch.as_tensor(azimuth, dtype=torch.float32, device=device).reshape(-1)
    B = elev.shape[0]
    rad = torch.as_tensor(radius, dtype=torch.float32, device=device).reshape(-1).expand(B).clone()
    fov = torch.as_tensor(fovy, dtype=torch.float32, device=device).reshape(-1).expand(B).clone()
    e, a = torch.deg2rad(elev), torch.deg2rad(azim)
    pos = torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], dim=-1) * rad[:, None]
    azim_wrapped = torch.remainder(azim + 180.0, 360.0) - 180.0
    dirs = [
        view_direction(float(el), float(az), front_half_angle, overhead_elevation)
        for el, az in zip(elev.tolist(), azim_wrapped.tolist())
    ]
    return Cameras(
        viewmats=look_at_viewmats(pos),
        Ks=intrinsics(fov, width, height),
        width=width,
        height=height,
        elevation=elev,
        azimuth=azim_wrapped,
        radius=rad,
        fovy=fov,
        directions=dirs,
    )


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64).float()


def sample_orbit_cameras(
    batch_size: int,
    width: int,
    generator: torch.Generator,
    elevation_range: Sequence[float] = (-10.0, 45.0),
    azimuth_range: Sequence[float] = (-180.0, 180.0),
    radius_range: Sequence[float] = (2.0, 2.5),
    fovy_range: Sequence[float] = (40.0, 50.0),
    height: Optional[int] = None,
    front_half_angle: float = 45.0,
    overhead_elevation: float = 60.0,
    device: torch.device | str = "cpu",
    group_size: int = 1,
) -> Cameras:
    """Random orbit cameras, deterministic under ``generator`` (a CPU generator: same draws on any device).

    With B > 1 views the azimuths are spread over the circle: one random offset, then B evenly spaced
    views (a stratified sample), so every batch sees the object from all around. Elevation is drawn
    uniformly in *sin(elevation)* (uniform over the sphere's band), radius and field of view uniformly.

    ``group_size`` V > 1 (a multi-view prior's views): the batch is B / V groups; the V views of a group share
    one elevation, radius and field of view, and their azimuths are evenly spaced (360 / V apart) from a random
    start, as multi-view priors are trained (MVDream). V = 1 is the sampling above, draw for draw.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if group_size > 1:
        return _sample_groups(batch_size, width, generator, group_size, elevation_range, azimuth_range, radius_range,
                              fovy_range, height, front_half_angle, overhead_elevation, device)
    lo, hi = float(azimuth_range[0]), float(azimuth_range[1])
    span = hi - lo
    if batch_size == 1 or span < 360.0:
        # Stratify within the range: one draw per equal sub-interval.
        u = (torch.arange(batch_size, dtype=torch.float64) + torch.rand(batch_size, generator=generator, dtype=torch.float64)) / batch_size
        azim = (lo + span * u).float()
    else:
        offset = float(torch.rand(1, generator=generator, dtype=torch.float64)) * span / batch_size
        azim = (lo + offset + span * torch.arange(batch_size, dtype=torch.float64) / batch_size).float()
    s_lo, s_hi = math.sin(math.radians(elevation_range[0])), math.sin(math.radians(elevation_range[1]))
    elev = torch.rad2deg(torch.asin(_uniform(s_lo, s_hi, batch_size, generator).clamp(-1, 1)))
    rad = _uniform(radius_range[0], radius_range[1], batch_size, generator)
    fov = _uniform(fovy_range[0], fovy_range[1], batch_size, generator)
    return orbit_cameras(
        elev, azim, rad, fov, width, height, front_half_angle, overhead_elevation, device=device
    )


def _sample_groups(batch_size: int, width: int, generator: torch.Generator, group_size: int,
                   elevation_range: Sequence[float], azimuth_range: Sequence[float], radius_range: Sequence[float],
                   fovy_range: Sequence[float], height: Optional[int], front_half_angle: float,
                   overhead_elevation: float, device: torch.device | str) -> Cameras:
    """Groups of ``group_size`` views around the object (see :func:`sample_orbit_cameras`)."""
    if batch_size % group_size:
        raise ValueError(f"batch_size {batch_size} is not a multiple of the prior's {group_size} views")
    G, V = batch_size // group_size, group_size
    lo, span = float(azimuth_range[0]), float(azimuth_range[1]) - float(azimuth_range[0])
    start = lo + span * torch.rand(G, generator=generator, dtype=torch.float64)
    azim = (start[:, None] + 360.0 * torch.arange(V, dtype=torch.float64) / V).reshape(-1).float()
    s_lo, s_hi = math.sin(math.radians(elevation_range[0])), math.sin(math.radians(elevation_range[1]))
    elev = torch.rad2deg(torch.asin(_uniform(s_lo, s_hi, G, generator).clamp(-1, 1)))
    rad = _uniform(radius_range[0], radius_range[1], G, generator)
    fov = _uniform(fovy_range[0], fovy_range[1], G, generator)
    rep = lambda v: v.repeat_interleave(V)  # noqa: E731
    return orbit_cameras(rep(elev), azim, rep(rad), rep(fov), width, height, front_half_angle, overhead_elevation,
                         device=device)


def evenly_spaced_cameras(
    n: int,
    width: int,
    elevation: float = 15.0,
    radius: float = 2.25,
    fovy: float = 45.0,
    start_azimuth: float = 0.0,
    height: Optional[int] = None,
    device: torch.device | str = "cpu",
) -> Cameras:
    """``n`` views at one elevation with azimuths ``start, start + 360/n, ...`` (previews, evaluation)."""
    azim = [start_azimuth + 360.0 * i / n for i in range(n)]
    return orbit_cameras([elevation] * n, azim, radius, fovy, width, height, device=device)
