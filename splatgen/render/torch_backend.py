"""Pure-PyTorch differentiable Gaussian rasterizer: the CPU backend and the reference for gsplat.

It reproduces the math of ``gsplat.rasterization(..., packed=False, render_mode="RGB+ED",
rasterize_mode="classic")`` of gsplat 1.5.3 (read from its CUDA sources, ``ProjectionEWA3DGSFused.cu``,
``Utils.cuh:persp_proj`` and ``RasterizeToPixels3DGSFwd.cu``):

1. **Projection** (dense over all ``B x N`` camera/Gaussian pairs, like ``packed=False``):
   world -> camera with the 4x4 ``viewmats``; ``Sigma = R S S^T R^T`` from the normalised quaternion
   (w x y z) and the scales; EWA projection ``Sigma2d = J W Sigma W^T J^T`` with the Jacobian of the
   pinhole projection, where ``x/z`` and ``y/z`` are clamped to the image extent plus 30 % of the
   half-FoV tangent on each side (1.3 tan(fov/2) for a centred principal point), as gsplat does to keep
   Gaussians far outside the frustum from exploding; ``eps2d`` added to the diagonal; ``conic =
   Sigma2d^-1``.
2. **Culling and radii**: a Gaussian is dropped for a camera (radius 0) when its depth is outside
   ``[near_plane, far_plane]``, the blurred 2D covariance is not positive definite, its opacity is below
   1/255, or its bounding box misses the image. The radius per axis is gsplat 1.5's *opacity-aware*
   bound ``ceil(extend * sqrt(Sigma2d_ii))`` with ``extend = min(3.33, sqrt(2 ln(255 opacity)))``: the
   box beyond which ``alpha < 1/255``. The returned radius is the max of the x and y radii.
3. **Compositing**: per pixel centre ``p = (x + 0.5, y + 0.5)``,
   ``alpha_i = min(0.999, o_i exp(-0.5 d^T conic d))``, skipped when ``< 1/255``; Gaussians in
   increasing camera depth (ties by index, as gsplat's stable radix sort); ``w_i = alpha_i T_i`` with
   ``T_i = prod_{j<i} (1 - alpha_j)``; gsplat's early termination is replicated exactly: the first
   Gaussian that would bring ``T`` to ``<= 1e-4`` and all after it are left out.
   ``rgb = sum w_i c_i + T_final bg``, ``alpha = 1 - T_final``,
   ``depth = sum w_i z_i / max(alpha, 1e-10)``.

Colours come from SH exactly as in gsplat: ``max(SH(mean - camera_centre) + 0.5, 0)``.

Algorithm and complexity. Instead of evaluating every Gaussian at every pixel (``B H W N``), the
renderer lists the (pixel, Gaussian) pairs whose pixel lies in the Gaussian's screen bounding box
(``P`` pairs in all, the same work gsplat's tiles do, minus the tile padding), sorts them by (pixel,
depth) and composites each pixel's run with a segmented cumulative sum of ``log(1 - alpha)``. Time is
``O(B N + P log P)``, memory ``O(B N + P)``. Pixel rows are processed in bands of at most
``max_pairs_per_chunk`` pairs; when there is more than one band and gradients are needed, each band is
wrapped in ``torch.utils.checkpoint`` so the saved state stays ``O(B N + max_pairs_per_chunk)`` at
the cost of a second forward pass per band during backward.

Known differences from gsplat (all numerical, none in the model):

- Transmittance is accumulated in float64 logs instead of a float32 running product, so pixels whose
  ``T`` lands within float32 rounding of the 1e-4 threshold may stop one Gaussian earlier or later.
- Culled Gaussians (radius 0) still get a finite ``means2d`` (computed with their depth replaced by 1);
  gsplat leaves those entries unspecified. Only entries with ``radii > 0`` are meaningful in either.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..gaussians import num_sh_bases, quat_to_rotmat
from .sh import MAX_SH_DEGREE, sh_to_rgb

ALPHA_THRESHOLD = 1.0 / 255.0
"""Per-Gaussian alpha below which a Gaussian is skipped at a pixel (gsplat ``ALPHA_THRESHOLD``)."""
MAX_ALPHA = 0.999
"""Per-Gaussian alpha is clamped to this so transmittance never reaches exactly zero."""
TRANSMITTANCE_THRESHOLD = 1e-4
"""A pixel stops compositing before the Gaussian that would bring its transmittance to <= this."""
MAX_EXTEND = 3.33
"""gsplat 1.5's cap on the bounding-box half-size, in standard deviations."""
DEFAULT_MAX_PAIRS = 1 << 22
"""Default (pixel, Gaussian) pairs per band: about 4M pairs, a few hundred MB with autograd."""

RasterResult = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
"""(rgb [B,H,W,3], alpha [B,H,W,1], depth [B,H,W,1], means2d [B,N,2], radii [B,N] int32)."""


# --------------------------------------------------------------------------------------------- checks
def check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor,
    sh_degree: int,
) -> None:
    """Raise ``ValueError`` naming the offending argument when shapes do not fit together."""
    if means.dim() != 2 or means.shape[-1] != 3:
        raise ValueError(f"means must be [N, 3], got {tuple(means.shape)}")
    n = means.shape[0]
    expected = {"quats": (quats, (n, 4)), "scales": (scales, (n, 3)), "opacities": (opacities, (n,))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)} for N={n} Gaussians, got {list(t.shape)}")
    if not isinstance(sh_degree, int) or not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be an int in [0, {MAX_SH_DEGREE}], got {sh_degree!r}")
    k = num_sh_bases(sh_degree)
    if sh.dim() != 3 or sh.shape[0] != n or sh.shape[2] != 3 or sh.shape[1] < k:
        raise ValueError(
            f"SH coefficients must be [N={n}, K>={k}, 3] for sh_degree={sh_degree}, got {list(sh.shape)}"
        )
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [B, 4, 4], got {list(viewmats.shape)}")
    b = viewmats.shape[0]
    if tuple(Ks.shape) != (b, 3, 3):
        raise ValueError(f"Ks must be [B={b}, 3, 3] to match viewmats, got {list(Ks.shape)}")
    if tuple(backgrounds.shape) != (b, 3):
        raise ValueError(f"background must be [B={b}, 3] (one RGB per camera), got {list(backgrounds.shape)}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive ints, got {width!r} x {height!r}")
    devices = {t.device for t in (means, quats, scales, opacities, sh, viewmats, Ks, backgrounds)}
    if len(devices) > 1:
        raise ValueError(f"all render inputs must be on one device, got {sorted(str(d) for d in devices)}")


# ----------------------------------------------------------------------------------------- projection
def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of N Gaussians into B pinhole cameras (gsplat's fused projection, ``packed=False``).

    Args:
        means: [N, 3] world positions. quats: [N, 4] w x y z. scales: [N, 3] standard deviations.
        opacities: [N] in (0, 1) (only used, detached, for culling and the opacity-aware radius).
        viewmats: [B, 4, 4] world-to-camera (OpenCV axes). Ks: [B, 3, 3] pixel intrinsics.

    Returns:
        means2d [B, N, 2] pixels; conics [B, N, 3] (the upper triangle a, b, c of ``Sigma2d^-1``);
        depths [B, N] camera z; radii [B, N, 2] int32 per-axis pixel radius, 0 where culled.
    """
    dtype = means.dtype
    R_cam = viewmats[:, :3, :3]  # [B, 3, 3]
    t_cam = viewmats[:, :3, 3]  # [B, 3]
    means_c = torch.einsum("bij,nj->bni", R_cam, means) + t_cam[:, None, :]  # [B, N, 3]
    M = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3] = R S
    covars = M @ M.transpose(-1, -2)  # [N, 3, 3]
    covars_c = torch.einsum("bij,njk,blk->bnil", R_cam, covars, R_cam)  # [B, N, 3, 3] = W Sigma W^T

    x, y, z = means_c.unbind(-1)  # [B, N]
    depth_ok = (z >= near_plane) & (z <= far_plane)  # gsplat culls z < near or z > far
    # Culled Gaussians may sit at z ~ 0; project them with z = 1 so nothing (values or, through
    # 0 * inf, gradients) becomes non-finite. Their outputs are unused.
    z_safe = torch.where(depth_ok, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [B, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_safe
    # The Jacobian is evaluated at the clamped position (as gsplat does); the mean itself is not clamped.
    tx = z_safe * torch.maximum(torch.minimum(x * rz, lim_x_pos), -lim_x_neg)
    ty = z_safe * torch.maximum(torch.minimum(y * rz, lim_y_pos), -lim_y_neg)
    zero = torch.zeros_like(rz)
    J = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(rz.shape + (2, 3))  # [B, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [B, N, 2, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [B, N, 2]

    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)  # [B, N, 3]

    with torch.no_grad():
        op = opacities.detach().to(dtype)[None, :].expand_as(z)
        op_ok = op >= ALPHA_THRESHOLD
        # Opacity-aware extent (gsplat 1.5, arXiv 2402.00525 B.2): beyond it alpha < 1/255 anyway.
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(MAX_EXTEND)
        radius_x = torch.ceil(extend * torch.sqrt(a.detach().clamp_min(0)))
        radius_y = torch.ceil(extend * torch.sqrt(c.detach().clamp_min(0)))
        mx, my = means2d.detach().unbind(-1)
        on_screen = (
            (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        )
        nonzero = (radius_x > 0) | (radius_y > 0)  # gsplat's radius_clip = 0 test
        valid = depth_ok & det_ok & op_ok & on_screen & nonzero
        # where(), not a product: a NaN radius (non-finite parameters) must become 0, not NaN -> int garbage.
        # The clamp keeps runaway Gaussians inside int32 (their box is clipped to the image anyway).
        radii = torch.stack([radius_x, radius_y], dim=-1).clamp_max(2.0**30)
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return means2d, conics, z, radii


# ---------------------------------------------------------------------------------------- compositing
def _pixel_pairs(
    means2d: Tensor, radii: Tensor, width: int, row0: int, row1: int
) -> Tuple[Tensor, Tensor]:
    """(pixel, Gaussian) pairs of one camera and one band of rows ``[row0, row1)``.

    Args:
        means2d: [G, 2] detached pixel means of the camera's visible Gaussians, in depth order.
        radii: [G, 2] their per-axis radii (> 0).

    Returns:
        pix [P] int64 pixel index within the band (row-major), gid [P] int64 index into the G
        Gaussians; sorted by pixel, and by depth (= by gid) within a pixel.
    """
    device = means2d.device
    r = radii.to(means2d.dtype)
    # Every pixel whose centre lies in [mean - r, mean + r] (one pixel generous; alpha < 1/255 outside).
    lo = torch.floor(means2d - r).to(torch.int64)
    hi = torch.ceil(means2d + r).to(torch.int64)
    x0, x1 = lo[:, 0].clamp(0, width), hi[:, 0].clamp(0, width)
    y0, y1 = lo[:, 1].clamp(row0, row1), hi[:, 1].clamp(row0, row1)
    nx, ny = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
    counts = nx * ny
    total = int(counts.sum())
    if total == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty
    gid = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
    # One gather of every per-Gaussian quantity a pair needs (index_select: one pass, not one per column).
    start = torch.cumsum(counts, 0) - counts
    x0_g, y0_g, nx_g, start_g = torch.stack([x0, y0, nx, start], dim=1).index_select(0, gid).unbind(1)
    k = torch.arange(total, device=device) - start_g
    px = x0_g + k % nx_g
    py = y0_g + k // nx_g
    pix = (py - row0) * width + px
    # Pairs come out grouped by Gaussian (depth order); a stable sort by pixel keeps depth order inside
    # each pixel.
    pix, order = torch.sort(pix, stable=True)
    return pix, gid[order]


def _segment_log_transmittance(pix: Tensor, log_1m: Tensor) -> Tensor:
    """Exclusive cumulative sum of ``log_1m`` [P] within each run of equal ``pix`` [P] (sorted).

    Computed as a global cumulative sum minus its value at the run's start, in float64 because of the
    cancellation. Returns [P] float64: log of the transmittance in front of each pair.
    """
    log_1m = log_1m.to(torch.float64)
    cum_excl = torch.cumsum(log_1m, 0) - log_1m  # sum over all earlier pairs, any pixel
    _, inverse, run_len = torch.unique_consecutive(pix, return_inverse=True, return_counts=True)
    run_start = torch.cumsum(run_len, 0) - run_len
    return cum_excl - cum_excl[run_start[inverse]]


def _alpha(feats: Tensor, pix: Tensor, width: int, row0: int) -> Tuple[Tensor, Tensor]:
    """Per-pair alpha (clamped to 0.999) and Mahalanobis term sigma from gathered features [P, >=6]
    (means2d x, y, conic a, b, c, opacity)."""
    px = (pix % width).to(feats.dtype) + 0.5
    py = (pix // width + row0).to(feats.dtype) + 0.5
    dx, dy = feats[:, 0] - px, feats[:, 1] - py
    sigma = 0.5 * (feats[:, 2] * dx * dx + feats[:, 4] * dy * dy) + feats[:, 3] * dx * dy
    return torch.clamp_max(feats[:, 5] * torch.exp(-sigma), MAX_ALPHA), sigma


def _composite(
    pix: Tensor,
    gid: Tensor,
    num_pixels: int,
    width: int,
    row0: int,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    depths: Tensor,
    background: Tensor,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing of the pairs of one band (differentiable in the float tensors).

    Args:
        pix, gid: [P] from :func:`_pixel_pairs` (sorted by pixel, then depth).
        num_pixels: pixels in the band (``rows * width``).
        means2d [G, 2], conics [G, 3], opacities [G], colors [G, 3], depths [G]: the camera's visible
            Gaussians in depth order. background: [3].

    Returns:
        rgb [num_pixels, 3], alpha [num_pixels], depth [num_pixels].
    """
    dtype, device = means2d.dtype, means2d.device
    # One [G, 10] table, so the per-pair gather (and its scatter-add in backward) happens once.
    table = torch.cat([means2d, conics, opacities[:, None], colors, depths[:, None]], dim=-1)
    log_t_final = torch.zeros(num_pixels, dtype=torch.float64, device=device)
    rgb = torch.zeros(num_pixels, 3, dtype=dtype, device=device)
    acc_depth = torch.zeros(num_pixels, dtype=dtype, device=device)
    if pix.numel() > 0:
        with torch.no_grad():
            # Pass 1 (no autograd): find the pairs that contribute. A pair is skipped when its alpha is
            # below 1/255 (or sigma < 0), and a pixel stops before the Gaussian whose next transmittance
            # would be <= 1e-4 (gsplat's early termination). log T is non-increasing along a pixel's
            # run, so the survivors are, per pixel, a prefix of the non-skipped pairs: dropping the rest
            # leaves every survivor's transmittance unchanged.
            # only the six columns alpha needs, gathered in one pass
            alpha, sigma = _alpha(table.detach()[:, :6].contiguous().index_select(0, gid), pix, width, row0)
            keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
            log_1m = torch.log1p(-torch.where(keep, alpha, torch.zeros_like(alpha)))
            log_T = _segment_log_transmittance(pix, log_1m)
            keep &= (log_T + log_1m) > math.log(TRANSMITTANCE_THRESHOLD)
            pix, gid = pix[keep], gid[keep]
        # Pass 2 (autograd) over the contributing pairs only: less memory and a cheaper backward.
        feats = table.index_select(0, gid)  # [P', 10]; its backward (index_add) is deterministic on the CPU
        alpha, _ = _alpha(feats, pix, width, row0)
        log_1m = torch.log1p(-alpha)
        weights = alpha * torch.exp(_segment_log_transmittance(pix, log_1m)).to(dtype)  # [P']
        rgb = rgb.index_add(0, pix, weights[:, None] * feats[:, 6:9])
        acc_depth = acc_depth.index_add(0, pix, weights * feats[:, 9])
        log_t_final = log_t_final.index_add(0, pix, log_1m.to(torch.float64))
    T = torch.exp(log_t_final).to(dtype)
    alpha_img = 1.0 - T
    rgb = rgb + T[:, None] * background
    depth = acc_depth / alpha_img.clamp_min(1e-10)
    return rgb, alpha_img, depth


def _row_bands(means2d: Tensor, radii: Tensor, width: int, height: int, max_pairs: int) -> List[Tuple[int, int]]:
    """Split ``[0, height)`` into bands of consecutive rows holding about ``max_pairs`` pairs each."""
    r = radii.to(means2d.dtype)
    lo = torch.floor(means2d - r).to(torch.int64)
    hi = torch.ceil(means2d + r).to(torch.int64)
    nx = (hi[:, 0].clamp(0, width) - lo[:, 0].clamp(0, width)).clamp_min(0)
    y0, y1 = lo[:, 1].clamp(0, height), hi[:, 1].clamp(0, height)
    diff = torch.zeros(height + 1, dtype=torch.int64, device=means2d.device)
    diff.index_add_(0, y0, nx).index_add_(0, y1, -nx)
    per_row = torch.cumsum(diff, 0)[:height].tolist()  # pairs in each row
    if sum(per_row) <= max_pairs:
        return [(0, height)]
    bands, start, acc = [], 0, 0
    for row, n in enumerate(per_row):
        if acc > 0 and acc + n > max_pairs:
            bands.append((start, row))
            start, acc = row, 0
        acc += n
    bands.append((start, height))
    return bands


def _sanitize(means: Tensor, quats: Tensor, scales: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Replace Gaussians with non-finite means, rotations, scales or 3D covariance by harmless values.

    Returns the three tensors and ``finite`` [N] bool; the caller culls ``~finite``. Without this, a
    runaway Gaussian (say a scale of 1e20, whose covariance overflows float32) would be culled in the
    forward pass but leak NaN into *its own* gradients through ``0 * inf`` in backward; gsplat skips culled
    Gaussians in backward and gives them zero, and so do we.
    """
    with torch.no_grad():
        M = quat_to_rotmat(quats) * scales[:, None, :]
        finite = (
            torch.isfinite(means).all(-1)
            & torch.isfinite(quats).all(-1)
            & torch.isfinite(scales).all(-1)
            & torch.isfinite(M @ M.transpose(-1, -2)).flatten(1).all(-1)
        )
    if bool(finite.all()):
        return means, quats, scales, finite
    keep = finite[:, None]
    means = torch.where(keep, means, torch.zeros_like(means))
    quats = torch.where(keep, quats, torch.ones_like(quats))
    scales = torch.where(keep, scales, torch.ones_like(scales))
    return means, quats, scales, finite


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    sh: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor,
    sh_degree: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    max_pairs_per_chunk: int = DEFAULT_MAX_PAIRS,
) -> RasterResult:
    """Render N Gaussians into B cameras (any device, any float dtype; differentiable).

    Args:
        means: [N, 3]. quats: [N, 4] (w x y z, need not be normalised). scales: [N, 3] standard
            deviations (already exponentiated). opacities: [N] in (0, 1) (already sigmoid-ed).
        sh: [N, K, 3] SH coefficients, ``K >= (sh_degree + 1)^2``.
        viewmats: [B, 4, 4] world-to-camera, OpenCV axes. Ks: [B, 3, 3].
        width, height: image size in pixels. backgrounds: [B, 3].
        sh_degree: SH degree used for colour (0..3).
        near_plane, far_plane: depth range kept. eps2d: pixels^2 added to the 2D covariance diagonal.
        max_pairs_per_chunk: (pixel, Gaussian) pairs per band of rows (memory bound, see module doc).

    Returns:
        rgb [B, H, W, 3], alpha [B, H, W, 1], depth [B, H, W, 1] (expected camera z, 0 where alpha = 0),
        means2d [B, N, 2] (``retain_grad`` called when it requires grad), radii [B, N] int32.
    """
    check_inputs(means, quats, scales, opacities, sh, viewmats, Ks, width, height, backgrounds, sh_degree)
    if max_pairs_per_chunk < 1:
        raise ValueError(f"max_pairs_per_chunk must be >= 1, got {max_pairs_per_chunk}")
    dtype = means.dtype
    viewmats, Ks, backgrounds = viewmats.to(dtype), Ks.to(dtype), backgrounds.to(dtype)
    B = viewmats.shape[0]

    means, quats, scales, finite = _sanitize(means, quats, scales)
    means2d, conics, depths, radii_xy = project(
        means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane, eps2d
    )
    radii_xy = torch.where(finite[None, :, None], radii_xy, torch.zeros_like(radii_xy))
    if means2d.requires_grad:
        means2d.retain_grad()  # densification reads means2d.grad (screen-space positional gradient)

    # Colours per camera: SH evaluated along the ray from the camera centre to each mean (as gsplat).
    campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [B, 3]
    dirs = means[None, :, :] - campos[:, None, :]  # [B, N, 3]
    colors = sh_to_rgb(sh_degree, sh[:, : num_sh_bases(sh_degree)], dirs)  # [B, N, 3]
    colors = colors.expand(B, -1, -1)

    use_checkpoint = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means, quats, scales, opacities, sh, backgrounds)
    )
    rgbs, alphas, depth_imgs = [], [], []
    for b in range(B):
        visible = torch.nonzero(radii_xy[b].amax(-1) > 0, as_tuple=False).squeeze(-1)
        # Stable sort: equal depths keep index order, as gsplat's (stable) radix sort of (tile, depth) keys.
        visible = visible[torch.sort(depths[b, visible].detach(), stable=True).indices]
        m2d, con = means2d[b, visible], conics[b, visible]
        op, col, dep = opacities[visible], colors[b, visible], depths[b, visible]
        m2d_det, rad = m2d.detach(), radii_xy[b, visible]
        bands = _row_bands(m2d_det, rad, width, height, max_pairs_per_chunk)
        parts = []
        for row0, row1 in bands:
            with torch.no_grad():
                pix, gid = _pixel_pairs(m2d_det, rad, width, row0, row1)
            args = (pix, gid, (row1 - row0) * width, width, row0, m2d, con, op, col, dep, backgrounds[b])
            if use_checkpoint and len(bands) > 1:
                parts.append(checkpoint(_composite, *args, use_reentrant=False))
            else:
                parts.append(_composite(*args))
        rgbs.append(torch.cat([p[0] for p in parts], 0))
        alphas.append(torch.cat([p[1] for p in parts], 0))
        depth_imgs.append(torch.cat([p[2] for p in parts], 0))

    rgb = torch.stack(rgbs).reshape(B, height, width, 3)
    alpha = torch.stack(alphas).reshape(B, height, width, 1)
    depth = torch.stack(depth_imgs).reshape(B, height, width, 1)
    radii = radii_xy.amax(-1).to(torch.int32)
    return rgb, alpha, depth, means2d, radii
