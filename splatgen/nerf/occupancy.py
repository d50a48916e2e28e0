"""Occupancy grid for empty-space skipping (Instant-NGP / stable-dreamfusion's density grid, one cascade)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """``resolution^3`` cells over ``[-bound, bound]^3`` holding a running density and an occupancy bit.

    Before the first :meth:`update` every cell counts as occupied (its density is ``+inf``, "unknown"). Each
    update decays the stored densities by ``decay``, evaluates the field at one uniformly jittered point per
    cell and keeps ``max(decayed, new)`` (an unknown cell takes the new value); the threshold is
    ``min(mean density, density_thresh)`` and a cell is occupied when its density exceeds it. Points outside
    the box are never occupied. The state lives in buffers, so ``state_dict`` captures all of it.
    """

    def __init__(self, bound: float = 1.0, resolution: int = 128, density_thresh: float = 10.0, decay: float = 0.95):
        super().__init__()
        self.bound = float(bound)
        self.resolution = int(resolution)
        self.density_thresh = float(density_thresh)
        self.decay = float(decay)
        n = self.resolution**3
        self.register_buffer("density", torch.full((n,), float("inf")))
        self.register_buffer("bitfield", torch.ones(n, dtype=torch.bool))
        self.register_buffer("mean_density", torch.tensor(float("inf")))
        self.register_buffer("threshold", torch.tensor(self.density_thresh))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("last_step", torch.tensor(-1, dtype=torch.long))

    @property
    def cell_size(self) -> float:
        return 2.0 * self.bound / self.resolution

    def cell_index(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index [N] (clamped) and whether the point lies inside the box [N]."""
        G = self.resolution
        ijk = torch.floor((x + self.bound) * (G / (2.0 * self.bound))).long()
        inside = ((x >= -self.bound) & (x <= self.bound)).all(-1)
        ijk = ijk.clamp_(0, G - 1)
        return (ijk[..., 0] * G + ijk[..., 1]) * G + ijk[..., 2], inside

    def query(self, x: Tensor) -> Tensor:
        """bool [N]: the point lies in an occupied cell."""
        idx, inside = self.cell_index(x)
        return self.bitfield[idx] & inside

    def cell_centers(self, idx: Tensor) -> Tensor:
        G = self.resolution
        k = idx % G
        j = (idx // G) % G
        i = idx // (G * G)
        ijk = torch.stack([i, j, k], -1).to(self.density.dtype)
        return (ijk + 0.5) * self.cell_size - self.bound

    @torch.no_grad()
    def update(self, field, step: Optional[int] = None, generator: Optional[torch.Generator] = None,
               chunk: int = 1 << 18) -> None:
        """Re-evaluate the field's density (``field.density(x [N, 3]) -> [N]``) at one random point per cell."""
        dev = self.density.device
        n = self.density.shape[0]
        new = torch.empty_like(self.density)
        for s in range(0, n, chunk):
            idx = torch.arange(s, min(s + chunk, n), device=dev)
            gdev = generator.device if generator is not None else dev
            jitter = torch.rand(idx.shape[0], 3, generator=generator, device=gdev).to(dev) - 0.5
            pts = self.cell_centers(idx) + jitter * self.cell_size
            new[s:s + idx.shape[0]] = field.density(pts).reshape(-1).float()
        old = self.density
        merged = torch.where(torch.isinf(old), new, torch.maximum(old * self.decay, new))
        self.density.copy_(merged)
        mean = merged.mean()
        self.mean_density.copy_(mean)
        self.threshold.fill_(min(float(mean), self.density_thresh))
        self.bitfield.copy_(merged > self.threshold)
        self.num_updates += 1
        if step is not None:
            self.last_step.fill_(int(step))

    def num_occupied(self) -> int:
        return int(self.bitfield.sum())
