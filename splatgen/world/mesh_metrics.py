"""Metrics of an exported mesh against its world object's ground truth, and a small exact mesh rasteriser.

The rasteriser (:func:`rasterize_mesh`) is the mesh counterpart of the ground-truth ray caster: one sample
at each pixel centre (pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``, as gsplat and
:mod:`~splatgen.world.raycast`), triangles projected with the cameras' ``viewmats`` (world-to-camera,
OpenCV axes) and ``Ks``, a sample covered when it lies inside or on the edge of the projected triangle
(edge functions, either winding), the nearest covering triangle kept (perspective-correct depth), and
perspective-correct barycentrics. It enumerates the (triangle, pixel) pairs of each triangle's screen
bounding box in chunks, like the Gaussian rasteriser, so time grows with the covered area, not with
``pixels x triangles``. It is exact in the sense that matters here: a pixel centre is covered if and only
if it is in a projected triangle (up to float32 rounding on shared edges, where either neighbour wins).

Metrics (:func:`evaluate_mesh`, views and thresholds as :mod:`splatgen.world.metrics`):

- ``chamfer`` / ``chamfer_acc`` / ``chamfer_comp``: symmetric, mesh -> truth and truth -> mesh Chamfer
  distances (world units, mean unsquared nearest-neighbour distances) between ``n_surface`` points sampled
  uniformly by area on the mesh and as many on the true surface
  (:func:`~splatgen.world.raycast.sample_surface`). Surface to surface, unlike the Gaussians' Chamfer of
  :mod:`~splatgen.world.metrics`, which uses their centres.
- ``iou``: silhouette IoU over the held-out cameras, the mesh's coverage (2x2 supersampled, ``> 0.5``) vs
  the ray-cast ground truth's (same supersampling and threshold).
- ``psnr_fg``: PSNR of the textured mesh, unlit (the texture holds the Gaussians' colours, which hold the
  world's shading) over white, on the ground truth's foreground pixels.
- ``watertight``: trimesh's ``is_watertight`` of the welded mesh (every edge shared by exactly two faces),
  with ``winding_consistent`` and ``volume`` beside it.
- ``faces``, ``vertices``, and ``seconds`` (the mesher's own total).

:func:`surface_gaussians` builds the known-answer input: flat Gaussians lying exactly on an object's true
surface with its shaded colours, no optimisation, so a mesher's error against the truth is its own.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras
from ..export.mesh import MeshResult, box_cells
from ..gaussians import rgb_to_sh0
from .grammar import WorldObject
from .metrics import chamfer_distance, heldout_cameras, psnr_foreground, silhouette_iou
from .raycast import DEFAULT_AMBIENT, DEFAULT_LIGHT, object_sdf, primitive_area, primitive_sdf, render_world, sample_surface

__all__ = ["evaluate_mesh", "mesh_silhouettes", "rasterize_mesh", "render_mesh", "sample_mesh_surface", "surface_gaussians",
           "watertightness"]

NEAR = 1e-3
"""Vertices closer to a camera than this (camera z) are refused: the rasteriser does not clip."""


def rasterize_mesh(vertices: Tensor, faces: Tensor, cameras: Cameras, max_pairs: Optional[int] = None) -> Dict[str, Tensor]:
    """Rasterise a triangle mesh into every camera (see the module docstring).

    Args:
        vertices: [V, 3] world positions. faces: [F, 3] vertex indices (any winding).
        cameras: B cameras; work happens on ``cameras.device``.
        max_pairs: (triangle, pixel) pairs tested at once; default 2^22 on the CPU, 2^25 on CUDA.

    Returns:
        ``face`` [B, H, W] long, the visible triangle (-1: none); ``bary`` [B, H, W, 3] its perspective-correct
        barycentrics; ``depth`` [B, H, W] camera z (0 where empty).

    Raises:
        ValueError: a vertex lies behind or within :data:`NEAR` of a camera.
    """
    dev = cameras.device
    B, H, W = len(cameras), cameras.height, cameras.width
    v = vertices.to(dev, torch.float32)
    f = faces.to(dev, torch.long)
    if max_pairs is None:
        max_pairs = (1 << 25) if dev.type == "cuda" else (1 << 22)
    face_img = torch.full((B, H * W), -1, dtype=torch.long, device=dev)
    bary_img = torch.zeros(B, H * W, 3, device=dev)
    depth_img = torch.zeros(B, H * W, device=dev)
    for b in range(B):
        vm = cameras.viewmats[b].float()
        K = cameras.Ks[b].float()
        cam = v @ vm[:3, :3].T + vm[:3, 3]
        z = cam[:, 2]
        if f.numel() and bool((z[f.reshape(-1)] <= NEAR).any()):
            raise ValueError("a mesh vertex lies behind or at a camera; this rasteriser does not clip")
        xy = torch.stack([K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]], dim=-1)
        tri = xy[f]  # [F, 3, 2]
        p0, p1, p2 = tri[:, 0], tri[:, 1], tri[:, 2]
        area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])
        # pixel centres (c + 0.5) inside the triangle's bounding box
        x0 = torch.ceil(tri[..., 0].amin(1) - 0.5).long().clamp(0, W)
        x1 = torch.floor(tri[..., 0].amax(1) - 0.5).long().clamp(-1, W - 1)
        y0 = torch.ceil(tri[..., 1].amin(1) - 0.5).long().clamp(0, H)
        y1 = torch.floor(tri[..., 1].amax(1) - 0.5).long().clamp(-1, H - 1)
        size = torch.stack([y1 - y0 + 1, x1 - x0 + 1], dim=1).clamp_min(0)
        live = (area.abs() > 1e-12) & (size > 0).all(dim=1)
        ids = live.nonzero().squeeze(1)
        inv_z = 1.0 / z[f[ids]]  # [F', 3]
        zbuf = torch.full((H * W,), float("inf"), device=dev)
        hits = []
        for k, cell in box_cells(torch.stack([y0, x0], dim=1)[ids], size[ids], max_pairs):
            px = cell[:, 1].float() + 0.5
            py = cell[:, 0].float() + 0.5
            a, q0, q1, q2 = area[ids[k]], p0[ids[k]], p1[ids[k]], p2[ids[k]]
            w0 = (q2[:, 0] - q1[:, 0]) * (py - q1[:, 1]) - (q2[:, 1] - q1[:, 1]) * (px - q1[:, 0])
            w1 = (q0[:, 0] - q2[:, 0]) * (py - q2[:, 1]) - (q0[:, 1] - q2[:, 1]) * (px - q2[:, 0])
            w2 = (q1[:, 0] - q0[:, 0]) * (py - q0[:, 1]) - (q1[:, 1] - q0[:, 1]) * (px - q0[:, 0])
            bary = torch.stack([w0, w1, w2], dim=1) / a[:, None]  # screen-space barycentrics
            inside = (bary >= 0).all(dim=1)
            if not bool(inside.any()):
                continue
            k, cell, bary = k[inside], cell[inside], bary[inside]
            iz = (bary * inv_z[k]).sum(1)  # 1/z is affine in screen space
            depth = 1.0 / iz
            pix = cell[:, 0] * W + cell[:, 1]
            zbuf.scatter_reduce_(0, pix, depth, reduce="amin")
            hits.append((k, pix, bary * inv_z[k] / iz[:, None], depth))
        for k, pix, bary, depth in hits:
            win = depth <= zbuf[pix]
            face_img[b, pix[win]] = ids[k[win]]
            bary_img[b, pix[win]] = bary[win]
            depth_img[b, pix[win]] = depth[win]
    return {"face": face_img.reshape(B, H, W), "bary": bary_img.reshape(B, H, W, 3), "depth": depth_img.reshape(B, H, W)}


def _supersampled(cameras: Cameras, ss: int) -> Cameras:
    return cameras if ss == 1 else cameras.resized(cameras.width * ss, cameras.height * ss)


def mesh_silhouettes(vertices: Tensor, faces: Tensor, cameras: Cameras, supersample: int = 2) -> Tensor:
    """[B, H, W, 1] coverage in [0, 1]: the fraction of the ``supersample^2`` sub-pixel centres the mesh
    covers (the same sub-pixel pattern as :func:`~splatgen.world.raycast.render_world`)."""
    ss = int(supersample)
    r = rasterize_mesh(vertices, faces, _supersampled(cameras, ss))
    B, H, W = len(cameras), cameras.height, cameras.width
    hit = (r["face"] >= 0).float().reshape(B, H, ss, W, ss).mean(dim=(2, 4))
    return hit[..., None]


def render_mesh(
    vertices: Tensor,
    faces: Tensor,
    uvs: Tensor,
    texture: Tensor,
    cameras: Cameras,
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0),
    supersample: int = 2,
) -> Dict[str, Tensor]:
    """Unlit textured render: each pixel shows the texture (bilinear, texel centres at ``(i + 0.5) / T``,
    ``v`` up) at its perspective-correct UV, box-filtered over ``supersample^2`` samples.

    Args:
        vertices [V, 3], faces [F, 3], uvs [V, 2] in [0, 1] (OpenGL convention), texture [T, T, 3] uint8 or
        float in [0, 1] (row 0 at the top); cameras; background RGB.

    Returns:
        ``rgb`` [B, H, W, 3] over the background, ``mask`` [B, H, W, 1] coverage.
    """
    ss = int(supersample)
    dev = cameras.device
    r = rasterize_mesh(vertices, faces, _supersampled(cameras, ss))
    B, H, W = len(cameras), cameras.height, cameras.width
    face, bary = r["face"], r["bary"]
    hit = face >= 0
    tex = torch.as_tensor(texture, device=dev)
    tex = tex.float() / 255.0 if tex.dtype == torch.uint8 else tex.float()
    uv = torch.as_tensor(uvs, dtype=torch.float32, device=dev)
    f = torch.as_tensor(faces, dtype=torch.long, device=dev)
    rgb = torch.as_tensor(background, dtype=torch.float32, device=dev).expand(B, H * ss, W * ss, 3).clone()
    if bool(hit.any()):
        fi, bi = face[hit], bary[hit]
        puv = (bi[:, :, None] * uv[f[fi]]).sum(1)  # [P, 2]
        grid = torch.stack([2.0 * puv[:, 0] - 1.0, 1.0 - 2.0 * puv[:, 1]], dim=-1).reshape(1, -1, 1, 2)
        col = F.grid_sample(tex.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        rgb[hit] = col.reshape(3, -1).T
    rgb = rgb.reshape(B, H, ss, W, ss, 3).mean(dim=(2, 4))
    mask = hit.float().reshape(B, H, ss, W, ss).mean(dim=(2, 4))[..., None]
    return {"rgb": rgb, "mask": mask}


def sample_mesh_surface(vertices: Tensor, faces: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` points [n, 3] uniform by area on the mesh (float32, CPU), deterministic under ``generator``."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v = torch.as_tensor(vertices, dtype=torch.float64).cpu()
    f = torch.as_tensor(faces, dtype=torch.long).cpu()
    tri = v[f]
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1)
    if f.shape[0] == 0 or float(area.sum()) <= 0:
        raise ValueError("the mesh has no area to sample")
    pick = torch.multinomial(area, n, replacement=True, generator=g)
    r1 = torch.rand(n, generator=g, dtype=torch.float64).sqrt()
    r2 = torch.rand(n, generator=g, dtype=torch.float64)
    t = tri[pick]
    p = (1 - r1)[:, None] * t[:, 0] + (r1 * (1 - r2))[:, None] * t[:, 1] + (r1 * r2)[:, None] * t[:, 2]
    return p.float()


def watertightness(vertices: np.ndarray, faces: np.ndarray) -> Dict[str, Any]:
    """trimesh's view of a welded mesh: ``watertight``, ``winding_consistent``, ``volume`` (None if not closed)."""
    import trimesh

    m = trimesh.Trimesh(vertices=np.asarray(vertices, dtype=np.float64), faces=np.asarray(faces), process=False)
    tight = bool(m.is_watertight)
    return {"watertight": tight, "winding_consistent": bool(m.is_winding_consistent),
            "volume": float(m.volume) if tight else None}


def evaluate_mesh(
    mesh: MeshResult,
    obj: WorldObject,
    n_views: int = 16,
    resolution: int = 64,
    supersample: int = 2,
    n_surface: int = 8192,
    device: torch.device | str = "cpu",
) -> Dict[str, Any]:
    """All metrics of the module docstring for ``mesh`` (from :func:`splatgen.export.mesh.mesh_from_gaussians`)
    against the world object ``obj``."""
    dev = torch.device(device)
    cams = heldout_cameras(n_views, resolution, device=dev)
    gt = render_world(obj, cams, supersample=supersample)
    v = torch.as_tensor(mesh.vertices, device=dev)
    f = torch.as_tensor(mesh.faces, device=dev)
    out = render_mesh(v, f, torch.as_tensor(mesh.uvs), torch.as_tensor(mesh.texture), cams, supersample=supersample)
    g = torch.Generator().manual_seed(0)
    surface = sample_surface(obj, n_surface, g)
    pts = sample_mesh_surface(mesh.vertices, mesh.faces, n_surface, g)
    acc, comp = chamfer_distance(pts.to(dev), surface.to(dev))
    wv, wf = mesh.welded()
    return {
        "caption": obj.caption,
        "n_views": n_views,
        "resolution": resolution,
        "chamfer": 0.5 * (acc + comp),
        "chamfer_acc": acc,
        "chamfer_comp": comp,
        "iou": float(silhouette_iou(out["mask"], gt["mask"]).mean()),
        "psnr_fg": psnr_foreground(out["rgb"], gt["rgb"], gt["mask"]),
        **watertightness(wv, wf),
        "faces": mesh.num_faces,
        "vertices": int(wv.shape[0]),
        "iso": mesh.iso,
        "iso_rule": mesh.iso_rule,
        "seconds": mesh.timings.get("total", math.nan),
    }


def _quats_from_normals(n: Tensor) -> Tensor:
    """[N, 4] unit quaternions (w x y z) of the rotations taking +Z to the unit vectors ``n`` [N, 3]."""
    z = torch.zeros_like(n)
    z[:, 2] = 1.0
    axis = torch.linalg.cross(z, n)
    s = axis.norm(dim=-1)
    half = 0.5 * torch.atan2(s, n[:, 2])
    fallback = torch.zeros_like(n)
    fallback[:, 0] = 1.0  # n = -z: half a turn about x
    axis = torch.where(s[:, None] > 1e-9, axis / s.clamp_min(1e-12)[:, None], fallback)
    return torch.cat([torch.cos(half)[:, None], torch.sin(half)[:, None] * axis], dim=1)


def surface_gaussians(
    obj: WorldObject,
    n: int = 4000,
    opacity: float = 0.9,
    flatness: float = 0.2,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, Tensor]:
    """Gaussians (gsplat's layout, CPU, SH degree 0) lying on the true surface of ``obj``: no optimisation.

    Centres are ``n`` uniform samples of the surface (:func:`~splatgen.world.raycast.sample_surface`); each
    Gaussian is a disc in the tangent plane (normal from the gradient of the object's SDF) with standard
    deviation ``sqrt(area / n)`` along the surface, so neighbours overlap, and ``flatness`` times that along
    the normal; colour = the nearest primitive's colour with the ray caster's shading at that normal
    (``colour * (ambient + (1 - ambient)(0.5 + 0.5 n.l))``), as a model trained on the ground-truth views
    would hold it.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    p = sample_surface(obj, n, g).double()
    x = p.clone().requires_grad_(True)
    with torch.enable_grad():
        object_sdf(obj, x).sum().backward()
    normal = F.normalize(x.grad, dim=-1)
    nearest = torch.stack([primitive_sdf(q, p).abs() for q in obj.primitives]).argmin(0)
    colour = torch.tensor([q.colour for q in obj.primitives], dtype=torch.float64)[nearest]
    light = F.normalize(torch.tensor(DEFAULT_LIGHT, dtype=torch.float64), dim=0)
    shade = DEFAULT_AMBIENT + (1.0 - DEFAULT_AMBIENT) * (0.5 + 0.5 * (normal @ light))
    rgb = (colour * shade[:, None]).clamp(0, 1).float()
    sd = math.sqrt(sum(primitive_area(q) for q in obj.primitives) / n)
    scales = torch.log(torch.tensor([sd, sd, sd * flatness])).expand(n, 3).clone()
    return {
        "means": p.float(),
        "scales": scales,
        "quats": _quats_from_normals(normal).float(),
        "opacities": torch.full((n,), math.log(opacity / (1.0 - opacity))),
        "sh0": rgb_to_sh0(rgb)[:, None, :],
        "shN": torch.zeros(n, 0, 3),
    }
