"""The NeRF's density as 3D Gaussians (written as a 3DGS ``.ply`` by the exporters): one isotropic Gaussian per
occupied export-grid cell."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..gaussians import rgb_to_sh0


def nerf_to_gaussian_params(model, resolution: Optional[int] = None, threshold: Optional[float] = None,
                            max_points: int = 200000) -> dict:
    """gsplat-layout tensors (see :mod:`splatgen.gaussians`) of the density point cloud of ``model``.

    Each point of :meth:`NeRFModel.extract_points` becomes a Gaussian with standard deviation half the export
    grid's cell, identity rotation, opacity ``1 - exp(-sigma * cell)`` (the alpha of one cell step, clamped to
    [1e-4, 1 - 1e-4] before the logit) and SH DC from the albedo.
    """
    res = int(resolution or model.cfg.export_resolution)
    cell = 2.0 * model.cfg.bound / res
    xyz, rgb, dens = model.extract_points(res, threshold, max_points)
    n = xyz.shape[0]
    alpha = (1.0 - torch.exp(-dens.float() * cell)).clamp(1e-4, 1.0 - 1e-4)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return {
        "means": xyz.float().cpu(),
        "scales": torch.full((n, 3), math.log(cell / 2.0)),
        "quats": quats,
        "opacities": torch.logit(alpha).cpu(),
        "sh0": rgb_to_sh0(rgb.float().cpu()).reshape(n, 1, 3),
        "shN": torch.zeros(n, 0, 3),
    }
