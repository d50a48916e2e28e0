"""Render a :class:`~splatgen.gaussians.GaussianModel` into a batch of :class:`~splatgen.cameras.Cameras`.

Two backends with the same math (see ``torch_backend`` for the full description):

- ``"gsplat"``: ``gsplat.rasterization`` (CUDA only), used for training on a GPU;
- ``"torch"``: the pure-PyTorch reference in :mod:`splatgen.render.torch_backend` (any device; the CPU
  backend and the reference the gsplat path is tested against).

``backend="auto"`` picks gsplat on CUDA and the PyTorch renderer elsewhere (:func:`resolve_backend`).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..cameras import Cameras
from ..errors import ConfigError, DeviceError
from ..gaussians import GaussianModel
from . import gsplat_backend, torch_backend

__all__ = ["RenderOutput", "render", "make_background", "resolve_backend", "BACKENDS", "BACKGROUNDS"]

BACKENDS = ("auto", "torch", "gsplat")
"""Allowed values of ``render.backend``."""
BACKGROUNDS = ("white", "black", "random", "color")
"""Allowed background kinds of :func:`make_background`."""


@dataclass
class RenderOutput:
    """What :func:`render` returns (B cameras, N Gaussians, H x W pixels).

    Attributes:
        rgb: [B, H, W, 3] float, composited over the background.
        alpha: [B, H, W, 1] accumulated opacity ``1 - T_final``.
        depth: [B, H, W, 1] expected camera-space z, ``sum(w_i z_i) / max(alpha, 1e-10)``; 0 where alpha = 0.
        means2d: [B, N, 2] projected means in pixels; ``retain_grad()`` has been called on it (when it
            requires grad) so ``means2d.grad`` holds the screen-space gradient after ``backward()``.
            Entries with ``radii == 0`` are meaningless.
        radii: [B, N] int32 screen radius in pixels (max of the x and y radii), 0 = culled / not visible.
        width, height: image size in pixels.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor
    width: int
    height: int


def resolve_backend(name: str, device: torch.device | str) -> str:
    """The backend to use for ``name`` (one of :data:`BACKENDS`) on ``device``: ``'torch'`` or ``'gsplat'``.

    ``'auto'`` gives ``'gsplat'`` on CUDA when gsplat is installed (otherwise ``'torch'`` with a warning)
    and ``'torch'`` on any other device.

    Raises:
        ConfigError: ``name`` is not one of :data:`BACKENDS`.
        DeviceError: ``'gsplat'`` on a non-CUDA device, or gsplat is not installed.
    """
    if name not in BACKENDS:
        raise ConfigError(f"render.backend={name!r} is not allowed; choose one of {list(BACKENDS)}")
    device = torch.device(device)
    has_gsplat = importlib.util.find_spec("gsplat") is not None
    if name == "auto":
        if device.type != "cuda":
            return "torch"
        if not has_gsplat:
            warnings.warn(
                "render.backend=auto on CUDA but gsplat is not installed: using the (much slower) PyTorch "
                "renderer. `pip install gsplat` to use the CUDA rasterizer.",
                stacklevel=2,
            )
            return "torch"
        return "gsplat"
    if name == "gsplat":
        if device.type != "cuda":
            raise DeviceError(
                f"gsplat needs CUDA; use render.backend=torch on CPU (the device here is {device})"
            )
        if not has_gsplat:
            raise DeviceError("render.backend=gsplat but gsplat is not installed: `pip install gsplat`, "
                              "or use render.backend=torch")
    return name


def make_background(
    kind: str,
    batch: int,
    color: Sequence[float] = (1.0, 1.0, 1.0),
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Background colours [batch, 3] (float32, in [0, 1]) for one batch of views.

    Args:
        kind: ``'white'``, ``'black'``, ``'color'`` (``color`` for every view) or ``'random'`` (one
            uniform random colour per view, a common SDS trick against the model painting the background).
        batch: number of views B.
        color: RGB in [0, 1], used by ``'color'``.
        generator: CPU generator ``'random'`` draws from (required for it), so the same seed gives the
            same backgrounds on any device.
        device: where the result lives.

    Raises:
        ConfigError: unknown ``kind`` or a ``color`` that is not 3 values in [0, 1].
        ValueError: ``batch < 1``, or ``'random'`` without a generator.
    """
    if kind not in BACKGROUNDS:
        raise ConfigError(f"render.background={kind!r} is not allowed; choose one of {list(BACKGROUNDS)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if kind == "white":
        return torch.ones(batch, 3, device=device)
    if kind == "black":
        return torch.zeros(batch, 3, device=device)
    if kind == "color":
        values = [float(c) for c in color]
        if len(values) != 3 or any(not 0.0 <= c <= 1.0 for c in values):
            raise ConfigError(f"render.background_color={list(color)!r} must be 3 values in [0, 1]")
        return torch.tensor(values, dtype=torch.float32, device=device).expand(batch, 3).clone()
    if generator is None:
        raise ValueError("make_background('random', ...) needs a torch.Generator (on the CPU) for reproducibility")
    return torch.rand(batch, 3, generator=generator, dtype=torch.float32).to(device)


def render(
    model: GaussianModel,
    cameras: Cameras,
    background: Tensor,
    backend: str = "torch",
    sh_degree: Optional[int] = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> RenderOutput:
    """Render ``model`` from every camera of ``cameras``.

    Args:
        model: the Gaussians (activations applied here: exp scales, sigmoid opacities, normalised quats).
        cameras: B cameras on the model's device.
        background: [B, 3] RGB in [0, 1] (e.g. from :func:`make_background`); moved to the model's
            device and dtype.
        backend: ``'torch'``, ``'gsplat'`` or ``'auto'`` (see :func:`resolve_backend`).
        sh_degree: SH degree to evaluate; ``None`` uses ``model.active_sh_degree``. At most
            ``model.sh_degree``.
        near_plane, far_plane: Gaussians whose camera z is outside this range are culled.
        eps2d: pixels^2 added to each projected covariance (3DGS's low-pass filter).

    Returns:
        :class:`RenderOutput`.
    """
    device = model.device
    if cameras.device != device:
        raise ValueError(f"cameras are on {cameras.device} but the Gaussians are on {device}; move one of them")
    B = len(cameras)
    if background.dim() != 2 or tuple(background.shape) != (B, 3):
        raise ValueError(f"background must be [B={B}, 3] (one RGB per camera), got {list(background.shape)}")
    degree = model.active_sh_degree if sh_degree is None else sh_degree
    if not isinstance(degree, int) or not 0 <= degree <= model.sh_degree:
        raise ValueError(f"sh_degree must be an int in [0, model.sh_degree={model.sh_degree}], got {degree!r}")
    if not 0 < near_plane < far_plane:
        raise ValueError(f"need 0 < near_plane < far_plane, got near_plane={near_plane}, far_plane={far_plane}")
    if eps2d < 0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")

    name = resolve_backend(backend, device)
    rasterize = gsplat_backend.rasterize if name == "gsplat" else torch_backend.rasterize
    dtype = model.means.dtype
    rgb, alpha, depth, means2d, radii = rasterize(
        model.means,
        model.get_quats(),
        model.get_scales(),
        model.get_opacities(),
        model.get_sh(),
        cameras.viewmats.to(dtype),
        cameras.Ks.to(dtype),
        cameras.width,
        cameras.height,
        background.to(device=device, dtype=dtype),
        degree,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
    )
    return RenderOutput(
        rgb=rgb, alpha=alpha, depth=depth, means2d=means2d, radii=radii, width=cameras.width, height=cameras.height
    )
