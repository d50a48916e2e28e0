"""Multi-resolution hash-grid encoding (Instant-NGP) in plain PyTorch.

Level ``l`` of ``L`` has resolution ``N_l = floor(N_0 * b^l)`` with ``b = exp((ln N_max - ln N_0) / (L - 1))``
and ``N_l + 1`` vertices per axis over the unit cube. A level whose dense vertex grid ``(N_l + 1)^3`` fits in
the table (``2^log2_hashmap_size`` rows) is indexed densely (one row per vertex, no collisions); the finer
levels use Instant-NGP's spatial hash ``(x * 1) ^ (y * 2654435761) ^ (z * 805459861) mod T``. A point's
feature at each level is the (linear or smoothstep) trilinear interpolation of its cell's 8 corner rows; the
output concatenates the levels, ``[N, L * F]``.

All levels go through one gather per corner (8 gathers per chunk of points). When the input needs no
gradient (the renderer never needs one: normals come from finite differences) a custom autograd function
keeps only the input points for the backward pass and recomputes the corner indices and weights there, so
training memory is ``O(N)`` rather than ``O(N * L * 8)``; points are processed in chunks in both passes.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

PRIMES = (1, 2654435761, 805459861)


def level_resolutions(num_levels: int, base_resolution: int, desired_resolution: int) -> List[int]:
    """``floor(base * b^l)`` for ``l = 0..L-1`` with the growth factor ``b`` that reaches ``desired`` at the end."""
    if num_levels == 1:
        return [int(base_resolution)]
    b = math.exp((math.log(desired_resolution) - math.log(base_resolution)) / (num_levels - 1))
    # The tiny epsilon keeps floor(16 * b^15) == 2048 despite rounding in b.
    return [int(math.floor(base_resolution * b**lvl + 1e-6)) for lvl in range(num_levels)]


class _Meta:
    """Per-level constants as tensors on one device (rebuilt lazily when the device changes)."""

    def __init__(self, res: List[int], dense: List[bool], offsets: List[int], table_size: int, device):
        self.L = len(res)
        self.num_dense = sum(dense)
        self.res_f = torch.tensor(res, dtype=torch.float32, device=device)
        self.res_max = torch.tensor([r - 1 for r in res], dtype=torch.long, device=device)
        nd = self.num_dense
        side = torch.tensor([r + 1 for r in res[:nd]], dtype=torch.long, device=device)
        # per-axis multipliers: dense strides (1, side, side^2), then the hash primes
        self.mult = torch.ones(3, self.L, dtype=torch.long, device=device)
        self.mult[1, :nd] = side
        self.mult[2, :nd] = side * side
        self.mult[0, nd:] = PRIMES[0]
        self.mult[1, nd:] = PRIMES[1]
        self.mult[2, nd:] = PRIMES[2]
        self.offsets = torch.tensor(offsets, dtype=torch.long, device=device)
        self.hash_mask = table_size - 1
        self.device = device


def _corner_terms(x01: Tensor, meta: _Meta, smoothstep: bool) -> Tuple[List[List[Tensor]], List[List[Tensor]]]:
    """Per axis ``d`` and side ``k`` in {0, 1}: the index term [n, L] (long) and the weight [n, L]."""
    pos = x01.unsqueeze(1) * meta.res_f[None, :, None]  # [n, L, 3] in [0, res]
    grid = torch.minimum(pos.detach().floor().long(), meta.res_max[None, :, None]).clamp_(min=0)
    t = pos - grid.to(pos.dtype)  # [n, L, 3] in [0, 1]
    if smoothstep:
        t = t * t * (3.0 - 2.0 * t)
    idx_terms, w_terms = [], []
    for d in range(3):
        g = grid[..., d]
        m = meta.mult[d]
        idx_terms.append([g * m, (g + 1) * m])
        w_terms.append([1.0 - t[..., d], t[..., d]])
    return idx_terms, w_terms


def _corner_index(idx_terms, c: int, meta: _Meta) -> Tensor:
    """Table rows [n, L] of corner ``c`` (bit d of c = the +1 side along axis d)."""
    ax, ay, az = (idx_terms[d][(c >> d) & 1] for d in range(3))
    nd = meta.num_dense
    if nd == meta.L:
        idx = ax + ay + az
    elif nd == 0:
        idx = (ax ^ ay ^ az) & meta.hash_mask
    else:
        idx = torch.cat([ax[:, :nd] + ay[:, :nd] + az[:, :nd],
                         (ax[:, nd:] ^ ay[:, nd:] ^ az[:, nd:]) & meta.hash_mask], dim=1)
    return idx + meta.offsets


def _gather_rows(table: Tensor, idx: Tensor) -> Tensor:
    """``table[idx]`` [M, F]. Without autograd, rows of two float32 are fetched as one int64 (~3x faster)."""
    F = table.shape[1]
    if F == 2 and table.dtype == torch.float32 and table.is_contiguous() and not (
            torch.is_grad_enabled() and table.requires_grad):
        return table.view(torch.int64).view(-1).index_select(0, idx).view(torch.float32).view(-1, 2)
    return table.index_select(0, idx)


def _add_rows(grad_table: Tensor, idx: Tensor, src: Tensor) -> None:
    """``grad_table[idx] += src`` with repeated indices accumulated."""
    if grad_table.device.type == "cpu" and grad_table.shape[1] == 2 and grad_table.dtype == torch.float32:
        # on CPU, pairs of floats as complex64 scatter ~1.5x faster than rows of two
        grad_table.view(torch.complex64).view(-1).index_add_(
            0, idx, src.contiguous().view(torch.complex64).view(-1))
    else:
        grad_table.index_add_(0, idx, src)


def _encode_chunk(x01: Tensor, table: Tensor, meta: _Meta, smoothstep: bool) -> Tensor:
    """[n, L, F] features of one chunk (differentiable through autograd in ``x01`` and ``table``)."""
    n, F = x01.shape[0], table.shape[1]
    idx_terms, w_terms = _corner_terms(x01, meta, smoothstep)
    out = None
    for c in range(8):
        idx = _corner_index(idx_terms, c, meta)
        w = w_terms[0][c & 1] * w_terms[1][(c >> 1) & 1] * w_terms[2][(c >> 2) & 1]  # [n, L]
        feat = _gather_rows(table, idx.reshape(-1)).view(n, meta.L, F)
        term = w.unsqueeze(-1) * feat
        out = term if out is None else out + term
    return out


class _HashGridFunction(torch.autograd.Function):
    """Encoding whose backward recomputes indices and weights (gradient to the table only)."""

    @staticmethod
    def forward(ctx, x01: Tensor, table: Tensor, meta: _Meta, smoothstep: bool, chunk: int) -> Tensor:
        n = x01.shape[0]
        out = table.new_empty(n, meta.L * table.shape[1])
        with torch.no_grad():
            for s in range(0, n, chunk):
                out[s:s + chunk] = _encode_chunk(x01[s:s + chunk], table, meta, smoothstep).reshape(-1, out.shape[1])
        ctx.save_for_backward(x01)
        ctx.meta, ctx.smoothstep, ctx.chunk, ctx.table_shape = meta, smoothstep, chunk, table.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x01,) = ctx.saved_tensors
        meta, chunk = ctx.meta, ctx.chunk
        rows, F = ctx.table_shape
        grad_table = grad_out.new_zeros(rows, F)
        grad_out = grad_out.reshape(-1, meta.L, F)
        with torch.no_grad():
            for s in range(0, x01.shape[0], chunk):
                idx_terms, w_terms = _corner_terms(x01[s:s + chunk], meta, ctx.smoothstep)
                g = grad_out[s:s + chunk]
                for c in range(8):
                    idx = _corner_index(idx_terms, c, meta)
                    w = w_terms[0][c & 1] * w_terms[1][(c >> 1) & 1] * w_terms[2][(c >> 2) & 1]
                    _add_rows(grad_table, idx.reshape(-1), (w.unsqueeze(-1) * g).reshape(-1, F))
        return None, grad_table, None, None, None


class HashGridEncoding(nn.Module):
    """Instant-NGP multi-resolution hash grid. ``forward(x [N, 3] in [-bound, bound]^3) -> [N, L * F]``.

    Args:
        bound: half side of the cube the inputs live in (inputs are clamped to it).
        (The NeRF's values of these, and their defaults, are :class:`~splatgen.config.NerfConfig`'s.)
        num_levels, level_dim: ``L`` levels of ``F`` features.
        base_resolution, desired_resolution: coarsest and finest grid resolution.
        log2_hashmap_size: ``T = 2^log2_hashmap_size`` table rows per level (fewer for dense levels).
        interpolation: ``'smoothstep'`` (stable-dreamfusion's choice for its grid backbone) or ``'linear'``.
        chunk: points per chunk inside the encoding (bounds the ``[chunk, L]`` temporaries).
    """

    def __init__(
        self,
        *,
        bound: float,
        num_levels: int,
        level_dim: int,
        base_resolution: int,
        log2_hashmap_size: int,
        desired_resolution: int,
        interpolation: str,
        chunk: int = 1 << 19,
    ):
        super().__init__()
        if interpolation not in ("linear", "smoothstep"):
            raise ValueError(f"interpolation must be 'linear' or 'smoothstep', got {interpolation!r}")
        self.bound = float(bound)
        self.num_levels = num_levels
        self.level_dim = level_dim
        self.log2_hashmap_size = log2_hashmap_size
        self.interpolation = interpolation
        self.chunk = int(chunk)
        T = 1 << log2_hashmap_size
        self.resolutions = level_resolutions(num_levels, base_resolution, desired_resolution)
        self.dense = [(r + 1) ** 3 <= T for r in self.resolutions]
        assert all(self.dense[i] >= self.dense[i + 1] for i in range(num_levels - 1)), "dense levels come first"
        sizes = [int(math.ceil((r + 1) ** 3 / 8) * 8) if dn else T for r, dn in zip(self.resolutions, self.dense)]
        sizes = [min(s, T) for s in sizes]
        self.level_sizes = sizes
        self.level_offsets = [sum(sizes[:i]) for i in range(num_levels)]
        self.output_dim = num_levels * level_dim
        self.embeddings = nn.Parameter(torch.empty(sum(sizes), level_dim).uniform_(-1e-4, 1e-4))
        self._meta: _Meta | None = None

    def meta(self, device) -> _Meta:
        if self._meta is None or self._meta.device != device:
            self._meta = _Meta(self.resolutions, self.dense, self.level_offsets, 1 << self.log2_hashmap_size, device)
        return self._meta

    def normalize(self, x: Tensor) -> Tensor:
        """World points -> [0, 1]^3 (clamped)."""
        return ((x + self.bound) / (2.0 * self.bound)).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        prefix = x.shape[:-1]
        x01 = self.normalize(x.reshape(-1, 3).float())
        meta = self.meta(x01.device)
        smooth = self.interpolation == "smoothstep"
        if x01.requires_grad:  # differentiable in the input too: plain autograd (more memory)
            parts = [_encode_chunk(x01[s:s + self.chunk], self.embeddings, meta, smooth).reshape(-1, self.output_dim)
                     for s in range(0, x01.shape[0], self.chunk)]
            out = torch.cat(parts, 0) if parts else x01.new_zeros(0, self.output_dim)
        else:
            out = _HashGridFunction.apply(x01.contiguous(), self.embeddings, meta, smooth, self.chunk)
        return out.reshape(*prefix, self.output_dim)

    def extra_repr(self) -> str:
        return (f"levels={self.num_levels} F={self.level_dim} res={self.resolutions[0]}..{self.resolutions[-1]} "
                f"T=2^{self.log2_hashmap_size} dense_levels={sum(self.dense)} rows={self.embeddings.shape[0]} "
                f"interpolation={self.interpolation}")
