"""The CUDA backend: a thin wrapper over ``gsplat.rasterization`` (gsplat >= 1.4, written against 1.5.3).

gsplat is imported inside :func:`rasterize`, never at module import, so splatgen imports (and its CPU
tests run) on machines where gsplat or CUDA is missing; gsplat also JIT-compiles its CUDA sources on
first use, which we only want to pay when the GPU path actually runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DeviceError
from .torch_backend import RasterResult, check_inputs


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
) -> RasterResult:
    """Same signature and outputs as :func:`splatgen.render.torch_backend.rasterize`, on CUDA via gsplat.

    Args:
        means [N, 3], quats [N, 4], scales [N, 3] (exponentiated), opacities [N] (sigmoid-ed),
        sh [N, K, 3], viewmats [B, 4, 4], Ks [B, 3, 3], backgrounds [B, 3]: CUDA float32 tensors.

    Returns:
        rgb [B, H, W, 3], alpha [B, H, W, 1], depth [B, H, W, 1], means2d [B, N, 2], radii [B, N] int32.
    """
    check_inputs(means, quats, scales, opacities, sh, viewmats, Ks, width, height, backgrounds, sh_degree)
    if means.device.type != "cuda":
        raise DeviceError(f"gsplat needs CUDA; use render.backend=torch on CPU (the tensors are on {means.device})")
    if means.dtype != torch.float32:
        raise ValueError(f"gsplat renders float32 only, got {means.dtype}; use render.backend=torch for other dtypes")
    try:
        from gsplat import rasterization
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise DeviceError(
            f"render.backend=gsplat but gsplat cannot be imported ({err}); use render.backend=torch"
        ) from err

    render_colors, render_alphas, meta = rasterization(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        # SH coefficients with sh_degree set: gsplat evaluates them along mean - camera centre and applies
        # clamp_min(. + 0.5, 0); this also covers degree 0 (K = 1).
        colors=sh,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        sh_degree=sh_degree,
        # packed=False: gsplat's DefaultStrategy (and our densification) read means2d.grad and radii as dense
        # [C, N, ...] tensors, which is the unpacked layout; and when one object fills the frame most
        # Gaussians are visible in every view, so packing buys no memory and costs an extra gather.
        packed=False,
        backgrounds=backgrounds,
        render_mode="RGB+ED",  # last channel: expected depth sum(w z) / alpha
        rasterize_mode="classic",
    )
    means2d = meta["means2d"]  # [B, N, 2]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5: per-axis radii [B, N, 2]; older versions give [B, N]
        radii = radii.amax(dim=-1)
    return (
        render_colors[..., :3],
        render_alphas,
        render_colors[..., 3:4],
        means2d,
        radii.to(torch.int32),
    )

