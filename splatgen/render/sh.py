"""Real spherical harmonics (degrees 0-3) in the convention of 3DGS and gsplat.

Basis ``k = l * l + l + m`` (``m = -l .. l``) is the real spherical harmonic with the Condon-Shortley phase,
evaluated at a *unit* direction ``(x, y, z)``. The constants and the evaluation order are those of
gsplat's CUDA kernel ``sh_coeffs_to_color_fast`` (Sloan, "Efficient Spherical Harmonic Evaluation",
JCGT 2013), which is in turn numerically the same as the INRIA 3DGS ``SH_C0..SH_C3`` code:

- degree 0: ``C0``
- degree 1: ``-C1 y, C1 z, -C1 x``
- degree 2: ``C2 * 2xy, -2 C2 yz, 0.9462 z^2 - 0.3154, -2 C2 xz, C2 (x^2 - y^2)`` ...

Colours follow gsplat: ``rgb = max(eval_sh(...) + 0.5, 0)``. The view direction of a Gaussian is
``normalize(mean - camera_centre)`` (from the camera to the Gaussian).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..gaussians import SH_C0, num_sh_bases

MAX_SH_DEGREE = 3
SH_C1 = 0.48860251190292


def _check_degree(degree: int) -> None:
    if not isinstance(degree, int) or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be an int in [0, {MAX_SH_DEGREE}], got {degree!r}")


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values at directions ``dirs``.

    Args:
        degree: 0..3.
        dirs: [..., 3] directions; normalised here (a zero vector gives a zero direction, not NaN).

    Returns:
        [..., (degree + 1)^2] basis values, ordered ``l^2 + l + m``.
    """
    _check_degree(degree)
    if dirs.shape[-1] != 3:
        raise ValueError(f"dirs must have shape [..., 3], got {tuple(dirs.shape)}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        d = F.normalize(dirs, dim=-1)
        x, y, z = d.unbind(-1)
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
        if degree >= 2:
            z2 = z * z
            tmp0b = -1.092548430592079 * z
            c1 = x * x - y * y
            s1 = 2.0 * x * y
            out += [
                0.5462742152960395 * s1,  # 4: xy
                tmp0b * y,  # 5: yz
                0.9461746957575601 * z2 - 0.3153915652525201,  # 6: 3z^2 - 1
                tmp0b * x,  # 7: xz
                0.5462742152960395 * c1,  # 8: x^2 - y^2
            ]
            if degree >= 3:
                tmp0c = -2.285228997322329 * z2 + 0.4570457994644658
                tmp1b = 1.445305721320277 * z
                c2 = x * c1 - y * s1
                s2 = x * s1 + y * c1
                out += [
                    -0.5900435899266435 * s2,  # 9
                    tmp1b * s1,  # 10
                    tmp0c * y,  # 11
                    z * (1.865881662950577 * z2 - 1.119528997770346),  # 12
                    tmp0c * x,  # 13
                    tmp1b * c1,  # 14
                    -0.5900435899266435 * c2,  # 15
                ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """Sum of SH coefficients times basis values (gsplat's ``spherical_harmonics``), no offset, no clamp.

    Args:
        degree: SH degree to use, 0..3; only the first ``(degree + 1)^2`` coefficients are read.
        sh: [..., K, 3] coefficients with ``K >= (degree + 1)^2``.
        dirs: [..., 3] view directions (any length; normalised here). Broadcast against ``sh[..., 0, :]``.

    Returns:
        [..., 3] raw SH value per channel.
    """
    _check_degree(degree)
    k = num_sh_bases(degree)
    if sh.dim() < 2 or sh.shape[-1] != 3 or sh.shape[-2] < k:
        raise ValueError(
            f"sh must have shape [..., K, 3] with K >= {k} for degree {degree}, got {tuple(sh.shape)}"
        )
    basis = sh_basis(degree, dirs)  # [..., k]
    return (basis.unsqueeze(-1) * sh[..., :k, :]).sum(dim=-2)


def sh_to_rgb(degree: int, sh: Tensor, dirs: Tensor) -> Tensor:
    """Colour of Gaussians as gsplat computes it: ``clamp_min(eval_sh(...) + 0.5, 0)``.

    Only clamped below (as gsplat and INRIA's rasterizer do); values above 1 are kept.

    Args/Returns: as :func:`eval_sh`; [..., 3] colours.
    """
    return torch.clamp_min(eval_sh(degree, sh, dirs) + 0.5, 0.0)
