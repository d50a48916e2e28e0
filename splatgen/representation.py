"""The 3D representation behind the trainer: 3D Gaussians or the NeRF baseline.

The trainer (:mod:`splatgen.trainer`) owns everything both share: cameras, backgrounds, timesteps, the
guidance, score distillation, logging and checkpoints. A :class:`Representation` owns the rest: its
parameters and optimiser, its differentiable renderer, what happens between ``backward()`` and the next
step (densification for Gaussians, the occupancy grid for NeRF), its file export and its ground-truth
evaluation. So a benchmark comparing the two changes exactly one thing.

One step, as the trainer calls it::

    rep.begin_step(step)                     # schedules (SH degree, means lr, shading)
    out = rep.render_train(cams, bg, step)   # RepOutput: rgb/alpha/depth (+ regulariser)
    ... SDS loss on out.rgb, backward ...
    rep.post_backward(out, step)             # densify statistics
    rep.optimizer_step()
    event = rep.after_step(step)             # densify / occupancy update; a dict for the log, or None
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from . import schedules
from .cameras import Cameras
from .config import Config
from .densify import DensifyParams, DensifyStats
from .errors import ZeroGaussiansError
from .gaussians import GaussianModel
from .kernels_glue import accumulate_stats, densify_step, resolve_kernel_backend
from .render import render, resolve_backend


@dataclass
class RepOutput:
    """A training render.

    Attributes:
        rgb: [B, H, W, 3] composited over the background (differentiable).
        alpha: [B, H, W, 1] accumulated opacity.
        depth: [B, H, W, 1] expected camera-space depth.
        reg_loss: a scalar added to the loss before ``backward()`` (NeRF's entropy/orientation terms), or None.
        raw: the backend's own output, handed back to :meth:`Representation.post_backward`.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    reg_loss: Optional[Tensor] = None
    raw: Any = None


class Representation(ABC):
    """What the trainer needs from a 3D representation (see the module docstring)."""

    #: 'gaussians' or 'nerf'
    kind: str = ""
    #: file name of the exported .ply in a run folder
    ply_name: str = ""
    #: name of :meth:`size` in logs (``num_gaussians``, ``num_occupied``)
    size_name: str = ""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer

    @abstractmethod
    def begin_step(self, step: int) -> None: ...

    @abstractmethod
    def render_train(self, cams: Cameras, background: Tensor, step: int) -> RepOutput: ...

    def post_backward(self, out: RepOutput, step: int) -> None:
        """Called after ``backward()`` and before the optimiser step."""

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def after_step(self, step: int) -> Optional[Dict[str, Any]]:
        """Structural updates after the optimiser step; returns a log event or None."""
        return None

    @abstractmethod
    def render_eval(self, cams: Cameras, background: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(rgb [B,H,W,3], alpha [B,H,W,1], depth [B,H,W,1]) without gradients, for metrics and previews."""

    @abstractmethod
    def points(self) -> Tensor:
        """[N, 3] points of the model's surface/volume for Chamfer (opaque Gaussians, dense NeRF cells)."""

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def is_finite(self) -> bool: ...

    @abstractmethod
    def state(self) -> Dict[str, Any]:
        """Parameters (and buffers) only, cheap enough to keep as the last good state."""

    @abstractmethod
    def splat_params(self, state: Optional[Dict[str, Any]] = None) -> Dict[str, Tensor]:
        """The model (or a :meth:`state` of it) as 3D Gaussians in gsplat's layout (``means``, ``scales``,
        ``quats``, ``opacities``, ``sh0``, ``shN``): what the exporters write (a NeRF: its density as splats)."""

    def checkpoint(self) -> Dict[str, Any]:
        """Everything needed to continue exactly where the run is (tensors, numbers, strings only)."""
        return {"kind": self.kind, "params": self.state(), "optimizer": self.optimizer.state_dict()}

    @abstractmethod
    def restore(self, checkpoint: Dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint`'s output: parameters, optimiser state and whatever else it holds."""

    def scalars(self) -> Dict[str, Any]:
        return {self.size_name: self.size(), "num_elements": self.size()}

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


# ------------------------------------------------------------------------------------------------ Gaussians
class GaussianRepresentation(Representation):
    kind, ply_name, size_name = "gaussians", "splats.ply", "num_gaussians"

    def __init__(self, cfg: Config, device: torch.device, generator: torch.Generator,
                 model: Optional[GaussianModel] = None):
        self.cfg, self.gen = cfg, generator
        m, o = cfg.model, cfg.optim
        self.model = model if model is not None else GaussianModel.init_ball(
            m.num_points, m.init_radius, m.init_scale, m.init_opacity, m.sh_degree, m.init_color,
            generator=generator, device=device,
        )
        self.module = self.model
        self.optimizer = self.model.create_optimizer(dict(
            means=o.lr_means, scales=o.lr_scales, quats=o.lr_quats, opacities=o.lr_opacities, sh0=o.lr_sh0, shN=o.lr_shN,
        ))
        self.render_backend = resolve_backend(cfg.render.backend, device)
        self.kernel_backend = resolve_kernel_backend(cfg.densify.backend, device)
        self.densify_params = DensifyParams.from_config(cfg.densify)
        self.stats = DensifyStats.zeros(len(self.model), device)

    def _lrs(self) -> Dict[str, float]:
        o = self.cfg.optim
        return dict(means=o.lr_means, scales=o.lr_scales, quats=o.lr_quats, opacities=o.lr_opacities, sh0=o.lr_sh0,
                    shN=o.lr_shN)

    def begin_step(self, step: int) -> None:
        cfg, total = self.cfg, self.cfg.run.steps
        self.model.set_active_sh_degree(
            schedules.sh_degree_at(step, total, cfg.model.sh_degree, cfg.model.sh_degree_milestones))
        self.model.set_lr("means", schedules.means_lr_at(step, total, cfg.optim.lr_means, cfg.optim.lr_means_final))

    def render_train(self, cams: Cameras, background: Tensor, step: int) -> RepOutput:
        r = self.cfg.render
        out = render(self.model, cams, background, backend=self.render_backend, near_plane=r.near_plane, eps2d=r.eps2d)
        return RepOutput(out.rgb, out.alpha, out.depth, None, out)

    def _in_window(self, step: int) -> bool:
        d, total = self.cfg.densify, self.cfg.run.steps
        return d.enabled and int(d.start * total) <= step < int(d.stop * total)

    def post_backward(self, out: RepOutput, step: int) -> None:
        raw = out.raw
        if self._in_window(step) and raw.means2d.grad is not None:
            accumulate_stats(self.kernel_backend, self.stats, raw.means2d.grad, raw.radii, raw.width, raw.height)

    def after_step(self, step: int) -> Optional[Dict[str, Any]]:
        d, total = self.cfg.densify, self.cfg.run.steps
        event = None
        if not d.enabled:
            return None
        if schedules.in_densify_window(step, total, d.start, d.stop, d.every):
            counts = densify_step(self.kernel_backend, self.model, self.stats, self.densify_params, self.gen)
            if len(self.model) == 0:
                raise ZeroGaussiansError(
                    f"densification at step {step + 1} pruned every Gaussian ({counts}): the prune rules are "
                    f"densify.min_opacity={d.min_opacity} (less opaque is pruned), densify.max_world_scale="
                    f"{d.max_world_scale} (larger is pruned) and densify.max_screen_fraction={d.max_screen_fraction}; "
                    "loosen them, or turn densification off with densify.enabled=false"
                )
            self.stats = DensifyStats.zeros(len(self.model), self.model.device)
            event = {"step": step + 1, "event": "densify", **counts}
        if d.opacity_reset_every > 0 and self._in_window(step) and (step + 1) % d.opacity_reset_every == 0:
            self.model.reset_opacities(d.reset_opacity)
        return event

    def render_eval(self, cams: Cameras, background: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            out = render(self.model, cams, background, backend=self.render_backend)
        return out.rgb, out.alpha, out.depth

    def points(self) -> Tensor:
        return opaque_centres(self.model)

    def size(self) -> int:
        return len(self.model)

    def is_finite(self) -> bool:
        return self.model.is_finite()

    def state(self) -> Dict[str, Any]:
        return self.model.state()

    def splat_params(self, state: Optional[Dict[str, Any]] = None) -> Dict[str, Tensor]:
        return self.model.state() if state is None else state

    def checkpoint(self) -> Dict[str, Any]:
        stats = {k: getattr(self.stats, k).detach().clone() for k in ("grad2d_sum", "count", "max_radii")}
        return {**super().checkpoint(), "sh_degree": self.model.sh_degree,
                "active_sh_degree": self.model.active_sh_degree, "densify_stats": stats}

    def restore(self, checkpoint: Dict[str, Any]) -> None:
        device = self.model.device
        params = {k: v.to(device) for k, v in checkpoint["params"].items()}
        self.model = GaussianModel(params, int(checkpoint["sh_degree"]), int(checkpoint["active_sh_degree"]))
        self.module = self.model
        self.optimizer = self.model.create_optimizer(self._lrs())
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.stats = DensifyStats(**{k: v.to(device) for k, v in checkpoint["densify_stats"].items()})

    def scalars(self) -> Dict[str, Any]:
        return {**super().scalars(), "sh_degree": self.model.active_sh_degree,
                "lr_means": self.optimizer.param_groups[0]["lr"]}


# ------------------------------------------------------------------------------------------------ NeRF
class NerfRepresentation(Representation):
    """The stable-dreamfusion-style NeRF of :mod:`splatgen.nerf` (hash grid + MLP, occupancy skipping)."""

    kind, ply_name, size_name = "nerf", "nerf.ply", "num_occupied"

    def __init__(self, cfg: Config, device: torch.device, generator: torch.Generator, model=None):
        from .nerf import NeRFModel

        self.cfg, self.gen = cfg, generator
        # Per-sample jitter and occupancy probes are drawn on the compute device (millions per step at high
        # resolution), seeded from the representation's generator.
        self.device_gen = torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        self.model = model if model is not None else NeRFModel.from_config(cfg.nerf, device)
        self.module = self.model
        self.optimizer = torch.optim.Adam(self.model.param_groups(), betas=(0.9, 0.99), eps=1e-15)

    def begin_step(self, step: int) -> None:
        # Update the occupancy grid before rendering (at step 0 too, as stable-dreamfusion does): until its
        # first update every cell counts as occupied and nothing is skipped.
        self.model.maybe_update_occupancy(step, self.device_gen)

    def render_train(self, cams: Cameras, background: Tensor, step: int) -> RepOutput:
        n = self.cfg.nerf
        positions = torch.linalg.inv(cams.viewmats)[:, :3, 3]
        shading, ambient, light = self.model.sample_shading(step, self.cfg.run.steps, len(cams), self.gen, positions)
        out = self.model.render(cams, background, shading=shading, light_dirs=light, ambient=ambient,
                                perturb=True, generator=self.device_gen)
        losses = out.losses
        reg = n.lambda_entropy * losses["entropy"]
        if n.lambda_orient > 0 and "orient" in losses:
            reg = reg + n.lambda_orient * losses["orient"]
        if n.lambda_opacity > 0:
            reg = reg + n.lambda_opacity * losses["opacity"]
        return RepOutput(out.rgb, out.alpha, out.depth, reg, out)

    def render_eval(self, cams: Cameras, background: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            out = self.model.render(cams, background, shading="albedo", perturb=False)
        return out.rgb, out.alpha, out.depth

    def points(self) -> Tensor:
        xyz, _, _ = self.model.extract_points()
        return xyz.float()

    def size(self) -> int:
        return int(self.model.num_occupied())

    def is_finite(self) -> bool:
        return bool(self.model.is_finite())

    def state(self) -> Dict[str, Any]:
        return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in self.model.state().items()}

    def checkpoint(self) -> Dict[str, Any]:
        return {**super().checkpoint(), "device_rng": self.device_gen.get_state()}

    def restore(self, checkpoint: Dict[str, Any]) -> None:
        self.model.load_state(checkpoint["params"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.device_gen.set_state(checkpoint["device_rng"])

    def splat_params(self, state: Optional[Dict[str, Any]] = None) -> Dict[str, Tensor]:
        from .nerf import nerf_to_gaussian_params

        if state is None:
            return nerf_to_gaussian_params(self.model)
        live = self.state()
        self.model.load_state(state)
        try:
            return nerf_to_gaussian_params(self.model)
        finally:
            self.model.load_state(live)


#: opacity above which a Gaussian's centre counts as a point of the model (:meth:`Representation.points`).
POINTS_MIN_OPACITY = 0.1


def opaque_centres(model: GaussianModel, min_opacity: float = POINTS_MIN_OPACITY) -> Tensor:
    """Centres of the Gaussians more opaque than ``min_opacity``: the model's points (e.g. for Chamfer)."""
    with torch.no_grad():
        return model.means.detach()[model.get_opacities().detach() > min_opacity].float()


def build_representation(cfg: Config, device: torch.device, generator: torch.Generator) -> Representation:
    """The representation ``cfg.model.type`` names, initialised from ``generator``."""
    if cfg.model.type == "nerf":
        return NerfRepresentation(cfg, device, generator)
    return GaussianRepresentation(cfg, device, generator)
