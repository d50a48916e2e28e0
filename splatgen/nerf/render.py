"""Volume rendering of a :class:`NeRFField` with empty-space skipping, in plain PyTorch.

The algorithm is stable-dreamfusion's non-``cuda_ray`` path (``NeRFRenderer.run``): rays are clipped to the
AABB ``[-bound, bound]^3`` (near clamped to ``min_near``), a coarse pass of ``num_steps`` stratified samples
(jittered when ``perturb``) is evaluated without gradients, ``upsample_steps`` more samples are drawn from its
weights by inverse-CDF sampling, and the sorted union is evaluated with gradients and composited::

    alpha_i = 1 - exp(-sigma_i delta_i),   T_i = prod_{j<i} (1 - alpha_j),   w_i = alpha_i T_i

(``T_i`` is computed as ``exp(-sum_{j<i} sigma_j delta_j)``, the same product). Samples in cells the
occupancy grid marks empty are never evaluated (their density is 0): the sample set is compacted with the
grid's mask, evaluated, and scattered back. Rays that miss the box are skipped entirely.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from ..cameras import Cameras

SHADINGS = ("albedo", "lambertian", "textureless", "normal")
MIN_NEAR = 0.01


@dataclass
class NerfRenderOutput:
    """What :func:`render_nerf` returns (B cameras, H x W pixels).

    Attributes:
        rgb: [B, H, W, 3] composited over the background.
        alpha: [B, H, W, 1] accumulated opacity (sum of the weights).
        depth: [B, H, W, 1] expected camera-space z, ``sum(w_i z_i) / alpha``; 0 where alpha = 0.
        normals: [B, H, W, 3] weight-composited world normals (not renormalised, 0 background) when the
            shading needed normals, else None.
        losses: 0-dim tensors over the batch: ``entropy`` (binary entropy of alpha, log2), ``opacity``
            (mean alpha) and, when normals were computed, ``orient`` (per ray ``sum_i w_i relu(n_i . d)^2``
            with the weights detached, mean over rays).
        stats: ``rays``, ``rays_hit``, ``samples`` (samples of the hit rays, both passes),
            ``samples_evaluated`` (those the field was evaluated at, normals' extra points not counted).
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normals: Optional[Tensor]
    losses: Dict[str, Tensor]
    width: int
    height: int
    stats: Dict[str, int] = dc_field(default_factory=dict)


def camera_rays(cameras: Cameras, dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor, Tensor]:
    """World-space ray origins and unit directions [B, H, W, 3] through the pixel centres (``+0.5``), and the
    factor [B, H, W] turning distance along the ray into camera z."""
    B, H, W = len(cameras), cameras.height, cameras.width
    dev = cameras.device
    K = cameras.Ks.to(dtype)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    u = torch.arange(W, dtype=dtype, device=dev) + 0.5
    v = torch.arange(H, dtype=dtype, device=dev) + 0.5
    xc = (u[None, None, :] - cx[:, None, None]) / fx[:, None, None]  # [B, 1, W]
    yc = (v[None, :, None] - cy[:, None, None]) / fy[:, None, None]  # [B, H, 1]
    xc, yc = torch.broadcast_tensors(xc, yc)
    d_cam = torch.stack([xc, yc, torch.ones_like(xc)], -1)  # [B, H, W, 3]
    norm = d_cam.norm(dim=-1)
    R = cameras.viewmats[:, :3, :3].to(dtype)  # world -> camera
    t = cameras.viewmats[:, :3, 3].to(dtype)
    dirs = torch.einsum("bhwj,bjk->bhwk", d_cam / norm[..., None], R)  # R^T d
    origin = -torch.einsum("bji,bj->bi", R, t)  # camera centre -R^T t
    return origin[:, None, None, :].expand_as(dirs).contiguous(), dirs, 1.0 / norm


def ray_aabb(o: Tensor, d: Tensor, bound: float, min_near: float = MIN_NEAR) -> Tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances [N] of rays through ``[-bound, bound]^3`` (near >= min_near) and a hit mask [N]."""
    inv = 1.0 / torch.where(d.abs() < 1e-15, torch.full_like(d, 1e-15), d)
    t0 = (-bound - o) * inv
    t1 = (bound - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=min_near)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near


def _rand(shape, generator: Optional[torch.Generator], device, dtype) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def sample_pdf(bins: Tensor, weights: Tensor, n_samples: int, det: bool,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """Inverse-CDF samples [N, n_samples] from piecewise-constant weights [N, M] over bin edges [N, M + 1]."""
    weights = weights + 1e-5  # no empty pdf
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)  # [N, M + 1]
    if det:
        u = torch.linspace(0.5 / n_samples, 1.0 - 0.5 / n_samples, n_samples, device=bins.device, dtype=bins.dtype)
        u = u.expand(cdf.shape[0], n_samples).contiguous()
    else:
        u = _rand((cdf.shape[0], n_samples), generator, bins.device, bins.dtype)
    inds = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (inds - 1).clamp(min=0)
    above = inds.clamp(max=cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(1, below), cdf.gather(1, above)
    b0, b1 = bins.gather(1, below), bins.gather(1, above)
    denom = c1 - c0
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return b0 + (u - c0) / denom * (b1 - b0)


def composite_weights(sigma: Tensor, deltas: Tensor) -> Tensor:
    """Per-sample weights [..., S] from densities and segment lengths."""
    tau = sigma * deltas
    alpha = 1.0 - torch.exp(-tau)
    trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[..., :1]), tau[..., :-1]], -1), -1))
    return alpha * trans


def _scatter(n: int, sel: Optional[Tensor], vals: Tensor) -> Tensor:
    if sel is None:
        return vals
    out = vals.new_zeros((n,) + tuple(vals.shape[1:]))
    return out.index_copy(0, sel, vals)


def _evaluate(field, grid, pts: Tensor, need_color: bool, need_normals: bool, stats: Dict[str, int]):
    """Density [n] (and albedo [n, 3], normals [n, 3]) at ``pts`` [n, 3], evaluating occupied points only."""
    n = pts.shape[0]
    sel = None
    if grid is not None:
        sel = grid.query(pts).nonzero().squeeze(1)
        pts = pts[sel]
    m = pts.shape[0]
    stats["samples"] += n
    stats["samples_evaluated"] += m
    albedo = normals = None
    if m == 0:
        sigma = pts.new_zeros(n)
        if need_color:
            albedo = pts.new_zeros(n, 3)
        if need_normals:
            normals = pts.new_zeros(n, 3)
        return sigma, albedo, normals
    if need_color:
        s, a = field(pts)
        albedo = _scatter(n, sel, a)
    else:
        s = field.density(pts)
    sigma = _scatter(n, sel, s)
    if need_normals:
        normals = _scatter(n, sel, field.normal(pts))
    return sigma, albedo, normals


def _deltas(z: Tensor, last: Tensor) -> Tensor:
    return torch.cat([z[:, 1:] - z[:, :-1], last[:, None]], -1)


def _render_rays(field, grid, o, d, near, far, light, ambient, shading, num_steps, upsample_steps, perturb,
                 generator, stats):
    """Composite ``n`` rays that hit the box. Returns per-ray rgb [n, 3] (no background), alpha [n],
    expected distance [n], normal image [n, 3] or None, orient [n] or None."""
    n = o.shape[0]
    dev, dt = o.device, o.dtype
    bound = field.bound
    span = far - near
    sample_dist = span / num_steps
    u = _rand((n, num_steps), generator, dev, dt) if perturb else torch.full((n, num_steps), 0.5, device=dev, dtype=dt)
    steps = torch.arange(num_steps, device=dev, dtype=dt)
    z = near[:, None] + (steps[None] + u) * sample_dist[:, None]  # [n, T] stratified in [near, far]

    def points(zv):
        return (o[:, None, :] + d[:, None, :] * zv[..., None]).clamp(-bound, bound)

    if upsample_steps > 0 and num_steps >= 3:
        with torch.no_grad():
            sig, _, _ = _evaluate(field, grid, points(z).reshape(-1, 3), False, False, stats)
            w = composite_weights(sig.view(n, num_steps), _deltas(z, sample_dist))
            mids = 0.5 * (z[:, 1:] + z[:, :-1])  # [n, T-1] bin edges of the T-2 interior samples
            new_z = sample_pdf(mids, w[:, 1:-1], upsample_steps, det=not perturb, generator=generator)
            z, _ = torch.sort(torch.cat([z, new_z], -1), -1)
    S = z.shape[1]
    need_normals = shading != "albedo"
    need_color = shading in ("albedo", "lambertian")
    sigma, albedo, normals = _evaluate(field, grid, points(z).reshape(-1, 3), need_color, need_normals, stats)
    sigma = sigma.view(n, S)
    w = composite_weights(sigma, _deltas(z, sample_dist))  # [n, S]

    if shading == "albedo":
        color = albedo.view(n, S, 3)
    else:
        normals = normals.view(n, S, 3)
        if shading == "normal":
            color = normals * 0.5 + 0.5
        else:
            lam = ambient[:, None] + (1.0 - ambient[:, None]) * (normals * light[:, None, :]).sum(-1).clamp(min=0.0)
            if shading == "textureless":
                color = lam[..., None].expand(n, S, 3)
            else:
                color = albedo.view(n, S, 3) * lam[..., None]
    rgb = (w[..., None] * color).sum(1)
    alpha = w.sum(1)
    dist = (w * z).sum(1)
    normal_img = orient = None
    if normals is not None:
        normal_img = (w[..., None] * normals).sum(1)
        orient = (w.detach() * (normals * d[:, None, :]).sum(-1).clamp(min=0.0) ** 2).sum(1)
    return rgb, alpha, dist, normal_img, orient


def render_nerf(
    field,
    grid,
    cams: Cameras,
    background: Tensor,
    *,
    num_steps: int = 64,
    upsample_steps: int = 32,
    shading: str = "albedo",
    light_dirs: Optional[Tensor] = None,
    ambient: Union[float, Tensor] = 1.0,
    perturb: bool = False,
    generator: Optional[torch.Generator] = None,
    chunk: Optional[int] = None,
    min_near: float = MIN_NEAR,
) -> NerfRenderOutput:
    """Render ``field`` (a :class:`~splatgen.nerf.field.NeRFField`) from ``cams``.

    Args:
        grid: an :class:`~splatgen.nerf.occupancy.OccupancyGrid` (empty cells skipped) or None (no skipping).
        background: [B, 3] (or [3]) colour composited behind each view.
        shading: ``'albedo'``, ``'lambertian'`` (albedo * (ambient + (1 - ambient) max(n.l, 0))),
            ``'textureless'`` (white albedo) or ``'normal'`` (``n * 0.5 + 0.5``).
        light_dirs: [B, 3] unit directions towards the light (needed by lambertian/textureless).
        ambient: float or [B].
        perturb: jitter the coarse samples and sample the importance samples randomly (training);
            otherwise both are deterministic.
        generator: source of that randomness (any device; draws are moved to the rays' device).
        chunk: without autograd, rays per chunk (bounds memory); ignored when gradients are enabled.
    """
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
    B, H, W = len(cams), cams.height, cams.width
    dev = cams.device
    dt = torch.float32
    origins, dirs, zfac = camera_rays(cams, dt)
    R = B * H * W
    o = origins.reshape(R, 3)
    d = dirs.reshape(R, 3)
    view = torch.arange(B, device=dev).repeat_interleave(H * W)
    near, far, hit = ray_aabb(o, d, field.bound, min_near)
    hit_idx = hit.nonzero().squeeze(1)

    bg = torch.as_tensor(background, dtype=dt, device=dev)
    bg = bg.reshape(-1, 3).expand(B, 3)
    amb = torch.as_tensor(ambient, dtype=dt, device=dev).reshape(-1).expand(B)
    if shading in ("lambertian", "textureless"):
        if light_dirs is None:
            raise ValueError(f"shading={shading!r} needs light_dirs [B, 3]")
        light = torch.as_tensor(light_dirs, dtype=dt, device=dev).reshape(-1, 3).expand(B, 3)
        light = torch.nn.functional.normalize(light, dim=-1)
    else:
        light = torch.zeros(B, 3, dtype=dt, device=dev)

    stats = {"rays": R, "rays_hit": int(hit_idx.numel()), "samples": 0, "samples_evaluated": 0}
    grad = torch.is_grad_enabled()
    step = hit_idx.numel() if (grad or not chunk) else int(chunk)
    parts = []
    for s in range(0, hit_idx.numel(), max(step, 1)):
        idx = hit_idx[s:s + step]
        vi = view[idx]
        parts.append(_render_rays(field, grid, o[idx], d[idx], near[idx], far[idx], light[vi], amb[vi], shading,
                                  num_steps, upsample_steps, perturb, generator, stats))
    need_normals = shading != "albedo"

    def gather(k, width):
        vals = [p[k] for p in parts]
        if not vals:
            return o.new_zeros(R, width) if width else o.new_zeros(R)
        v = torch.cat(vals, 0)
        full = v.new_zeros((R,) + tuple(v.shape[1:]))
        return full.index_copy(0, hit_idx, v)

    rgb_acc = gather(0, 3)
    alpha = gather(1, 0)
    dist = gather(2, 0)
    normal_img = gather(3, 3) if need_normals else None
    orient = gather(4, 0) if need_normals else None

    if grad and not rgb_acc.requires_grad:  # nothing was evaluated: keep the graph connected to the field
        touch = sum(p.reshape(-1)[:1].sum() for p in field.parameters()) * 0.0
        rgb_acc = rgb_acc + touch
        alpha = alpha + touch

    rgb = rgb_acc + (1.0 - alpha)[:, None] * bg[view]
    zf = zfac.reshape(R)
    depth = torch.where(alpha > 0, dist * zf / alpha.clamp(min=1e-10), torch.zeros_like(alpha))

    a = alpha.clamp(1e-5, 1.0 - 1e-5)
    losses = {
        "entropy": (-a * torch.log2(a) - (1.0 - a) * torch.log2(1.0 - a)).mean(),
        "opacity": alpha.mean(),
    }
    if orient is not None:
        losses["orient"] = orient.mean()
    return NerfRenderOutput(
        rgb=rgb.view(B, H, W, 3),
        alpha=alpha.view(B, H, W, 1),
        depth=depth.view(B, H, W, 1),
        normals=normal_img.view(B, H, W, 3) if normal_img is not None else None,
        losses=losses,
        width=W,
        height=H,
        stats=stats,
    )
