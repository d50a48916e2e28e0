"""Textured meshes from 3D Gaussians: ``.glb`` (binary glTF) and ``.obj`` + ``.mtl`` + ``.png``.

Pipeline (:func:`mesh_from_gaussians`; :func:`export_mesh` adds the file):

1. **Opacity density grid** (:func:`density_grid`). ``D(x) = sum_i o_i exp(-q_i(x) / 2)`` with
   ``q_i(x) = (x - mu_i)^T Sigma_i^-1 (x - mu_i)`` the Mahalanobis distance under each Gaussian's full
   anisotropic covariance ``Sigma_i = R S S^T R^T``, cut off at ``q_i > 9`` (3 sigma), evaluated at the nodes
   of a cubic grid (``resolution`` nodes along the box's longest side). Each Gaussian's covariance is widened
   by ``(h / 2)^2 I`` (``h`` the node spacing) without changing its peak, the 3D counterpart of the
   renderer's ``eps2d``: a Gaussian thinner than a voxel would otherwise fall between nodes and vanish.
   The same pass accumulates ``sum_i o_i exp(-q_i / 2) rgb_i`` for the texture. It enumerates, in
   chunks of ``max_pairs`` and on the input's device (CUDA when the Gaussians are there), the (Gaussian,
   x-y column) pairs of each Gaussian's 3-sigma box and then, per column, only the nodes between the two
   roots of ``q_i = 9`` along z, so the work follows the ellipsoid's volume (a tilted flat Gaussian fills a
   small part of its bounding box). ``D`` at a Gaussian's centre is its opacity, and for one
   Gaussian the maximum of ``D`` along a ray equals the alpha the rasteriser composites for that ray (the
   marginal of a Gaussian along a line), so iso-level 0.5 of a lone Gaussian is its ``alpha = 0.5`` outline.
2. **Iso-level** (:func:`silhouette_iso`, ``iso_rule='silhouette'``, the default): the level whose surface
   best matches the Gaussians' own silhouettes. The Gaussians are rendered (alpha only) from
   ``iso_views`` cameras spread over the whole sphere (Fibonacci directions, below the object too); the
   silhouette of the level set ``{D > t}`` seen by a camera is exactly the set of pixels whose ray meets
   a point with ``D > t``, i.e. where the maximum of ``D`` along the pixel's ray exceeds ``t``, so one
   max-projection of the grid per view gives every level's silhouette at once. The level with the best
   mean IoU against ``alpha > 0.5`` over the views is chosen (``iso_tolerance`` > 0 takes the highest
   level within that of the best instead). ``iso_rule='alpha'`` takes the fixed level
   0.5 (exact for isolated Gaussians, too tight where many faint Gaussians composite together); a
   number passed as ``iso`` is used as given. ``benchmarks/export_mesh.py`` compares the rules against
   ground truth: on six generated runs (bundled prior) the silhouette rule's meshes scored mean IoU 0.70
   and Chamfer 0.051 against 0.49 / 0.070 for level 0.5 and 0.24 / 0.091 for DreamGaussian's fixed level
   1 (the levels it chose: 0.11-0.16, since SDS Gaussians are faint and overlap); on dense opaque
   Gaussians lying on the true surface the fixed levels did better (IoU 0.84 / 0.87 against 0.80), because
   the rule reproduces those Gaussians' own slightly bloated silhouettes. No fixed level serves both.
3. **Solid interior**: voxels below the level that cannot be reached from outside the grid (the hollow
   inside of a shell of surface Gaussians) are filled, so the mesh has no inner surface facing inwards.
4. **Marching cubes** (scikit-image, Lewiner's variant, whose case table resolves ambiguous cubes
   consistently so the surface is closed), outward-facing triangles.
5. **Clean-up**: connected components whose area is below ``min_component_fraction`` of the largest's are
   dropped (floaters). Then, above ``target_faces``, quadric edge-collapse decimation (fast-simplification);
   its collapses sometimes pinch two nearby sheets onto one edge (an edge of four faces: no longer
   watertight; on the generated runs at 20k faces, always), and then marching cubes runs again on the
   grid resampled to the resolution that gives about ``target_faces`` faces instead, closed by
   construction (``MeshResult.decimation`` says which).
6. **UV unwrap** (xatlas): charts packed into one atlas with ``padding`` texels between them, its UVs
   spanning the ``texture_size`` square.
7. **Texture bake**: every texel whose centre lies in, or within 0.75 texel of, a triangle in UV space
   (conservative, so thin charts get texels and bilinear taps just outside a chart read that chart) gets
   the colour of its 3D point,
   ``sum_i o_i g_i(x) rgb_i / sum_i o_i g_i(x)`` (the opacity-weighted colour of the Gaussians around the
   point, from the grid, trilinear). ``rgb_i`` is the SH DC colour, the view-independent part: the mean
   of the Gaussian's colour over all view directions. The lookup is in 3D rather than by rendering views
   and back-projecting them, so parts no camera sees well (under a chair, inside a mug's handle) get the
   colour of the Gaussians there instead of a stretched or missing one, with no visibility tests, no
   view blending seams and no rasteriser dependency. Texels outside every triangle then take the colour
   of the nearest covered texel (a Euclidean distance transform), so bilinear filtering and mipmaps
   never pull background into the surface.

Axes. splatgen's world is +Z up with the object's front facing +X. Files are written with ``up``:

- ``'y'`` (default for both formats): +Y up and the front facing +Z, ``(x, y, z) -> (y, z, x)``. glTF is +Y
  up by its spec, and three.js's default camera (on +Z looking down -Z) then sees the front; Blender's
  glTF importer and its OBJ importer's defaults turn this back into +Z up with the front towards -Y.
- ``'z'``: splatgen's own frame unchanged (+Z up, front +X).
- ``'-y'``: -Y up (camera-style, as SuperSplat expects), front facing +Z, ``(x, y, z) -> (-y, -z, x)``:
  the ``'y'`` frame turned 180 degrees about Z.

All three are rotations (no mirroring), so triangle winding and normals stay outward.

Colours. The texture holds the Gaussians' colours as 8-bit sRGB-encoded values, the same numbers the
renderer shows: glTF's ``baseColorTexture`` is sRGB, so an unlit view shows the render's colours. The
material is non-metallic (``metallicFactor`` 0, glTF's default 1 renders nearly black without an
environment map) and fully rough.

Files are written atomically (:func:`splatgen.fileio.atomic_write`): each under a temporary name in the target folder, then a rename; on
an error the temporaries are removed and nothing appears under the final names. An OBJ's texture and
``.mtl`` are moved into place before the ``.obj`` that references them.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras, intrinsics, look_at_viewmats
from ..errors import SplatgenError
from ..fileio import atomic_write_bytes
from ..gaussians import GaussianModel, quat_to_rotmat, sh0_to_rgb
from .orientation import UP_AXES, frame_matrix

__all__ = [
    "ISO_RULES",
    "MESH_FORMATS",
    "UP_AXES",
    "MeshResult",
    "density_grid",
    "export_mesh",
    "mesh_from_gaussians",
    "silhouette_iso",
    "up_rotation",
    "write_glb",
    "write_obj",
]

ISO_RULES = ("silhouette", "alpha")
"""Automatic iso-level rules (see the module docstring)."""
MESH_FORMATS = (".glb", ".obj")
"""File extensions :func:`export_mesh` writes."""
ALPHA_ISO = 0.5
"""The ``'alpha'`` rule's level, and the alpha threshold of the silhouettes the ``'silhouette'`` rule matches."""
CUTOFF_SIGMA = 3.0
"""Each Gaussian's density is cut off beyond this Mahalanobis distance."""

def up_rotation(up: str) -> np.ndarray:
    """The 3x3 rotation from splatgen's frame (+Z up, front +X) to a file's frame with ``up`` (one of
    :data:`~splatgen.export.orientation.UP_AXES`; the splat exporters' frames); file coordinates are ``R @ p``.

    Raises:
        SplatgenError: ``up`` is not one of them.
    """
    return frame_matrix(up).numpy()


# ----------------------------------------------------------------------------------------- result
@dataclass
class MeshResult:
    """A textured triangle mesh in splatgen's world frame (+Z up, front +X).

    Attributes:
        vertices: [V, 3] float32 positions. Vertices on a UV seam appear once per chart.
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        uvs: [V, 2] float32 texture coordinates in [0, 1], OpenGL/OBJ convention: ``u`` to the right, ``v``
            up, (0, 0) the bottom-left corner of ``texture`` (glTF's flip is done when writing a ``.glb``).
        texture: [T, T, 3] uint8 RGB image, row 0 at the top.
        normals: [V, 3] float32 unit vertex normals (area-weighted over the welded mesh, so seams shade
            smoothly).
        vertex_ids: [V] int64, each vertex's index in the welded mesh (one vertex per position):
            ``welded()`` gives that mesh.
        iso: the iso-level used. iso_rule: ``'silhouette'``, ``'alpha'`` or ``'given'``.
        iso_silhouette_iou: mean IoU of the level set's silhouettes against the Gaussians' ``alpha > 0.5``
            over the iso views (the ``'silhouette'`` rule's objective), None when not measured.
        resolution: grid nodes along the longest side. voxel_size: node spacing (world units).
        bounds: ((x0, y0, z0), (x1, y1, z1)) of the grid.
        num_gaussians: Gaussians used (after dropping non-finite ones).
        faces_before_decimation: faces after clean-up, before decimation.
        decimation: how the face count was reduced: ``'quadric'`` (edge collapses), ``'grid'`` (marching
            cubes on a coarser grid, when the collapses left the surface open), or None (not reduced).
        components_dropped: connected components removed by the clean-up.
        watertight: every edge of the welded mesh shared by exactly two faces, consistently wound. The written
            files keep the vertices split along UV seams (each has one texture coordinate), so a check of a file
            sees the seams as open edges unless it welds by position first (trimesh:
            ``merge_vertices(merge_tex=True)``).
        timings: seconds per stage (``grid, iso, marching_cubes, cleanup, decimate, uv, bake, total``; a
            file write adds ``write``).
        path: the main file written by :func:`export_mesh`, else None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray
    normals: np.ndarray
    vertex_ids: np.ndarray
    iso: float
    iso_rule: str
    iso_silhouette_iou: Optional[float]
    resolution: int
    voxel_size: float
    bounds: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    num_gaussians: int
    faces_before_decimation: int
    decimation: Optional[str]
    components_dropped: int
    watertight: bool
    timings: Dict[str, float] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def welded(self) -> Tuple[np.ndarray, np.ndarray]:
        """(vertices [W, 3], faces [F, 3]) with one vertex per position (no UV seams): the closed surface."""
        n = int(self.vertex_ids.max()) + 1 if self.vertex_ids.size else 0
        verts = np.zeros((n, 3), dtype=np.float32)
        verts[self.vertex_ids] = self.vertices
        return verts, self.vertex_ids[self.faces]

    def to_trimesh(self, up: str = "z"):
        """A ``trimesh.Trimesh`` with the texture as a PBR ``baseColorTexture``, in the frame of ``up``."""
        import trimesh
        from PIL import Image

        R = up_rotation(up)
        material = trimesh.visual.material.PBRMaterial(
            name="splatgen", baseColorTexture=Image.fromarray(self.texture), metallicFactor=0.0,
            roughnessFactor=1.0, doubleSided=False,
        )
        mesh = trimesh.Trimesh(
            vertices=self.vertices.astype(np.float64) @ R.T, faces=self.faces,
            visual=trimesh.visual.TextureVisuals(uv=self.uvs, material=material), process=False,
        )
        mesh.vertex_normals = self.normals.astype(np.float64) @ R.T
        return mesh


# ----------------------------------------------------------------------------------------- inputs
_REQUIRED = ("means", "scales", "quats", "opacities", "sh0")


def _gaussian_tensors(params) -> Dict[str, Tensor]:
    """Float32 tensors (same device) from a GaussianModel or a gsplat-layout dict, non-finite rows dropped.

    Raises:
        SplatgenError: missing keys, wrong shapes, no Gaussians, or none with finite parameters.
    """
    if isinstance(params, GaussianModel):
        params = params.state()
    if not isinstance(params, dict):
        raise SplatgenError(f"Gaussians must be a GaussianModel or a dict of tensors in gsplat's layout, got "
                            f"{type(params).__name__}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise SplatgenError(f"the Gaussians lack {missing}; need {list(_REQUIRED)} in gsplat's layout")
    t = {k: torch.as_tensor(params[k]).detach() for k in _REQUIRED}
    n = t["means"].shape[0] if t["means"].dim() == 2 else -1
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh0": (n, 1, 3)}
    for k, shape in shapes.items():
        if tuple(t[k].shape) != shape and not (k == "sh0" and tuple(t[k].shape) == (n, 3)):
            raise SplatgenError(f"Gaussians: {k} has shape {list(t[k].shape)}, expected {list(shape)} (gsplat's layout)")
    if n == 0:
        raise SplatgenError("there are no Gaussians to mesh (the model is empty)")
    dev = t["means"].device
    t = {k: v.to(device=dev, dtype=torch.float32).reshape(n, -1) for k, v in t.items()}
    finite = torch.ones(n, dtype=torch.bool, device=dev)
    for v in t.values():
        finite &= torch.isfinite(v).all(dim=1)
    kept = int(finite.sum())
    if kept == 0:
        raise SplatgenError(f"all {n} Gaussians have non-finite parameters (NaN or Inf): nothing to mesh")
    if kept < n:
        warnings.warn(f"dropping {n - kept} of {n} Gaussians with non-finite parameters before meshing", stacklevel=3)
        t = {k: v[finite] for k, v in t.items()}
    return {
        "means": t["means"],
        "scales": t["scales"],
        "quats": t["quats"],
        "opacities": torch.sigmoid(t["opacities"].reshape(-1)),
        "rgb": sh0_to_rgb(t["sh0"]).clamp(0.0, 1.0),
    }


def _covariances(quats: Tensor, log_scales: Tensor, floor: float) -> Tuple[Tensor, Tensor]:
    """(Sigma [N, 3, 3], Sigma^-1 [N, 3, 3]) of ``R diag(s^2) R^T + floor^2 I``: the rotation's eigenbasis is
    kept, so the inverse is exact, ``R diag(1 / (s^2 + floor^2)) R^T``."""
    R = quat_to_rotmat(quats)
    var = torch.exp(2.0 * log_scales.clamp(-30.0, 30.0)) + floor * floor
    cov = (R * var[:, None, :]) @ R.transpose(1, 2)
    inv = (R / var[:, None, :]) @ R.transpose(1, 2)
    return cov, inv


# ----------------------------------------------------------------------------------------- density grid
def box_cells(start: Tensor, size: Tensor, max_cells: int) -> List[Tuple[Tensor, Tensor]]:
    """All integer cells of N axis-aligned boxes, in chunks.

    Args:
        start: [N, D] long, each box's first cell. size: [N, D] long, its cells per axis (0 = empty box).
        max_cells: cells per chunk (a box larger than this gets a chunk of its own).

    Returns:
        A list of ``(box_index [P], cell [P, D])``: every cell of every box exactly once.
    """
    counts = size.clamp_min(0).prod(dim=1)
    out: List[Tuple[Tensor, Tensor]] = []
    n = counts.shape[0]
    if n == 0:
        return out
    ends = torch.cumsum(counts, 0)
    boundaries = [0]
    total, base = int(ends[-1]), 0
    while base < total:  # chunk i holds the boxes whose cells end at most max_cells past the chunk's start
        j = int(torch.searchsorted(ends, torch.tensor(base + max_cells, device=ends.device), right=True))
        j = max(j, boundaries[-1] + 1)
        boundaries.append(j)
        base = int(ends[j - 1])
    for a, b in zip(boundaries[:-1], boundaries[1:]):
        c = counts[a:b]
        box = torch.repeat_interleave(torch.arange(a, b, device=start.device), c)
        first = torch.cumsum(c, 0) - c
        local = torch.arange(int(c.sum()), device=start.device) - torch.repeat_interleave(first, c)
        sz = size[box]
        parts = []
        for d in range(size.shape[1] - 1, -1, -1):  # last axis fastest
            parts.append(local % sz[:, d])
            local = local // sz[:, d]
        out.append((box, start[box] + torch.stack(parts[::-1], dim=1)))
    return out


def density_grid(
    params,
    resolution: int = 128,
    bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
    with_colour: bool = True,
    max_pairs: Optional[int] = None,
    pad: int = 2,
) -> Dict[str, object]:
    """The opacity density grid of the Gaussians (and their opacity-weighted colour), see the module docstring.

    Args:
        params: a GaussianModel or a dict in gsplat's layout (see :func:`mesh_from_gaussians`).
        resolution: nodes along the longest side of the box (the other sides get the same spacing).
        bounds: ``(lo, hi)`` corners of the box to evaluate; default: the 3-sigma boxes of the Gaussians
            whose opacity is at least 1/255 (fainter ones are skipped by the rasteriser too), so the
            surface never touches the grid's border.
        with_colour: also accumulate ``sum o g rgb``.
        max_pairs: (Gaussian, node) pairs evaluated at once; default 2^22 on the CPU, 2^25 on CUDA.
        pad: empty nodes added on each side of the automatic box.

    Returns:
        dict with ``density`` [X, Y, Z] float32 (on the Gaussians' device), ``colour`` [X, Y, Z, 3] (the
        weighted sum; divide by ``density``) or None, ``origin`` [3] (world position of node (0, 0, 0)),
        ``voxel_size`` (node spacing), ``gaussians`` (the prepared tensors).
    """
    g = params if isinstance(params, dict) and "rgb" in params else _gaussian_tensors(params)
    means, opac = g["means"], g["opacities"]
    dev = means.device
    if resolution < 8:
        raise SplatgenError(f"resolution must be at least 8 nodes, got {resolution}")
    if bounds is None:
        visible = opac >= 1.0 / 255.0
        if not bool(visible.any()):
            raise SplatgenError("every Gaussian has opacity below 1/255: they render nothing, so there is no surface "
                                "to mesh")
        sd = torch.exp(g["scales"][visible].clamp(-30, 30)).amax(dim=1, keepdim=True)
        lo = (means[visible] - CUTOFF_SIGMA * sd).amin(0)
        hi = (means[visible] + CUTOFF_SIGMA * sd).amax(0)
        h = float((hi - lo).max()) / max(resolution - 1 - 2 * pad, 1)
        h = max(h, 1e-6)
        lo, hi = lo - pad * h, hi + pad * h
    else:
        lo = torch.as_tensor(bounds[0], dtype=torch.float32, device=dev).reshape(3)
        hi = torch.as_tensor(bounds[1], dtype=torch.float32, device=dev).reshape(3)
        if not bool((hi > lo).all()):
            raise SplatgenError(f"bounds must have lo < hi on every axis, got {lo.tolist()} and {hi.tolist()}")
        h = float((hi - lo).max()) / (resolution - 1)
    shape = [int(math.floor(float(e) / h + 1e-6)) + 1 for e in (hi - lo)]
    shape = [max(s, 2) for s in shape]

    cov, inv = _covariances(g["quats"], g["scales"], 0.5 * h)
    # the 3-sigma ellipsoid's half extents along the world axes: 3 sqrt(Sigma_kk)
    ext = CUTOFF_SIGMA * torch.sqrt(torch.diagonal(cov, dim1=1, dim2=2))
    lo_t = lo.to(dev)
    dims = torch.tensor(shape, device=dev)
    first = torch.ceil((means - ext - lo_t) / h).long().clamp(min=0)
    last = torch.minimum(torch.floor((means + ext - lo_t) / h).long(), dims - 1)
    size = (last - first + 1).clamp_min(0)
    keep = (opac >= 1.0 / 255.0) & (size > 0).all(dim=1)
    idx = keep.nonzero().squeeze(1)

    if max_pairs is None:
        max_pairs = (1 << 25) if dev.type == "cuda" else (1 << 22)
    X, Y, Z = shape
    channels = 4 if with_colour else 1
    acc = torch.zeros(X * Y * Z, channels, dtype=torch.float32, device=dev)
    A = inv[idx]
    # one row per Gaussian, gathered once per chunk: mean (3), the quadratic form's 6 coefficients, opacity, rgb
    table = torch.cat([
        means[idx], A[:, 0, 0, None], A[:, 1, 1, None], A[:, 2, 2, None], 2 * A[:, 0, 1, None], 2 * A[:, 0, 2, None],
        2 * A[:, 1, 2, None], opac[idx, None], g["rgb"][idx] if with_colour else means[idx, :0],
    ], dim=1)
    hz = torch.tensor(h, device=dev)
    limit = CUTOFF_SIGMA * CUTOFF_SIGMA
    # Two levels, so the work follows the ellipsoid rather than its axis-aligned box (a tilted flat Gaussian
    # fills a small part of its box): the (Gaussian, x-y column) pairs of each box first, then in each column
    # only the nodes between the two roots of the quadratic q(z) = 9.
    for col_g, col in box_cells(first[idx, :2], size[idx, :2], max_pairs):
        row = table[col_g]
        dx = lo_t[0] + col[:, 0].float() * hz - row[:, 0]
        dy = lo_t[1] + col[:, 1].float() * hz - row[:, 1]
        # q(dz) = a_zz dz^2 + 2 b dz + c
        azz = row[:, 5]
        b = 0.5 * (row[:, 7] * dx + row[:, 8] * dy)
        c = row[:, 3] * dx * dx + row[:, 4] * dy * dy + row[:, 6] * dx * dy
        disc = b * b - azz * (c - limit)
        root = torch.sqrt(disc.clamp_min(0.0))
        z_lo = row[:, 2] + (-b - root) / azz
        z_hi = row[:, 2] + (-b + root) / azz
        k0 = torch.ceil((z_lo - lo_t[2]) / h).long().clamp(0, Z - 1)
        k1 = torch.floor((z_hi - lo_t[2]) / h).long().clamp(-1, Z - 1)
        n_z = torch.where(disc >= 0, (k1 - k0 + 1).clamp_min(0), torch.zeros_like(k0))
        live = (n_z > 0).nonzero().squeeze(1)
        if live.numel() == 0:
            continue
        col_g, col, k0, n_z = col_g[live], col[live], k0[live], n_z[live]
        for c_i, kz in box_cells(k0[:, None], n_z[:, None], max_pairs):
            gi = col_g[c_i]
            row = table[gi]
            ij = col[c_i]
            d = torch.stack([ij[:, 0].float(), ij[:, 1].float(), kz[:, 0].float()], dim=1)
            d = torch.addcmul(lo_t, d, hz) - row[:, :3]
            ddx, ddy, ddz = d.unbind(1)
            q = (row[:, 3] * ddx * ddx + row[:, 4] * ddy * ddy + row[:, 5] * ddz * ddz
                 + row[:, 6] * ddx * ddy + row[:, 7] * ddx * ddz + row[:, 8] * ddy * ddz)
            w = row[:, 9] * torch.exp(-0.5 * q)
            w = torch.where(q <= limit, w, torch.zeros_like(w))
            flat = (ij[:, 0] * Y + ij[:, 1]) * Z + kz[:, 0]
            if with_colour:
                acc.index_add_(0, flat, torch.cat([w[:, None], w[:, None] * row[:, 10:13]], dim=1))
            else:
                acc.index_add_(0, flat, w[:, None])
    acc = acc.reshape(X, Y, Z, channels)
    return {
        "density": acc[..., 0].contiguous(),
        "colour": acc[..., 1:].contiguous() if with_colour else None,
        "origin": lo_t,
        "voxel_size": h,
        "gaussians": g,
    }


def _sample_grid(volume: Tensor, origin: Tensor, h: float, points: Tensor) -> Tensor:
    """Trilinear samples [P, C] of ``volume`` [X, Y, Z, C] at world ``points`` [P, 3] (zero outside)."""
    X, Y, Z, C = volume.shape
    size = torch.tensor([X - 1, Y - 1, Z - 1], dtype=points.dtype, device=points.device)
    norm = 2.0 * (points - origin) / h / size - 1.0  # x, y, z in [-1, 1] at the first / last node
    grid = norm.flip(-1).reshape(1, -1, 1, 1, 3)  # grid_sample wants (W, H, D) = (z, y, x)
    vol = volume.permute(3, 0, 1, 2)[None]  # [1, C, D=X, H=Y, W=Z]
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(C, -1).T


# ----------------------------------------------------------------------------------------- iso-level
def _fibonacci_directions(n: int) -> Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1).float()


def _sphere_cameras(centre: Tensor, radius: float, n_views: int, size: int, fovy: float = 40.0) -> Cameras:
    """``n_views`` cameras on Fibonacci directions around ``centre``, framing a ball of ``radius``."""
    dev = centre.device
    dirs = _fibonacci_directions(n_views).to(dev)
    dist = radius / math.sin(math.radians(fovy) / 2.0) * 1.05
    pos = centre + dist * dirs
    elev = torch.rad2deg(torch.asin(dirs[:, 2].clamp(-1, 1)))
    azim = torch.rad2deg(torch.atan2(dirs[:, 1], dirs[:, 0]))
    fov = torch.full((n_views,), fovy, device=dev)
    return Cameras(viewmats=look_at_viewmats(pos, centre), Ks=intrinsics(fov, size, size), width=size, height=size,
                   elevation=elev, azimuth=azim, radius=torch.full((n_views,), dist, device=dev), fovy=fov,
                   directions=["side"] * n_views)


def _max_projection(density: Tensor, origin: Tensor, h: float, cams: Cameras, chunk: int = 1 << 21) -> Tensor:
    """[B, H, W] maximum of the trilinear density along each pixel-centre ray (pixels as in gsplat)."""
    dev = density.device
    X, Y, Z = density.shape
    box_lo = origin
    box_hi = origin + h * torch.tensor([X - 1, Y - 1, Z - 1], dtype=torch.float32, device=dev)
    c2w = torch.linalg.inv(cams.viewmats.float())
    H, W = cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float32) + 0.5,
                            torch.arange(W, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
    vol = density[None, None]
    out = torch.zeros(len(cams), H * W, device=dev)
    step = 0.5 * h
    for b in range(len(cams)):
        K = cams.Ks[b].float()
        d_cam = torch.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], torch.ones_like(xs)], -1).reshape(-1, 3)
        d = F.normalize(d_cam @ c2w[b, :3, :3].T, dim=-1)
        o = c2w[b, :3, 3].expand_as(d)
        inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1, t2 = (box_lo - o) * inv, (box_hi - o) * inv
        tn = torch.minimum(t1, t2).amax(-1).clamp_min(0.0)
        tf = torch.maximum(t1, t2).amin(-1)
        hit = (tf > tn).nonzero().squeeze(1)
        if hit.numel() == 0:
            continue
        n_steps = int(math.ceil(float((tf[hit] - tn[hit]).max()) / step)) + 1
        rays_per = max(1, chunk // n_steps)
        for s in range(0, hit.numel(), rays_per):
            r = hit[s:s + rays_per]
            t = tn[r, None] + step * torch.arange(n_steps, device=dev, dtype=torch.float32)[None]
            t = torch.minimum(t, tf[r, None])
            p = o[r, None, :] + t[..., None] * d[r, None, :]
            norm = 2.0 * (p - origin) / h / torch.tensor([X - 1, Y - 1, Z - 1], device=dev, dtype=torch.float32) - 1.0
            v = F.grid_sample(vol, norm.flip(-1).reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
                              align_corners=True)
            out[b, r] = v.reshape(r.numel(), n_steps).amax(dim=1)
    return out.reshape(len(cams), H, W)


def gaussian_alpha(g: Dict[str, Tensor], cams: Cameras, max_pairs: Optional[int] = None) -> Tensor:
    """[B, H, W] the rasteriser's accumulated alpha ``1 - prod_i (1 - alpha_i)`` of the prepared Gaussians.

    The same projection (``splatgen.render.torch_backend.project``: EWA, ``eps2d`` 0.3, opacity-aware
    radii) and per-pixel alphas (clamped to 0.999, skipped below 1/255) as the renderer, but accumulated as
    a sum of ``log(1 - alpha_i)`` per pixel: the final alpha does not depend on the depth order, so no sort.
    (The renderer's early termination only changes pixels whose alpha is already above 0.9999.)
    """
    from ..render import torch_backend as tb

    dev = g["means"].device
    B, H, W = len(cams), cams.height, cams.width
    means2d, conics, _, radii = tb.project(g["means"], g["quats"], torch.exp(g["scales"]), g["opacities"],
                                           cams.viewmats.float(), cams.Ks.float(), W, H)
    if max_pairs is None:
        max_pairs = (1 << 25) if dev.type == "cuda" else (1 << 22)
    log_t = torch.zeros(B * H * W, dtype=torch.float32, device=dev)
    vis = (radii[..., 0] > 0) | (radii[..., 1] > 0)
    bi, gi = vis.nonzero(as_tuple=True)
    m2, r = means2d[bi, gi], radii[bi, gi].float()
    lo = torch.floor(m2 - r).long()
    hi = torch.ceil(m2 + r).long()
    x0, x1 = lo[:, 0].clamp(0, W), hi[:, 0].clamp(0, W)
    y0, y1 = lo[:, 1].clamp(0, H), hi[:, 1].clamp(0, H)
    start = torch.stack([y0, x0], dim=1)
    size = torch.stack([y1 - y0, x1 - x0], dim=1).clamp_min(0)
    table = torch.cat([m2, conics[bi, gi], g["opacities"][gi, None]], dim=1)
    for k, cell in box_cells(start, size, max_pairs):
        row = table[k]
        dx = row[:, 0] - (cell[:, 1].float() + 0.5)
        dy = row[:, 1] - (cell[:, 0].float() + 0.5)
        sigma = 0.5 * (row[:, 2] * dx * dx + row[:, 4] * dy * dy) + row[:, 3] * dx * dy
        a = torch.clamp_max(row[:, 5] * torch.exp(-sigma), tb.MAX_ALPHA)
        a = torch.where((sigma >= 0) & (a >= tb.ALPHA_THRESHOLD), a, torch.zeros_like(a))
        log_t.index_add_(0, (bi[k] * H + cell[:, 0]) * W + cell[:, 1], torch.log1p(-a))
    return 1.0 - torch.exp(log_t).reshape(B, H, W)


def silhouette_iso(
    grid: Dict[str, object],
    n_views: int = 16,
    image_size: int = 96,
    levels: int = 64,
    tolerance: float = 0.0,
) -> Tuple[float, float, Dict[str, np.ndarray]]:
    """The iso-level whose surface's silhouettes best match the Gaussians' own (see the module docstring).

    Args:
        grid: the output of :func:`density_grid`.
        n_views: cameras on Fibonacci directions over the sphere. image_size: their pixels per side.
        levels: candidate levels, log-spaced from 1/255 to the largest value along any ray.
        tolerance: the highest level whose mean IoU is within this of the best is chosen; 0 (default) takes
            the best level itself (see the comment in the code for the measured trade-off).

    Returns:
        (level, mean IoU at that level, ``{"levels": [L], "iou": [L]}`` the whole curve).

    Raises:
        SplatgenError: the Gaussians cover no pixel with alpha > 0.5 from any of the views.
    """
    g = grid["gaussians"]
    density: Tensor = grid["density"]
    origin: Tensor = grid["origin"]
    h: float = grid["voxel_size"]
    dev = density.device
    X, Y, Z = density.shape
    hi = origin + h * torch.tensor([X - 1, Y - 1, Z - 1], dtype=torch.float32, device=dev)
    centre = 0.5 * (origin + hi)
    radius = 0.5 * float((hi - origin).norm())
    cams = _sphere_cameras(centre, radius, n_views, image_size)
    alpha = gaussian_alpha(g, cams)
    sil = alpha > ALPHA_ISO
    if not bool(sil.any()):
        raise SplatgenError("the Gaussians render no pixel with alpha > 0.5 from any direction (too faint to have a "
                            "surface): pass a fixed iso level, e.g. iso=0.1, or check the opacities")
    peak = _max_projection(density, origin, h, cams)
    top = float(peak.max())
    if top <= 1.0 / 255.0:
        raise SplatgenError(f"the density grid peaks at {top:.3g}: no surface; pass a finer resolution or a lower iso")
    cand = torch.logspace(math.log10(1.0 / 255.0), math.log10(top * 0.999), levels, device=dev)
    inter = ((peak[None] > cand[:, None, None, None]) & sil[None]).sum(dim=(2, 3)).float()
    union = ((peak[None] > cand[:, None, None, None]) | sil[None]).sum(dim=(2, 3)).float()
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union)).mean(dim=1)
    # The curve can be flat near its top (dense opaque Gaussians: 0.968-0.972 for levels 0.004-0.06 on the
    # known-answer teapot), where the differences are far below one pixel along the outline (a one-pixel
    # shift of a 60-pixel object's outline changes IoU by ~7%). A tolerance takes the highest level within
    # it of the best. Measured (benchmarks/export_mesh.py), tolerance 0.01 against 0: Chamfer 0.0225 vs
    # 0.0236 and IoU 0.814 vs 0.797 on Gaussians lying on the true surface, but 0.0538 vs 0.0511 and 0.680
    # vs 0.700 on generated runs, which are what gets meshed: the default takes the best level itself.
    ok = (iou >= iou.max() - tolerance).nonzero().squeeze(1)
    best = int(ok.max())
    return float(cand[best]), float(iou[best]), {"levels": cand.cpu().numpy(), "iou": iou.cpu().numpy()}


# ----------------------------------------------------------------------------------------- surface
def _fill_interior(density: np.ndarray, level: float) -> np.ndarray:
    """The density with every voxel that is below ``level`` but enclosed by voxels above it (unreachable
    from the grid's border through voxels below the level) raised above the level."""
    from scipy import ndimage

    solid = density > level
    filled = ndimage.binary_fill_holes(solid)
    holes = filled & ~solid
    if holes.any():
        density = density.copy()
        density[holes] = 2.0 * level + 1e-3
    return density


def _marching_cubes(density: np.ndarray, level: float, origin: np.ndarray, h: float) -> Tuple[np.ndarray, np.ndarray]:
    from skimage import measure

    verts, faces, _, _ = measure.marching_cubes(density, level=level, spacing=(h, h, h), method="lewiner",
                                                allow_degenerate=False)
    return (verts + origin[None]).astype(np.float64), faces.astype(np.int64)


def _face_normals_area(v: np.ndarray, f: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return cross, 0.5 * np.linalg.norm(cross, axis=1)


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def _keep_components(v: np.ndarray, f: np.ndarray, min_fraction: float) -> Tuple[np.ndarray, np.ndarray, int]:
    """Drop connected components (sharing vertices) whose area is below ``min_fraction`` of the largest's."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nv = v.shape[0]
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    adj = coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(nv, nv))
    n_comp, label = connected_components(adj, directed=False)
    if n_comp <= 1:
        return v, f, 0
    _, area = _face_normals_area(v, f)
    comp_area = np.bincount(label[f[:, 0]], weights=area, minlength=n_comp)
    keep_comp = comp_area >= min_fraction * comp_area.max()
    face_keep = keep_comp[label[f[:, 0]]]
    f = f[face_keep]
    used = np.unique(f)
    remap = np.full(nv, -1, dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    dropped = int((~keep_comp & (np.bincount(label, minlength=n_comp) > 0)).sum())
    return v[used], remap[f], dropped


def _drop_degenerate(f: np.ndarray) -> np.ndarray:
    """Without faces that repeat a vertex, and without pairs of faces on the same three vertices (a collapse
    can fold two faces onto each other, back to back: a pocket of no volume); a face repeated with the same
    winding is kept once."""
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, first, inv, counts = np.unique(np.sort(f, axis=1), axis=0, return_index=True, return_inverse=True,
                                      return_counts=True)
    inv = inv.reshape(-1)
    if counts.max(initial=1) == 1:
        return f
    # a cyclic rotation that puts the smallest index first tells the winding apart
    rot = np.argmin(f, axis=1)
    canon = np.stack([f[np.arange(len(f)), rot], f[np.arange(len(f)), (rot + 1) % 3]], axis=1)
    keep = np.ones(len(f), dtype=bool)
    for group in np.nonzero(counts > 1)[0]:
        members = np.nonzero(inv == group)[0]
        forward = members[canon[members, 1] == canon[members[0], 1]]
        backward = np.setdiff1d(members, forward)
        n = min(len(forward), len(backward))  # back-to-back pairs cancel
        keep[members] = False
        rest = forward[n:] if len(forward) > n else backward[n:]
        keep[rest[:1]] = True
    return f[keep]


def _decimate(v: np.ndarray, f: np.ndarray, target: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Quadric edge-collapse decimation (fast-simplification) to ``target`` faces, or None when the result
    is not watertight. Its collapses pinch two nearby sheets onto one edge now and then (an edge of four
    faces); on the generated runs every setting of its aggressiveness (3-7) did so at 20k faces, and the
    settings that avoid it stop far short of the target."""
    import fast_simplification

    v2, f2 = fast_simplification.simplify(v.astype(np.float64), f.astype(np.int32), target_count=int(target))
    f2 = _drop_degenerate(np.asarray(f2, dtype=np.int64))
    if not _is_watertight(f2):
        return None
    used = np.unique(f2)
    remap = np.full(v2.shape[0], -1, dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    return np.asarray(v2, dtype=np.float64)[used], remap[f2]


def _coarse_marching_cubes(density: np.ndarray, level: float, origin: np.ndarray, h: float, faces: int,
                           target: int) -> Tuple[np.ndarray, np.ndarray]:
    """Marching cubes on the grid resampled (trilinear) to the node count that gives about ``target`` faces
    (faces grow as the square of the resolution); closed by construction."""
    shape = np.array(density.shape)
    factor = math.sqrt(target / faces)
    new = np.maximum((shape - 1) * factor, 2).astype(int) + 1
    vol = torch.from_numpy(np.ascontiguousarray(density))[None, None]
    small = F.interpolate(vol, size=tuple(int(n) for n in new), mode="trilinear", align_corners=True)[0, 0].numpy()
    spacing = h * (shape - 1) / (new - 1)
    from skimage import measure

    verts, tris, _, _ = measure.marching_cubes(small, level=level, spacing=tuple(spacing), method="lewiner",
                                               allow_degenerate=False)
    return (verts + origin[None]).astype(np.float64), tris.astype(np.int64)


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    cross, _ = _face_normals_area(v, f)  # |cross| = 2 * area: area-weighted
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], cross)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


def _is_watertight(f: np.ndarray) -> bool:
    """Every undirected edge used by exactly two faces, once in each direction (closed and consistently wound)."""
    if f.shape[0] == 0:
        return False
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    directed = np.unique(e, axis=0, return_counts=True)[1]
    if directed.max() > 1:
        return False
    und = np.unique(np.sort(e, axis=1), axis=0, return_counts=True)[1]
    return bool((und == 2).all())


# ----------------------------------------------------------------------------------------- UVs and texture
def _unwrap(v: np.ndarray, f: np.ndarray, texture_size: int, padding: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts packed into one atlas: (vertex ids [V'], faces [F, 3], uvs [V', 2] in [0, 1], v up).

    The texel density is set so the atlas comes out about ``texture_size`` on a side at xatlas' usual
    packing efficiency; its UVs are normalised by the atlas' own width and height, so they span the
    ``texture_size`` square whatever size the packer ended with (a few percent of anisotropic scale)."""
    import xatlas

    area = float(_face_normals_area(v, f)[1].sum())
    pack = xatlas.PackOptions()
    pack.padding = int(padding)
    pack.bilinear = True
    pack.rotate_charts = True
    pack.texels_per_unit = float(math.sqrt(0.7 * texture_size * texture_size / max(area, 1e-12)))
    atlas = xatlas.Atlas()
    atlas.add_mesh(v.astype(np.float32), f.astype(np.uint32))
    atlas.generate(xatlas.ChartOptions(), pack)
    assert atlas.atlas_count == 1, "xatlas made several atlases without a resolution limit"
    vmap, faces, uvs = atlas[0]
    # xatlas' v grows with the image row; OpenGL/OBJ's v grows upwards (row 0 of the image is v = 1)
    uvs = np.asarray(uvs, dtype=np.float64).copy()
    uvs[:, 1] = 1.0 - uvs[:, 1]
    return np.asarray(vmap, dtype=np.int64), np.asarray(faces, dtype=np.int64), uvs


def _bake(
    v: np.ndarray,
    f: np.ndarray,
    uvs: np.ndarray,
    grid: Dict[str, object],
    texture_size: int,
    max_pairs: int = 1 << 22,
) -> np.ndarray:
    """[T, T, 3] uint8: each covered texel's colour from the grid at its 3D point, the rest by nearest
    covered texel."""
    from scipy import ndimage

    density: Tensor = grid["density"]
    colour: Tensor = grid["colour"]
    dev = density.device
    T = texture_size
    vt = torch.as_tensor(v, dtype=torch.float32, device=dev)
    ft = torch.as_tensor(f, dtype=torch.long, device=dev)
    # texel coordinates: column x = u T, row y = (1 - v) T; texel (row r, col c) has its centre at (c + .5, r + .5)
    uv = torch.as_tensor(uvs, dtype=torch.float32, device=dev)
    pix = torch.stack([uv[:, 0] * T, (1.0 - uv[:, 1]) * T], dim=-1)
    tri = pix[ft]  # [F, 3, 2]
    lo = torch.floor(tri.amin(1) - 1.5).long().clamp(0, T - 1)
    hi = torch.ceil(tri.amax(1) + 0.5).long().clamp(0, T - 1)
    size = hi - lo + 1
    # a texel is covered when its centre lies within REACH texels of a triangle (conservative rasterisation:
    # thin charts get texels too, and bilinear taps just outside a chart's edge read that chart); the
    # nearest triangle wins. Charts are `padding` (> 2 REACH) texels apart, so no texel is claimed twice.
    reach = 0.75
    best = torch.full((T * T,), float("inf"), device=dev)
    point = torch.zeros(T * T, 3, device=dev)
    a0, a1, a2 = tri[:, 0], tri[:, 1], tri[:, 2]
    det = (a1[:, 0] - a0[:, 0]) * (a2[:, 1] - a0[:, 1]) - (a2[:, 0] - a0[:, 0]) * (a1[:, 1] - a0[:, 1])
    # altitude onto each edge (opposite vertex i), in texels: turns a negative barycentric into a distance
    edge_len = torch.stack([(a2 - a1).norm(dim=1), (a0 - a2).norm(dim=1), (a1 - a0).norm(dim=1)], dim=1)
    altitude = det.abs()[:, None] / edge_len.clamp_min(1e-12)
    ok = det.abs() > 1e-12
    for face, cell in box_cells(lo.flip(-1), size.flip(-1), max_pairs):  # cells as (row, col)
        sel = ok[face]
        face, cell = face[sel], cell[sel]
        p = cell.flip(-1).float() + 0.5  # texel centre (x = col + .5, y = row + .5)
        d = det[face]
        b1 = ((p[:, 0] - a0[face, 0]) * (a2[face, 1] - a0[face, 1]) - (a2[face, 0] - a0[face, 0]) * (p[:, 1] - a0[face, 1])) / d
        b2 = ((a1[face, 0] - a0[face, 0]) * (p[:, 1] - a0[face, 1]) - (p[:, 0] - a0[face, 0]) * (a1[face, 1] - a0[face, 1])) / d
        b = torch.stack([1.0 - b1 - b2, b1, b2], dim=1)
        dist = (-b * altitude[face]).amax(dim=1).clamp_min(0.0)
        near = dist <= reach
        if not bool(near.any()):
            continue
        face, cell, b, dist = face[near], cell[near], b[near].clamp_min(0), dist[near]
        b = b / b.sum(1, keepdim=True)
        flat = cell[:, 0] * T + cell[:, 1]
        best.scatter_reduce_(0, flat, dist, reduce="amin")
        win = dist <= best[flat]
        point[flat[win]] = (b[win, :, None] * vt[ft[face[win]]]).sum(1)
    covered = torch.isfinite(best)
    rgb = torch.zeros(T * T, 3, device=dev)
    if bool(covered.any()):
        vol = torch.cat([density[..., None], colour], dim=-1)
        s = _sample_grid(vol, grid["origin"], grid["voxel_size"], point[covered])
        dens = s[:, :1]
        good = dens[:, 0] > 1e-8
        rgb_c = torch.where(good[:, None], s[:, 1:] / dens.clamp_min(1e-8), torch.zeros_like(s[:, 1:]))
        rgb[covered] = rgb_c.clamp(0, 1)
        idx = covered.nonzero().squeeze(1)
        covered[idx[~good]] = False
    img = (rgb.reshape(T, T, 3).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    mask = covered.reshape(T, T).cpu().numpy()
    if mask.any() and not mask.all():
        _, (ri, ci) = ndimage.distance_transform_edt(~mask, return_indices=True)
        img = img[ri, ci]
    return img


# ----------------------------------------------------------------------------------------- public API
def mesh_from_gaussians(
    params,
    resolution: int = 128,
    iso: Optional[float] = None,
    iso_rule: str = "silhouette",
    *,
    bounds: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
    fill_interior: bool = True,
    min_component_fraction: float = 0.05,
    target_faces: Optional[int] = 20000,
    texture_size: int = 1024,
    padding: int = 4,
    iso_views: int = 16,
    iso_image_size: int = 96,
    iso_tolerance: float = 0.0,
) -> MeshResult:
    """A closed, textured triangle mesh of the Gaussians (the module docstring gives each stage).

    Args:
        params: a :class:`~splatgen.gaussians.GaussianModel` or a dict of tensors in gsplat's layout:
            ``means [N,3]``, ``scales [N,3]`` (log), ``quats [N,4]`` (w x y z), ``opacities [N]`` (logit),
            ``sh0 [N,1,3]``; ``shN`` is ignored (the texture is view-independent). Work runs on their device.
        resolution: grid nodes along the box's longest side (time and memory grow as its cube).
        iso: a fixed density level; None picks it by ``iso_rule``.
        iso_rule: ``'silhouette'`` (match the Gaussians' rendered silhouettes) or ``'alpha'`` (0.5).
        bounds: ``(lo, hi)`` world box to mesh; default: around every Gaussian that renders.
        fill_interior: fill enclosed hollows (no inner surface).
        min_component_fraction: drop connected parts with less than this fraction of the largest part's area.
        target_faces: decimate to about this many triangles when there are more; None keeps all.
        texture_size: side of the square texture in texels. padding: texels between UV charts.
        iso_views, iso_image_size, iso_tolerance: cameras, their size and the IoU tolerance of the
            ``'silhouette'`` rule (:func:`silhouette_iso`; tolerance 0 takes the best level itself).

    Raises:
        SplatgenError: no Gaussians, all non-finite, a bad option, or no surface at the iso-level (the
            message says what to change).
    """
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    if iso_rule not in ISO_RULES:
        raise SplatgenError(f"iso_rule={iso_rule!r} is not allowed; choose one of {list(ISO_RULES)}")
    if iso is not None and not (isinstance(iso, (int, float)) and math.isfinite(iso) and iso > 0):
        raise SplatgenError(f"iso must be a positive number (a level of the opacity density), got {iso!r}")
    if target_faces is not None and target_faces < 100:
        raise SplatgenError(f"target_faces must be at least 100 (or None for no decimation), got {target_faces}")
    if texture_size < 16:
        raise SplatgenError(f"texture_size must be at least 16 texels, got {texture_size}")
    if not 0.0 <= min_component_fraction <= 1.0:
        raise SplatgenError(f"min_component_fraction must be in [0, 1], got {min_component_fraction}")

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = now - t0
        return now

    t0 = time.perf_counter()
    g = _gaussian_tensors(params)
    grid = density_grid(g, resolution, bounds=bounds)
    density: Tensor = grid["density"]
    if density.is_cuda:
        torch.cuda.synchronize()
    t0 = lap("grid", t0)

    iou = None
    if iso is not None:
        level, rule = float(iso), "given"
    elif iso_rule == "alpha":
        level, rule = ALPHA_ISO, "alpha"
    else:
        level, iou, _ = silhouette_iso(grid, iso_views, iso_image_size, tolerance=iso_tolerance)
        rule = "silhouette"
    t0 = lap("iso", t0)

    dens = density.cpu().numpy()
    top = float(dens.max())
    if not top > level:
        raise SplatgenError(
            f"no surface at iso-level {level:.4g}: the opacity density of these Gaussians peaks at {top:.4g}; pass "
            f"a lower iso (e.g. iso={0.5 * top:.3g}) or let the level be chosen (iso=None)")
    if fill_interior:
        dens = _fill_interior(dens, level)
    origin = grid["origin"].cpu().numpy().astype(np.float64)
    h = float(grid["voxel_size"])
    v, f = _marching_cubes(dens, level, origin, h)
    if f.shape[0] == 0:
        raise SplatgenError(f"no surface at iso-level {level:.4g} (marching cubes found no crossing); pass a lower iso")
    if _signed_volume(v, f) < 0:
        f = f[:, ::-1].copy()
    t0 = lap("marching_cubes", t0)

    v, f, dropped = _keep_components(v, f, min_component_fraction)
    faces_before = int(f.shape[0])
    t0 = lap("cleanup", t0)
    decimation = None
    if target_faces is not None and f.shape[0] > target_faces:
        reduced = _decimate(v, f, target_faces)
        if reduced is not None:
            (v, f), decimation = reduced, "quadric"
        else:  # a coarser grid instead: closed by construction
            v, f = _coarse_marching_cubes(dens, level, origin, h, faces_before, target_faces)
            v, f, more = _keep_components(v, f, min_component_fraction)
            dropped += more
            decimation = "grid"
        if _signed_volume(v, f) < 0:
            f = f[:, ::-1].copy()
    t0 = lap("decimate", t0)

    watertight = _is_watertight(f)
    normals = _vertex_normals(v, f)
    vmap, f_uv, uvs = _unwrap(v, f, texture_size, padding)
    t0 = lap("uv", t0)
    texture = _bake(v[vmap], f_uv, uvs, grid, texture_size)
    t0 = lap("bake", t0)
    timings["total"] = time.perf_counter() - t_start

    lo = tuple(float(x) for x in origin)
    hi = tuple(float(o + h * (n - 1)) for o, n in zip(origin, density.shape))
    return MeshResult(
        vertices=v[vmap].astype(np.float32), faces=f_uv, uvs=uvs.astype(np.float32), texture=texture,
        normals=normals[vmap].astype(np.float32), vertex_ids=vmap, iso=level, iso_rule=rule,
        iso_silhouette_iou=iou, resolution=int(resolution), voxel_size=h, bounds=(lo, hi),
        num_gaussians=int(g["means"].shape[0]), faces_before_decimation=faces_before, decimation=decimation,
        components_dropped=dropped,
        watertight=watertight, timings=timings,
    )


# ----------------------------------------------------------------------------------------- files
def write_glb(result: MeshResult, path: str | Path, up: str = "y") -> Path:
    """Write ``result`` as a binary glTF with its texture as the material's ``baseColorTexture`` (atomic)."""
    up_rotation(up)  # validates before any work
    return atomic_write_bytes(path, result.to_trimesh(up).export(file_type="glb"))


def _obj_text(result: MeshResult, R: np.ndarray, mtl_name: str) -> str:
    v = result.vertices.astype(np.float64) @ R.T
    n = result.normals.astype(np.float64) @ R.T
    f = result.faces + 1
    lines = ["# splatgen textured mesh", f"mtllib {mtl_name}", "o splatgen"]
    lines += [f"v {a:.7g} {b:.7g} {c:.7g}" for a, b, c in v]
    lines += [f"vt {a:.7g} {b:.7g}" for a, b in result.uvs]
    lines += [f"vn {a:.6g} {b:.6g} {c:.6g}" for a, b, c in n]
    lines.append("usemtl splatgen")
    lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in f]
    return "\n".join(lines) + "\n"


def write_obj(result: MeshResult, path: str | Path, up: str = "y") -> List[Path]:
    """Write ``path`` (``.obj``), ``<stem>.mtl`` and ``<stem>.png`` beside it (atomic, the ``.obj`` last).

    Returns the three paths written (obj, mtl, png)."""
    from PIL import Image

    R = up_rotation(up)
    path = Path(path)
    mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
    # Everything is encoded before anything is written; then the texture and the material, and the .obj that names
    # them last, so a reader never finds a dangling .obj; a failing write removes what this call wrote.
    buf = io.BytesIO()
    Image.fromarray(result.texture).save(buf, format="PNG")
    files = [(png, buf.getvalue()),
             (mtl, ("# splatgen material\nnewmtl splatgen\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nNs 0\nd 1\nillum 1\n"
                    f"map_Kd {png.name}\n").encode()),
             (path, _obj_text(result, R, mtl.name).encode())]
    written: List[Path] = []
    try:
        for p, data in files:
            written.append(atomic_write_bytes(p, data))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return [path, mtl, png]


def export_mesh(params, path: str | Path, *, up: str = "y", **options) -> MeshResult:
    """Mesh the Gaussians (:func:`mesh_from_gaussians` with ``options``) and write ``path``.

    The format follows the extension: ``.glb`` (binary glTF, texture embedded) or ``.obj`` (with
    ``<stem>.mtl`` and ``<stem>.png`` beside it). ``up`` is the file's up axis (:data:`UP_AXES`; default
    ``'y'``, glTF's convention, front facing +Z). Nothing is written when anything fails.

    Raises:
        SplatgenError: an unknown extension or ``up``, or any error of :func:`mesh_from_gaussians`.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in MESH_FORMATS:
        raise SplatgenError(f"cannot write a mesh as {path.name!r}: the extension must be one of {list(MESH_FORMATS)}")
    up_rotation(up)
    result = mesh_from_gaussians(params, **options)
    t0 = time.perf_counter()
    if ext == ".glb":
        write_glb(result, path, up)
    else:
        write_obj(result, path, up)
    result.timings["write"] = time.perf_counter() - t0
    result.path = path
    return result
