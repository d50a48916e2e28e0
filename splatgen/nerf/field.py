"""The NeRF field: hash grid -> small MLP -> (density, albedo), stable-dreamfusion's ``--backbone grid``."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoding import HashGridEncoding


class _TruncExp(torch.autograd.Function):
    """``exp`` whose gradient uses ``exp(min(x, 15))`` (stable-dreamfusion's ``trunc_exp``); the forward is
    clamped at ``x = 80`` so the density stays finite in float32."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x.clamp(max=80.0))

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    return _TruncExp.apply(x)


class NeRFField(nn.Module):
    """Density and albedo at points of ``[-bound, bound]^3``.

    ``density = act(raw + blob(x))`` where ``act`` is ``exp`` (truncated gradient) or ``softplus``, and the
    blob is stable-dreamfusion's ``density_blob``: ``blob_density * exp(-|x|^2 / (2 r^2))`` for ``exp``, the
    cone ``blob_density * (1 - |x| / r)`` for ``softplus``. ``albedo = sigmoid(raw_rgb)``.

    The field lives in its encoding's box (``encoding.bound``). The sizes and the blob have no defaults here:
    :class:`~splatgen.config.NerfConfig` holds them.
    """

    def __init__(
        self,
        encoding: HashGridEncoding,
        *,
        hidden_dim: int,
        num_layers: int,
        density_activation: str,
        blob_density: float,
        blob_radius: float,
        normal_eps: Optional[float] = None,
    ):
        super().__init__()
        if density_activation not in ("exp", "softplus"):
            raise ValueError(f"density_activation must be 'exp' or 'softplus', got {density_activation!r}")
        self.bound = encoding.bound
        self.density_activation = density_activation
        self.blob_density = float(blob_density)
        self.blob_radius = float(blob_radius)
        self.normal_eps = 1e-2 * self.bound if normal_eps is None else float(normal_eps)
        self.encoding = encoding
        dims = [self.encoding.output_dim] + [hidden_dim] * (num_layers - 1) + [4]
        self.mlp = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(num_layers))

    # ------------------------------------------------------------------ pieces
    def blob(self, x: Tensor) -> Tensor:
        d2 = (x * x).sum(-1)
        if self.density_activation == "exp":
            return self.blob_density * torch.exp(-d2 / (2.0 * self.blob_radius**2))
        return self.blob_density * (1.0 - torch.sqrt(d2) / self.blob_radius)

    def activate(self, raw: Tensor) -> Tensor:
        return trunc_exp(raw) if self.density_activation == "exp" else F.softplus(raw)

    def raw(self, x: Tensor) -> Tensor:
        """[N, 4] MLP output (density logit before the blob, albedo logits)."""
        h = self.encoding(x)
        for i, layer in enumerate(self.mlp):
            h = layer(h)
            if i < len(self.mlp) - 1:
                h = F.relu(h)
        return h

    # ------------------------------------------------------------------ queries
    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``x`` [N, 3] -> density [N], albedo [N, 3]."""
        h = self.raw(x)
        sigma = self.activate(h[..., 0] + self.blob(x))
        return sigma, torch.sigmoid(h[..., 1:])

    def density(self, x: Tensor) -> Tensor:
        """[N] density only."""
        return self.activate(self.raw(x)[..., 0] + self.blob(x))

    def normal(self, x: Tensor) -> Tensor:
        """[N, 3] unit normals ``-grad(density) / |grad(density)|`` by central differences (6 density
        evaluations per point, displaced points clamped into the box, as stable-dreamfusion does)."""
        n = x.shape[0]
        eps = self.normal_eps
        offs = torch.eye(3, dtype=x.dtype, device=x.device) * eps
        offs = torch.cat([offs, -offs], 0)  # [6, 3]: +x +y +z -x -y -z
        pts = (x.unsqueeze(0) + offs[:, None, :]).clamp(-self.bound, self.bound).reshape(-1, 3)
        s = self.density(pts).reshape(6, n)
        grad = (s[:3] - s[3:]).t() * (0.5 / eps)  # [n, 3]
        normal = -grad / torch.sqrt((grad * grad).sum(-1, keepdim=True).clamp(min=1e-20))
        return torch.nan_to_num(normal)

    def encoding_parameters(self):
        return list(self.encoding.parameters())

    def mlp_parameters(self):
        return list(self.mlp.parameters())
