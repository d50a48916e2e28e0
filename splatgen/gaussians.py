"""3D Gaussians in gsplat's parameter layout, with an optimizer that survives densification.

Parameters (N Gaussians, K = (sh_degree + 1)^2 SH coefficients):

- ``means``      [N, 3]    world positions
- ``scales``     [N, 3]    log of the standard deviations along the local axes
- ``quats``      [N, 4]    rotation quaternions, w x y z (not necessarily normalised)
- ``opacities``  [N]       logit of the opacity
- ``sh0``        [N, 1, 3] SH DC coefficients (rgb = 0.5 + C0 * sh0)
- ``shN``        [N, K-1, 3] higher SH bands (K-1 may be 0)

One Adam optimizer holds one parameter group per tensor, named after it. Densification goes through
:meth:`GaussianModel.update`, which rebuilds each parameter and moves its Adam moments along with it, so
the optimizer state always matches the parameters row for row.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, Optional

import torch
from torch import Tensor, nn

#: the degree-0 real spherical harmonic, ``1 / (2 sqrt(pi))``: ``rgb = 0.5 + SH_C0 * sh0``
SH_C0 = 0.28209479177387814
PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:
    return sh0 * SH_C0 + 0.5


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients ``(degree + 1)^2`` up to and including ``degree``."""
    return (degree + 1) ** 2


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """[..., 4] quaternions (w x y z, any norm) -> [..., 3, 3] rotation matrices (gsplat's formula)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


class GaussianModel(nn.Module):
    """A set of 3D Gaussians. See the module docstring for the layout."""

    def __init__(self, params: Dict[str, Tensor], sh_degree: int, active_sh_degree: int = 0):
        super().__init__()
        missing = set(PARAM_NAMES) - set(params)
        assert not missing, f"missing parameters {missing}"
        self.params = nn.ParameterDict({k: nn.Parameter(params[k].contiguous()) for k in PARAM_NAMES})
        self.sh_degree = sh_degree
        self.active_sh_degree = min(active_sh_degree, sh_degree)
        assert self.params["shN"].shape[1] == num_sh_bases(sh_degree) - 1
        self.optimizer: Optional[torch.optim.Optimizer] = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def init_ball(
        cls,
        num_points: int,
        radius: float = 0.5,
        init_scale: float = 0.03,
        init_opacity: float = 0.1,
        sh_degree: int = 0,
        color: str = "random",
        generator: Optional[torch.Generator] = None,
        device: torch.device | str = "cpu",
    ) -> "GaussianModel":
        """``num_points`` Gaussians uniform in a ball of ``radius``, isotropic, identity rotation.

        Random draws use ``generator`` on the CPU, so the same seed gives the same model on any device.
        """
        g = generator
        direction = torch.nn.functional.normalize(torch.randn(num_points, 3, generator=g), dim=-1)
        r = radius * torch.rand(num_points, 1, generator=g) ** (1.0 / 3.0)
        means = direction * r
        scales = torch.full((num_points, 3), math.log(init_scale))
        quats = torch.zeros(num_points, 4)
        quats[:, 0] = 1.0
        opacities = torch.full((num_points,), math.log(init_opacity / (1.0 - init_opacity)))
        if color == "random":
            rgb = torch.rand(num_points, 3, generator=g)
        else:
            rgb = torch.full((num_points, 3), 0.5)
        sh0 = rgb_to_sh0(rgb)[:, None, :]
        shN = torch.zeros(num_points, num_sh_bases(sh_degree) - 1, 3)
        params = dict(means=means, scales=scales, quats=quats, opacities=opacities, sh0=sh0, shN=shN)
        return cls({k: v.to(device) for k, v in params.items()}, sh_degree=sh_degree)

    @classmethod
    def from_tensors(cls, sh_degree: Optional[int] = None, **tensors: Tensor) -> "GaussianModel":
        shN = tensors["shN"]
        degree = int(round(math.sqrt(shN.shape[1] + 1))) - 1 if sh_degree is None else sh_degree
        return cls({k: tensors[k].detach().clone() for k in PARAM_NAMES}, sh_degree=degree, active_sh_degree=degree)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def scales_log(self) -> Tensor:
        return self.params["scales"]

    def get_scales(self) -> Tensor:
        """[N, 3] standard deviations (world units)."""
        return torch.exp(self.params["scales"])

    def get_quats(self) -> Tensor:
        """[N, 4] unit quaternions wxyz."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    def get_opacities(self) -> Tensor:
        """[N] opacities in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    def get_sh(self) -> Tensor:
        """[N, K, 3] all SH coefficients."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    def set_active_sh_degree(self, degree: int) -> None:
        self.active_sh_degree = max(0, min(int(degree), self.sh_degree))

    def state(self) -> Dict[str, Tensor]:
        """Detached copies of the parameters (for checkpoints and export)."""
        return {k: v.detach().clone() for k, v in self.params.items()}

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.params.values())

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, lrs: Dict[str, float]) -> torch.optim.Optimizer:
        """One Adam with one group per parameter tensor, ``lrs[name]`` its learning rate."""
        groups = [{"params": [self.params[k]], "lr": float(lrs[k]), "name": k} for k in PARAM_NAMES]
        self.optimizer = torch.optim.Adam(groups, eps=1e-15)
        return self.optimizer

    def set_lr(self, name: str, lr: float) -> None:
        assert self.optimizer is not None
        for group in self.optimizer.param_groups:
            if group["name"] == name:
                group["lr"] = lr

    def update(
        self,
        param_fn: Callable[[str, Tensor], Tensor],
        state_fn: Optional[Callable[[str, Tensor], Tensor]] = None,
        names: Iterable[str] = PARAM_NAMES,
    ) -> None:
        """Replace parameters by ``param_fn(name, old)`` and each Adam moment by ``state_fn(key, old)``.

        ``state_fn`` defaults to ``param_fn`` applied with zeros where the parameter function would invent
        new values: callers that append rows pass a ``state_fn`` that appends zeros.
        """
        state_fn = state_fn or param_fn
        for name in names:
            old = self.params[name]
            new = nn.Parameter(param_fn(name, old.data).contiguous(), requires_grad=old.requires_grad)
            self.params[name] = new
            if self.optimizer is None:
                continue
            for group in self.optimizer.param_groups:
                if group["name"] != name:
                    continue
                st = self.optimizer.state.pop(old, None)
                group["params"] = [new]
                if st is not None:
                    for key, val in list(st.items()):
                        if key != "step" and isinstance(val, Tensor) and val.dim() > 0:
                            st[key] = state_fn(name, val).contiguous()
                    self.optimizer.state[new] = st

    def keep(self, mask: Tensor) -> None:
        """Keep the Gaussians where ``mask`` [N] is True (parameters and optimizer state)."""
        idx = torch.nonzero(mask, as_tuple=False).squeeze(-1) if mask.dtype == torch.bool else mask
        self.update(lambda _, x: x[idx])

    def append(self, new: Dict[str, Tensor]) -> None:
        """Append Gaussians (``new[name]`` rows per parameter); their Adam moments start at zero."""
        self.update(
            lambda name, x: torch.cat([x, new[name].to(x.dtype)], dim=0),
            lambda name, s: torch.cat([s, torch.zeros((new[name].shape[0], *s.shape[1:]), dtype=s.dtype, device=s.device)], dim=0),
        )

    def reset_opacities(self, value: float) -> None:
        """Clamp all opacities to at most ``value`` and zero their Adam moments (3DGS opacity reset)."""
        logit = math.log(value / (1.0 - value))
        self.update(
            lambda _, x: torch.clamp(x, max=logit),
            lambda _, s: torch.zeros_like(s),
            names=("opacities",),
        )
