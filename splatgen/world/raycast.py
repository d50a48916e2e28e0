"""Ground-truth rendering of world objects by analytic ray casting, independent of the Gaussian renderer.

Every pixel casts one ray (``supersample**2`` rays with supersampling) from the camera centre through the
pixel centre (pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``, as in gsplat). Each ray is intersected with
every primitive in the primitive's local frame:

- box: slab test; sphere (ellipsoid): quadratic in the unit-sphere frame; cylinder and cone (frustum):
  quadratic for the side plus the cap discs; capsule: cylinder side plus two spheres;
- torus: the sign of its exact SDF sampled at ``torus_samples`` points along the ray's chord through the
  torus's bounding box, the first crossing refined by bisection (grazing rays whose chord through the
  tube is shorter than the sample spacing are misses: sub-pixel at the default 64 samples).

The visible surface is the nearest hit over all primitives (the object is their union). Shading is a
"half-Lambert" term with a light fixed in world space, ``colour * (ambient + (1 - ambient) *
(0.5 + 0.5 n.l))``: every surface point has one colour whatever the camera, so views are consistent and
a Gaussian model with view-independent colours can reproduce them exactly. The default light comes from
the right and above (see :data:`DEFAULT_LIGHT`); half-Lambert keeps the unlit side visible, never black.

Depth is the camera-space z (OpenCV, metres along the optical axis, the same quantity the Gaussian
renderer's depth estimates), 0 where the ray misses. With supersampling, ``rgb`` and ``mask`` are box
filtered over the ``s x s`` sub-pixel rays (``mask`` becomes a coverage fraction) and ``depth`` is the mean
over the sub-rays that hit. Cost grows with ``supersample**2``.

Cost: every ray is tested against every primitive (``[rays, primitives]`` tensors, chunked by
``chunk_rays``). On a CPU core one 64x64 view of a ~15-primitive object takes a few ms without
supersampling.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..cameras import Cameras
from .grammar import PRIMITIVE_KINDS, Primitive, WorldObject

#: direction *towards* the light, world space, normalised at use: from the right (+Y) and above, with no
#: front/back (X) component, so lighting alone never tells the front from the back: for an object that is
#: symmetric under x -> -x, the back view is exactly the mirror image of the front view.
DEFAULT_LIGHT = (0.0, 0.5, 0.85)
DEFAULT_AMBIENT = 0.3
_EPS_T = 1e-6
_INF = float("inf")


# ----------------------------------------------------------------------------------------- packing
class _Packed:
    """An object's primitives as tensors, grouped by kind (the order of :data:`PRIMITIVE_KINDS`)."""

    def __init__(self, prims: Sequence[Primitive], device: torch.device, dtype: torch.dtype):
        self.groups: List[Tuple[str, Tensor, Tensor, Tensor, Tensor]] = []
        for kind in PRIMITIVE_KINDS:
            ps = [p for p in prims if p.kind == kind]
            if not ps:
                continue
            c = torch.tensor([p.centre for p in ps], dtype=dtype, device=device)
            R = torch.stack([p.rotation_matrix(dtype) for p in ps]).to(device)
            s = torch.tensor([p.size for p in ps], dtype=dtype, device=device)
            col = torch.tensor([p.colour for p in ps], dtype=dtype, device=device)
            self.groups.append((kind, c, R, s, col))
        self.num = sum(g[1].shape[0] for g in self.groups)
        # a ball about the origin holding every primitive's bounding ball (for culling rays)
        self.radius = max(float((c.norm(dim=-1) + _bounding_radius(k, s)).max()) for k, c, _, s, _ in self.groups) + 1e-4


# ----------------------------------------------------------------------------------------- intersections
def _where_valid(t: Tensor, valid: Tensor) -> Tensor:
    return torch.where(valid & (t > _EPS_T), t, torch.full_like(t, _INF))


def _safe(x: Tensor, eps: float = 1e-12) -> Tensor:
    return torch.where(x.abs() < eps, torch.full_like(x, eps), x)


def _hit_box(o: Tensor, d: Tensor, s: Tensor) -> Tensor:
    inv = 1.0 / _safe(d)
    t1, t2 = (-s - o) * inv, (s - o) * inv
    tn = torch.minimum(t1, t2).amax(-1)
    tf = torch.maximum(t1, t2).amin(-1)
    return _where_valid(tn, tn <= tf)


def _hit_sphere(o: Tensor, d: Tensor, s: Tensor) -> Tensor:
    o2, d2 = o / s, d / s
    a = (d2 * d2).sum(-1)
    b = (o2 * d2).sum(-1)
    c = (o2 * o2).sum(-1) - 1.0
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return _where_valid(t, disc >= 0)


def _side_roots(o: Tensor, d: Tensor, m: Tensor, q: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Roots of x^2 + y^2 = (m z + q)^2 along the ray (cylinder: m = 0): (t_near, t_far, valid)."""
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = d.unbind(-1)
    k = m * oz + q
    a = dx * dx + dy * dy - m * m * dz * dz
    b = ox * dx + oy * dy - m * dz * k
    c = ox * ox + oy * oy - k * k
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    a_ok = a.abs() > 1e-12
    a_s = _safe(a)
    t1 = torch.where(a_ok, (-b - sq) / a_s, -c / (2 * _safe(b)))
    t2 = torch.where(a_ok, (-b + sq) / a_s, torch.full_like(a, _INF))
    return t1, t2, disc >= 0


def _cap(o: Tensor, d: Tensor, z: Tensor, r: Tensor) -> Tensor:
    t = (z - o[..., 2]) / _safe(d[..., 2])
    px, py = o[..., 0] + t * d[..., 0], o[..., 1] + t * d[..., 1]
    return _where_valid(t, (px * px + py * py <= r * r) & (d[..., 2].abs() > 1e-12) & (r > 0))


def _hit_frustum(o: Tensor, d: Tensor, rb: Tensor, h: Tensor, rt: Tensor, caps: bool = True) -> Tensor:
    m = (rt - rb) / (2 * h)
    q = 0.5 * (rb + rt)
    t1, t2, ok = _side_roots(o, d, m, q)
    best = torch.full_like(t1, _INF)
    for t in (t1, t2):
        z = o[..., 2] + t * d[..., 2]
        best = torch.minimum(best, _where_valid(t, ok & (z.abs() <= h) & (m * z + q >= 0)))
    if caps:
        best = torch.minimum(best, _cap(o, d, -h, rb))
        best = torch.minimum(best, _cap(o, d, h, rt))
    return best


def _hit_cylinder(o: Tensor, d: Tensor, s: Tensor) -> Tensor:
    r, h = s[..., 0], s[..., 1]
    return _hit_frustum(o, d, r, h, r)


def _hit_cone(o: Tensor, d: Tensor, s: Tensor) -> Tensor:
    return _hit_frustum(o, d, s[..., 0], s[..., 1], s[..., 2])


def _hit_capsule(o: Tensor, d: Tensor, s: Tensor) -> Tensor:
    r, h = s[..., 0], s[..., 1]
    best = _hit_frustum(o, d, r, h, r, caps=False)
    for sign in (-1.0, 1.0):
        oc = o.clone()
        oc[..., 2] = oc[..., 2] - sign * h
        best = torch.minimum(best, _hit_sphere(oc, d, r[..., None].expand_as(o)))
    return best


def _torus_sdf(p: Tensor, R: Tensor, r: Tensor) -> Tensor:
    return torch.stack([p[..., :2].norm(dim=-1) - R, p[..., 2]], -1).norm(dim=-1) - r


def _hit_torus(o: Tensor, d: Tensor, s: Tensor, samples: int = 64, bisections: int = 22) -> Tensor:
    """First crossing of the torus along the ray: the SDF's sign is sampled at ``samples`` evenly spaced
    points of the ray's chord through the torus's bounding box, then the first bracketed crossing is
    refined by bisection. A ray whose chord through the torus is shorter than the sample spacing (a
    grazing ray, penetrating the tube by less than ~spacing^2 / (8 r)) counts as a miss."""
    R, r = s[..., 0], s[..., 1]
    box = torch.stack([R + r, R + r, r], dim=-1)
    inv = 1.0 / _safe(d)
    t1, t2 = (-box - o) * inv, (box - o) * inv
    tn = torch.minimum(t1, t2).amax(-1).clamp_min(0.0)
    tf = torch.maximum(t1, t2).amin(-1)
    cand = tn < tf
    out = torch.full_like(tn, _INF)
    if not bool(cand.any()):
        return out
    oo, dd, RR, rr = o[cand], d[cand], R[cand], r[cand]
    t0, step = tn[cand], (tf[cand] - tn[cand]) / samples
    lo = t0.clone()
    hi = torch.full_like(t0, _INF)
    prev_t = t0
    inside0 = _torus_sdf(oo + t0[:, None] * dd, RR, rr) < 0  # ray starts inside (camera in the box)
    for k in range(1, samples + 1):
        tk = t0 + k * step
        new = ~torch.isfinite(hi) & (_torus_sdf(oo + tk[:, None] * dd, RR, rr) < 0)
        lo = torch.where(new, prev_t, lo)
        hi = torch.where(new, tk, hi)
        prev_t = tk
    found = torch.isfinite(hi) & ~inside0
    hi = torch.where(found, hi, lo)
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        neg = _torus_sdf(oo + mid[:, None] * dd, RR, rr) < 0
        hi = torch.where(neg, mid, hi)
        lo = torch.where(neg, lo, mid)
    t = 0.5 * (lo + hi)
    out[cand] = torch.where(found & (t > _EPS_T), t, torch.full_like(t, _INF))
    return out


_HIT = {
    "box": _hit_box,
    "sphere": _hit_sphere,
    "cylinder": _hit_cylinder,
    "cone": _hit_cone,
    "torus": _hit_torus,
    "capsule": _hit_capsule,
}


# ----------------------------------------------------------------------------------------- normals and SDFs
def _local_normal(kind: str, p: Tensor, s: Tensor) -> Tensor:
    """Outward normal (unnormalised) at local surface points ``p`` [M, 3] of primitives of size ``s`` [M, 3]."""
    x, y, z = p.unbind(-1)
    ez = torch.zeros_like(p)
    ez[:, 2] = torch.sign(z)
    if kind == "box":
        axis = (p.abs() / s).argmax(-1)
        n = torch.zeros_like(p)
        n.scatter_(1, axis[:, None], torch.sign(p.gather(1, axis[:, None])))
        return n
    if kind == "sphere":
        return p / (s * s)
    if kind in ("cylinder", "cone"):
        rb, h = s[:, 0], s[:, 1]
        rt = rb if kind == "cylinder" else s[:, 2]
        m = (rt - rb) / (2 * h)
        rho = torch.sqrt(x * x + y * y).clamp_min(1e-12)
        side = torch.stack([x / rho, y / rho, -m], -1)
        d_side = (rho - (m * z + 0.5 * (rb + rt))).abs() / torch.sqrt(1 + m * m)
        d_cap = h - z.abs()
        return torch.where((d_cap < d_side)[:, None], ez, side)
    if kind == "capsule":
        q = p.clone()
        q[:, 2] = z - z.clamp(-s[:, 1], s[:, 1])
        return q
    # torus
    rho = torch.sqrt(x * x + y * y).clamp_min(1e-12)
    ring = torch.stack([x / rho * s[:, 0], y / rho * s[:, 0], torch.zeros_like(z)], -1)
    return p - ring


def _local_sdf(kind: str, p: Tensor, s: Tensor) -> Tensor:
    """Signed distance (negative inside) at local points ``p`` [..., 3] (exact except for ellipsoids,
    whose sign is exact and magnitude approximate)."""
    x, y, z = p.unbind(-1)
    a, b, c = s.unbind(-1)
    if kind == "box":
        q = p.abs() - s
        return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)
    if kind == "sphere":
        k0 = (p / s).norm(dim=-1)
        k1 = (p / (s * s)).norm(dim=-1).clamp_min(1e-12)
        return k0 * (k0 - 1.0) / k1
    rho = torch.sqrt(x * x + y * y)
    if kind == "cylinder":
        dx, dz = rho - a, z.abs() - b
        return torch.stack([dx, dz], -1).clamp_min(0).norm(dim=-1) + torch.maximum(dx, dz).clamp_max(0)
    if kind == "cone":  # Inigo Quilez's sdCappedCone(p, h, r1 = bottom, r2 = top)
        h, r1, r2 = b, a, c
        k2x, k2y = r2 - r1, 2 * h
        cax = rho - torch.minimum(rho, torch.where(z < 0, r1, r2))
        cay = z.abs() - h
        f = (((r2 - rho) * k2x + (h - z) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0, 1)
        cbx = rho - r2 + k2x * f
        cby = z - h + k2y * f
        sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0).to(p.dtype)
        return sign * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))
    if kind == "capsule":
        q = torch.stack([x, y, z - z.clamp(-b, b)], -1)
        return q.norm(dim=-1) - a
    return torch.stack([rho - a, z], -1).norm(dim=-1) - b  # torus


def primitive_sdf(prim: Primitive, points: Tensor) -> Tensor:
    """Signed distance [N] of world ``points`` [N, 3] to one primitive (negative inside)."""
    dt = points.dtype if points.dtype in (torch.float32, torch.float64) else torch.float32
    c = torch.tensor(prim.centre, dtype=dt, device=points.device)
    R = prim.rotation_matrix(dt).to(points.device)
    local = (points.to(dt) - c) @ R
    s = torch.tensor(prim.size, dtype=dt, device=points.device).expand_as(local)
    return _local_sdf(prim.kind, local, s)


def object_sdf(obj: WorldObject, points: Tensor) -> Tensor:
    """Signed distance [N] of ``points`` [N, 3] to the union of the object's primitives."""
    return torch.stack([primitive_sdf(p, points) for p in obj.primitives]).amin(0)


# ----------------------------------------------------------------------------------------- rendering
def _bounding_radius(kind: str, s: Tensor) -> Tensor:
    """[P] radius of a ball about each primitive's centre that holds it."""
    a, b, c = s.unbind(-1)
    if kind == "box":
        return s.norm(dim=-1)
    if kind == "sphere":
        return s.amax(-1)
    if kind in ("cylinder", "cone"):
        return torch.sqrt(torch.maximum(a, c) ** 2 + b * b)
    if kind == "torus":
        return a + b
    return a + b  # capsule: radius + half length


def _cast(packed: _Packed, o: Tensor, d: Tensor, torus_samples: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Nearest hit of rays (o, d [N, 3], unit d): t [N] (inf on miss), unit world normal [N, 3], colour [N, 3].

    Per kind of primitive, only the (ray, primitive) pairs whose ray meets the primitive's bounding ball
    are intersected exactly (small parts cover few pixels).
    """
    N = o.shape[0]
    best_t = torch.full((N,), _INF, dtype=o.dtype, device=o.device)
    best_g = torch.full((N,), -1, dtype=torch.long, device=o.device)
    best_p = torch.zeros((N,), dtype=torch.long, device=o.device)
    for gi, (kind, c, R, s, _) in enumerate(packed.groups):
        oc = o[:, None, :] - c[None]  # [N, P, 3]
        b = (oc * d[:, None, :]).sum(-1)
        cc = (oc * oc).sum(-1) - _bounding_radius(kind, s)[None] ** 2
        ri, pj = torch.nonzero((b * b - cc >= 0) & ((b < 0) | (cc < 0)), as_tuple=True)
        if ri.numel() == 0:
            continue
        Rp = R[pj]
        ol = torch.einsum("mi,mij->mj", oc[ri, pj], Rp)
        dl = torch.einsum("mi,mij->mj", d[ri], Rp)
        t_pairs = _hit_torus(ol, dl, s[pj], torus_samples) if kind == "torus" else _HIT[kind](ol, dl, s[pj])
        t = torch.full(b.shape, _INF, dtype=o.dtype, device=o.device)
        t[ri, pj] = t_pairs
        tmin, pidx = t.min(dim=1)
        better = tmin < best_t
        best_t = torch.where(better, tmin, best_t)
        best_g = torch.where(better, torch.full_like(best_g, gi), best_g)
        best_p = torch.where(better, pidx, best_p)
    normal = torch.zeros_like(o)
    colour = torch.zeros_like(o)
    for gi, (kind, c, R, s, col) in enumerate(packed.groups):
        sel = best_g == gi
        if not bool(sel.any()):
            continue
        pi = best_p[sel]
        Rs = R[pi]
        p_world = o[sel] + best_t[sel, None] * d[sel]
        p_loc = torch.einsum("mi,mij->mj", p_world - c[pi], Rs)
        n_loc = _local_normal(kind, p_loc, s[pi])
        n = torch.einsum("mij,mj->mi", Rs, n_loc)
        normal[sel] = torch.nn.functional.normalize(n, dim=-1)
        colour[sel] = col[pi]
    return best_t, normal, colour


def _cast_culled(packed: _Packed, o: Tensor, d: Tensor, torus_samples: int) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`_cast` on the rays that meet the object's bounding sphere only (the others miss)."""
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - packed.radius**2
    near = (b * b - c >= 0) & (b < 0)
    t = torch.full_like(b, _INF)
    normal, colour = torch.zeros_like(o), torch.zeros_like(o)
    if bool(near.any()):
        t[near], normal[near], colour[near] = _cast(packed, o[near], d[near], torus_samples)
    return t, normal, colour


def _camera_rays(cameras: Cameras, supersample: int, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor]:
    """Origins, unit directions [B, H*s, W*s, 3] and the factor turning ray length into camera z."""
    B, H, W, ss = len(cameras), cameras.height, cameras.width, supersample
    dev = cameras.device
    offs = (torch.arange(ss, dtype=dtype, device=dev) + 0.5) / ss
    u = (torch.arange(W, dtype=dtype, device=dev)[:, None] + offs[None]).reshape(-1)  # [W*s]
    v = (torch.arange(H, dtype=dtype, device=dev)[:, None] + offs[None]).reshape(-1)  # [H*s]
    K = cameras.Ks.to(dtype)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    xc = (u[None, None, :] - cx[:, None, None]) / fx[:, None, None]  # [B, 1, W*s]
    yc = (v[None, :, None] - cy[:, None, None]) / fy[:, None, None]  # [B, H*s, 1]
    xc, yc = torch.broadcast_tensors(xc, yc)
    d_cam = torch.stack([xc, yc, torch.ones_like(xc)], dim=-1)  # [B, Hs, Ws, 3]
    norm = d_cam.norm(dim=-1)
    vm = cameras.viewmats.to(dtype)
    Rwc = vm[:, :3, :3]  # world-to-camera rotation
    d_world = torch.einsum("bhwj,bjk->bhwk", d_cam / norm[..., None], Rwc)  # R^T d
    origin = -torch.einsum("bji,bj->bi", Rwc, vm[:, :3, 3])  # -R^T t
    return origin[:, None, None, :].expand_as(d_world), d_world, 1.0 / norm


def render_world(
    objects: Union[WorldObject, Sequence[WorldObject]],
    cameras: Cameras,
    light: Sequence[float] = DEFAULT_LIGHT,
    background: Sequence[float] | Tensor = (1.0, 1.0, 1.0),
    supersample: int = 1,
    ambient: float = DEFAULT_AMBIENT,
    chunk_rays: Optional[int] = None,
    torus_samples: int = 64,
) -> Dict[str, Tensor]:
    """Ground-truth views of world objects.

    Args:
        objects: one object seen by every camera, or a sequence of B objects (one per camera).
        cameras: B cameras (``splatgen.cameras``); rendering happens on ``cameras.device``.
        light: direction towards the light in world space (normalised here).
        background: RGB [3] (or per-view [B, 3]) composited where the object does not cover the pixel.
        supersample: ``s`` gives ``s x s`` rays per pixel (anti-aliasing, ``s**2`` times the cost).
        ambient: the shading floor in [0, 1].
        chunk_rays: rays cast at once (memory ~ chunk_rays x primitives x a few floats); default 2^15 on
            the CPU (cache-sized), 2^22 on CUDA.
        torus_samples: samples along each ray's chord through a torus's bounding box (see the module doc).

    Returns:
        ``rgb`` [B, H, W, 3] in [0, 1] composited over ``background``, ``mask`` [B, H, W, 1] coverage in
        [0, 1] (exactly 0/1 without supersampling), ``depth`` [B, H, W, 1] camera z (0 where empty).
    """
    B, H, W, ss = len(cameras), cameras.height, cameras.width, int(supersample)
    assert ss >= 1
    dev, dtype = cameras.device, torch.float32
    if chunk_rays is None:
        chunk_rays = (1 << 22) if dev.type == "cuda" else (1 << 15)
    objs = [objects] * B if isinstance(objects, WorldObject) else list(objects)
    if len(objs) != B:
        raise ValueError(f"got {len(objs)} objects for {B} cameras; pass one object or one per camera")
    bg = torch.as_tensor(background, dtype=dtype, device=dev)
    bg = bg.expand(B, 3) if bg.dim() == 1 else bg
    l = torch.nn.functional.normalize(torch.as_tensor(light, dtype=dtype, device=dev), dim=0)

    origin, dirs, zfac = _camera_rays(cameras, ss, dtype)
    rgb = torch.empty(B, H * ss, W * ss, 3, dtype=dtype, device=dev)
    hit = torch.empty(B, H * ss, W * ss, dtype=dtype, device=dev)
    depth = torch.empty(B, H * ss, W * ss, dtype=dtype, device=dev)

    groups: Dict[int, List[int]] = {}
    for i, ob in enumerate(objs):
        groups.setdefault(id(ob), []).append(i)
    for idx in groups.values():
        packed = _Packed(objs[idx[0]].primitives, dev, dtype)
        sel = torch.as_tensor(idx, device=dev)
        o = origin[sel].reshape(-1, 3)
        d = dirs[sel].reshape(-1, 3)
        zf = zfac[sel].reshape(-1)
        bgs = bg[sel][:, None, None, :].expand(-1, H * ss, W * ss, 3).reshape(-1, 3)
        out_rgb, out_hit, out_depth = [], [], []
        for s0 in range(0, o.shape[0], chunk_rays):
            s1 = s0 + chunk_rays
            t, n, col = _cast_culled(packed, o[s0:s1], d[s0:s1], torus_samples)
            m = torch.isfinite(t)
            shade = ambient + (1.0 - ambient) * (0.5 + 0.5 * (n @ l))
            c = (col * shade[:, None]).clamp(0, 1)
            out_rgb.append(torch.where(m[:, None], c, bgs[s0:s1]))
            out_hit.append(m.to(dtype))
            out_depth.append(torch.where(m, t * zf[s0:s1], torch.zeros_like(t)))
        rgb[sel] = torch.cat(out_rgb).reshape(len(idx), H * ss, W * ss, 3)
        hit[sel] = torch.cat(out_hit).reshape(len(idx), H * ss, W * ss)
        depth[sel] = torch.cat(out_depth).reshape(len(idx), H * ss, W * ss)

    if ss > 1:
        rgb = rgb.reshape(B, H, ss, W, ss, 3).mean(dim=(2, 4))
        hs = hit.reshape(B, H, ss, W, ss).sum(dim=(2, 4))
        ds = (depth * hit).reshape(B, H, ss, W, ss).sum(dim=(2, 4))
        depth = ds / hs.clamp_min(1.0)
        hit = hs / (ss * ss)
    return {"rgb": rgb, "mask": hit[..., None], "depth": depth[..., None]}


# ----------------------------------------------------------------------------------------- surface samples
def primitive_area(prim: Primitive) -> float:
    """Surface area of one primitive (ellipsoids: Knud Thomsen's approximation, < 1.1% error)."""
    a, b, c = prim.size
    if prim.kind == "box":
        return 8.0 * (a * b + b * c + a * c)
    if prim.kind == "sphere":
        p = 1.6075
        return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3.0) ** (1 / p)
    if prim.kind == "cylinder":
        return 4 * math.pi * a * b + 2 * math.pi * a * a
    if prim.kind == "cone":
        return math.pi * (a + c) * math.hypot(2 * b, a - c) + math.pi * (a * a + c * c)
    if prim.kind == "torus":
        return 4 * math.pi**2 * a * b
    return 4 * math.pi * a * b + 4 * math.pi * a * a  # capsule


def _unit_sphere(n: int, g: torch.Generator) -> Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)


def _sample_local(prim: Primitive, n: int, g: torch.Generator) -> Tensor:
    """``n`` points [n, 3] uniform (by area) on one primitive's surface, local frame, float64."""
    a, b, c = prim.size
    f64 = torch.float64
    rand = lambda *shape: torch.rand(*shape, generator=g, dtype=f64)  # noqa: E731
    if n == 0:
        return torch.zeros(0, 3, dtype=f64)
    if prim.kind == "box":
        w = torch.tensor([b * c, a * c, a * b], dtype=f64)
        axis = torch.multinomial(w, n, replacement=True, generator=g)
        p = (rand(n, 3) * 2 - 1) * torch.tensor([a, b, c], dtype=f64)
        sign = torch.where(rand(n) < 0.5, -1.0, 1.0).to(f64)
        p[torch.arange(n), axis] = sign * torch.tensor([a, b, c], dtype=f64)[axis]
        return p
    if prim.kind == "sphere":
        out, s = [], torch.tensor([a, b, c], dtype=f64)
        need = n
        while need > 0:
            u = _unit_sphere(2 * need + 16, g)
            # area element of the map u -> s * u is proportional to |u / s|; accept with that probability
            acc = rand(u.shape[0]) < (u / s).norm(dim=-1) * s.min()
            out.append((u * s)[acc][:need])
            need -= out[-1].shape[0]
        return torch.cat(out)
    if prim.kind in ("cylinder", "cone"):
        rb, h = a, b
        rt = a if prim.kind == "cylinder" else c
        side = math.pi * (rb + rt) * math.hypot(2 * h, rb - rt)
        w = torch.tensor([side, math.pi * rb * rb, math.pi * rt * rt], dtype=f64)
        part = torch.multinomial(w, n, replacement=True, generator=g)
        phi = rand(n) * 2 * math.pi
        u = rand(n)
        if abs(rt - rb) < 1e-12:
            sfrac = u
        else:  # density along the side proportional to the radius
            sfrac = (torch.sqrt(rb * rb + u * (rt * rt - rb * rb)) - rb) / (rt - rb)
        rho = torch.where(part == 0, rb + (rt - rb) * sfrac, torch.where(part == 1, rb, rt) * torch.sqrt(rand(n)))
        z = torch.where(part == 0, -h + 2 * h * sfrac, torch.where(part == 1, -h, h))
        return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], -1)
    if prim.kind == "torus":
        R, r = a, b
        out, need = [], n
        while need > 0:
            m = 2 * need + 16
            th, ph = rand(m) * 2 * math.pi, rand(m) * 2 * math.pi
            acc = rand(m) < (R + r * torch.cos(th)) / (R + r)
            rr = R + r * torch.cos(th)
            pts = torch.stack([rr * torch.cos(ph), rr * torch.sin(ph), r * torch.sin(th)], -1)[acc][:need]
            out.append(pts)
            need -= pts.shape[0]
        return torch.cat(out)
    # capsule
    r, h = a, b
    w = torch.tensor([4 * math.pi * r * h, 4 * math.pi * r * r], dtype=f64)
    part = torch.multinomial(w, n, replacement=True, generator=g)
    u = _unit_sphere(n, g)
    phi = rand(n) * 2 * math.pi
    side = torch.stack([r * torch.cos(phi), r * torch.sin(phi), -h + 2 * h * rand(n)], -1)
    cap = u * r
    cap[:, 2] = cap[:, 2] + torch.where(u[:, 2] >= 0, h, -h)
    return torch.where((part == 0)[:, None], side, cap)


def sample_surface(obj: WorldObject, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` points [n, 3] (float32, CPU) uniform by area on the object's visible-from-outside surface.

    Each primitive gets samples in proportion to its area; points lying more than 1e-5 inside another
    primitive are dropped (they are interior), and sampling repeats until ``n`` remain. Deterministic under
    ``generator`` (a CPU generator; seed 0 when None).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    prims = obj.primitives
    areas = torch.tensor([primitive_area(p) for p in prims], dtype=torch.float64)
    kept: List[Tensor] = []
    total = 0
    for _ in range(100):
        m = 2 * (n - total) + 64
        counts = torch.bincount(torch.multinomial(areas, m, replacement=True, generator=g), minlength=len(prims))
        pts = []
        for i, (p, k) in enumerate(zip(prims, counts.tolist())):
            if k == 0:
                continue
            local = _sample_local(p, k, g)
            world = local @ p.rotation_matrix().T + torch.tensor(p.centre, dtype=torch.float64)
            others = [primitive_sdf(q, world) for j, q in enumerate(prims) if j != i]
            inside = torch.stack(others).amin(0) < -1e-5 if others else torch.zeros(k, dtype=torch.bool)
            pts.append(world[~inside])
        batch = torch.cat(pts)
        batch = batch[torch.randperm(batch.shape[0], generator=g)]
        kept.append(batch[: n - total])
        total += kept[-1].shape[0]
        if total >= n:
            break
    assert total == n, "surface sampling did not converge"
    return torch.cat(kept).float()
