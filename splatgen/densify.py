"""Adaptive density control for SDS: the PyTorch reference.

The Triton version (``splatgen_kernels.densify``) makes the same decisions and the same output layout and
is tested against these functions.

One densification step, from statistics gathered since the last one:

1. ``accumulate_stats``: after each backward, add the image-size-normalised norm of ``means2d.grad`` of every
   view in which a Gaussian is visible (``radii > 0``), count those views, and track the largest screen
   radius (as a fraction of the image side).
2. ``densify_decisions``: from the average gradient, scales and opacities decide per Gaussian:
   *grow* if its average gradient exceeds ``grad_threshold``; grown Gaussians are *cloned* when small
   (largest scale <= ``dense_scale * scene_extent``) and *split* otherwise; *prune* when transparent
   (opacity < ``min_opacity``), too large in the world (> ``max_world_scale * scene_extent``) or on screen
   (max radius fraction > ``max_screen_fraction``). A pruned Gaussian never grows. Growth is capped so the
   model can never exceed ``max_gaussians``: when there are more candidates than room, the ones with the
   largest average gradient win (ties: lower index).
3. ``apply_densify``: the new set is, in this order, the survivors (not pruned, not split) in their original
   order, then one copy of each cloned Gaussian, then the first child of each split Gaussian, then the
   second child. Children are drawn from the parent's Gaussian (``mean + R diag(s) z``, z ~ N(0, I)) and
   get scales ``s / split_shrink``. Adam moments of survivors and clones are kept; children start at zero.

Why the normalisation: ``means2d`` is in pixels, so its gradient scales with the image size; multiplying by
``(W/2, H/2)`` expresses it per normalised device coordinate, so one threshold works at every render
resolution of the coarse-to-fine schedule (3DGS and gsplat do the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

from .config import DensifyConfig
from .gaussians import GaussianModel, quat_to_rotmat


@dataclass
class DensifyStats:
    """Running statistics per Gaussian since the last densification (all [N] float32)."""

    grad2d_sum: Tensor
    count: Tensor
    max_radii: Tensor

    @classmethod
    def zeros(cls, n: int, device: torch.device | str = "cpu") -> "DensifyStats":
        z = lambda: torch.zeros(n, dtype=torch.float32, device=device)  # noqa: E731
        return cls(z(), z(), z())

    def __len__(self) -> int:
        return self.grad2d_sum.shape[0]


@dataclass(kw_only=True)
class DensifyParams:
    """The thresholds of one densification step: the ``densify`` settings of that name (:class:`DensifyConfig`,
    which documents them and holds their defaults) without the schedule."""

    grad_threshold: float = DensifyConfig.grad_threshold
    dense_scale: float = DensifyConfig.dense_scale
    scene_extent: float = DensifyConfig.scene_extent
    min_opacity: float = DensifyConfig.min_opacity
    max_world_scale: float = DensifyConfig.max_world_scale
    max_screen_fraction: float = DensifyConfig.max_screen_fraction
    split_shrink: float = DensifyConfig.split_shrink
    max_gaussians: int = DensifyConfig.max_gaussians

    @classmethod
    def from_config(cls, cfg) -> "DensifyParams":
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})


def accumulate_stats(stats: DensifyStats, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
    """Add one step's statistics in place.

    Args:
        means2d_grad: [B, N, 2] gradient of the projected means (pixels).
        radii: [B, N] screen radii in pixels, 0 where the Gaussian is not visible.
    """
    g = means2d_grad.float()
    scale = torch.tensor([width * 0.5, height * 0.5], dtype=torch.float32, device=g.device)
    norm = (g * scale).norm(dim=-1)  # [B, N]
    visible = radii > 0
    stats.grad2d_sum += torch.where(visible, norm, torch.zeros_like(norm)).sum(0)
    stats.count += visible.sum(0).float()
    # Multiply by the reciprocal rather than divide: PyTorch's CUDA division by a scalar does exactly this,
    # so the CPU and CUDA references (and the Triton kernel) agree to the bit.
    frac = radii.float() * (1.0 / float(max(width, height)))
    stats.max_radii = torch.maximum(stats.max_radii, frac.max(0).values)


def densify_decisions(
    stats: DensifyStats, scales_log: Tensor, opacities_logit: Tensor, p: DensifyParams
) -> Dict[str, Tensor]:
    """Boolean masks [N] ``clone``, ``split``, ``prune`` (see the module docstring for the rules)."""
    n = scales_log.shape[0]
    avg = stats.grad2d_sum / stats.count.clamp_min(1.0)
    max_scale = torch.exp(scales_log.float()).amax(dim=-1)
    opacity = torch.sigmoid(opacities_logit.float())
    prune = (opacity < p.min_opacity) | (max_scale > p.max_world_scale * p.scene_extent)
    if p.max_screen_fraction > 0:
        prune |= stats.max_radii > p.max_screen_fraction
    grow = (avg > p.grad_threshold) & (stats.count > 0) & ~prune
    room = max(0, p.max_gaussians - n)
    n_grow = int(grow.sum())
    if n_grow > room:
        # Stable ordering: largest average gradient first, then lower index.
        key = torch.where(grow, avg, torch.full_like(avg, -math.inf))
        order = torch.sort(-key, stable=True).indices
        keep = torch.zeros_like(grow)
        keep[order[:room]] = True
        grow &= keep
    small = max_scale <= p.dense_scale * p.scene_extent
    return {"clone": grow & small, "split": grow & ~small, "prune": prune}


def split_children(means: Tensor, scales_log: Tensor, quats: Tensor, z: Tensor, shrink: float):
    """Means [2, M, 3] and log scales [M, 3] of the two children of M split Gaussians.

    ``z`` [2, M, 3] are standard normal samples; child k sits at ``mean + R diag(exp(scales)) z[k]``.
    """
    R = quat_to_rotmat(quats.float())
    s = torch.exp(scales_log.float())
    offsets = torch.einsum("mij,kmj->kmi", R, s[None] * z.float())
    child_means = means.float()[None] + offsets
    child_scales = scales_log.float() - math.log(shrink)
    return child_means.to(means.dtype), child_scales.to(scales_log.dtype)


def apply_densify(
    model: GaussianModel, masks: Dict[str, Tensor], p: DensifyParams, generator: Optional[torch.Generator] = None
) -> Dict[str, int]:
    """Apply clone/split/prune to ``model`` (parameters and optimizer state). Returns the counts."""
    clone, split, prune = masks["clone"], masks["split"], masks["prune"]
    n_split = int(split.sum())
    survivors = ~(prune | split)
    params = {k: v.data for k, v in model.params.items()}
    clone_idx = torch.nonzero(clone).squeeze(-1)
    split_idx = torch.nonzero(split).squeeze(-1)
    # Draw on the CPU generator so a seed gives the same children on any device.
    z = torch.randn(2, n_split, 3, generator=generator).to(model.device)
    child_means, child_scales = split_children(
        params["means"][split_idx], params["scales"][split_idx], params["quats"][split_idx], z, p.split_shrink
    )
    surv_idx = torch.nonzero(survivors).squeeze(-1)

    def new_rows(name: str, x: Tensor) -> Tensor:
        parts = [x[surv_idx], x[clone_idx]]
        if name == "means":
            parts += [child_means[0], child_means[1]]
        elif name == "scales":
            parts += [child_scales, child_scales]
        else:
            parts += [x[split_idx], x[split_idx]]
        return torch.cat(parts, dim=0)

    def new_state(name: str, s: Tensor) -> Tensor:
        zeros = torch.zeros((2 * n_split, *s.shape[1:]), dtype=s.dtype, device=s.device)
        return torch.cat([s[surv_idx], s[clone_idx], zeros], dim=0)

    model.update(new_rows, new_state)
    return {
        "cloned": int(clone_idx.numel()),
        "split": n_split,
        "pruned": int((prune & ~split).sum()),
        "total": len(model),
    }


def densify_step(
    model: GaussianModel, stats: DensifyStats, p: DensifyParams, generator: Optional[torch.Generator] = None
) -> Dict[str, int]:
    """Decide and apply one densification step with the PyTorch reference."""
    assert len(stats) == len(model), "densification statistics out of sync with the model"
    masks = densify_decisions(stats, model.params["scales"].data, model.params["opacities"].data, p)
    return apply_densify(model, masks, p, generator)
