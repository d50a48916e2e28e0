"""3D Gaussians as the trainer's :class:`~splatgen.representation.Representation`: Adam over gsplat's
parameter layout, the Gaussian renderer, densification between steps, and the ``.ply`` a run writes."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .. import schedules
from ..cameras import Cameras
from ..config import Config
from ..densify import DensifyParams, DensifyStats
from ..errors import ZeroGaussiansError
from ..devices import largest_side
from ..gaussians import GaussianModel, num_sh_bases
from ..kernels_glue import accumulate_stats, densify_step, resolve_kernel_backend
from ..render import render, resolve_backend
from . import RepOutput, Representation


class GaussianRepresentation(Representation):
    """3D Gaussian splatting (:mod:`splatgen.gaussians`), densified by :mod:`splatgen.densify`."""

    kind, ply_name, size_name = "gaussians", "splats.ply", "num_gaussians"
    model_file, interrupted_files = ply_name, ("interrupted.ply", "last_good.ply")

    @classmethod
    def estimate_memory(cls, cfg: Config) -> Tuple[int, str]:
        """The Gaussians' parameters with their gradients and Adam moments at the densification cap, and the
        renders of one step at the largest resolution with what autograd keeps of them."""
        most = max(cfg.model.num_points, cfg.densify.max_gaussians if cfg.densify.enabled else 0)
        floats = 14 + 3 * (num_sh_bases(cfg.model.sh_degree) - 1)  # means 3, scales 3, quats 4, opacity 1, sh0 3, shN
        pixels = cfg.camera.batch_size * largest_side(cfg) ** 2
        return most * floats * 4 * 4 + pixels * 4 * 64, f"Gaussians up to {most}"
    parameters_name = "the Gaussians' parameters"

    def __init__(self, cfg: Config, device: torch.device, generator: torch.Generator,
                 model: Optional[GaussianModel] = None):
        self.cfg, self.gen = cfg, generator
        m = cfg.model
        self.model = model if model is not None else GaussianModel.init_ball(
            m.num_points, m.init_radius, m.init_scale, m.init_opacity, m.sh_degree, m.init_color,
            generator=generator, device=device,
        )
        self.module = self.model
        self.optimizer = self.model.create_optimizer(self._lrs())
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
        m = self.cfg.model
        weight = m.alpha_entropy * schedules.ramp_at(step, self.cfg.run.steps, m.alpha_entropy_ramp)
        reg = weight * alpha_entropy(out.alpha) if weight > 0 else None  # off, or not ramped in yet: no term at all
        return RepOutput(out.rgb, out.alpha, out.depth, reg, out)

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
        every = schedules.densify_interval(d.every, total, d.reference_steps)
        reset_every = schedules.densify_interval(d.opacity_reset_every, total, d.reference_steps)
        if schedules.in_densify_window(step, total, d.start, d.stop, every):
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
        if reset_every > 0 and self._in_window(step) and (step + 1) % reset_every == 0:
            self.model.reset_opacities(d.reset_opacity)
        return event

    def render_eval(self, cams: Cameras, background: Tensor, backend: Optional[str] = None
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        chosen = self.render_backend if backend is None else resolve_backend(backend, self.device)
        with torch.no_grad():
            out = render(self.model, cams, background, backend=chosen)
        return out.rgb, out.alpha, out.depth

    def points(self) -> Tensor:
        return opaque_centres(self.model)

    def size(self) -> int:
        return len(self.model)

    def summary(self) -> str:
        return f"{self.size()} Gaussians"

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

    @classmethod
    def load(cls, cfg: Config, device: torch.device, saved: GaussianModel) -> "GaussianRepresentation":
        return cls(cfg, device, torch.Generator().manual_seed(0), model=saved)

    def scalars(self) -> Dict[str, Any]:
        return {**super().scalars(), "sh_degree": self.model.active_sh_degree,
                "lr_means": self.optimizer.param_groups[0]["lr"]}


#: opacity above which a Gaussian's centre counts as a point of the model (:meth:`Representation.points`).
POINTS_MIN_OPACITY = 0.1


def alpha_entropy(alpha: Tensor, eps: float = 1e-4) -> Tensor:
    """``sum over pixels of -(a log a + (1 - a) log(1 - a))``, ``a`` the rendered opacity clamped to [eps, 1 - eps].

    Its gradient per pixel, ``log((1 - a) / a)``, pulls a pixel below one half towards empty and one above towards
    opaque; summed rather than averaged, so a weight compares with the SDS gradient each pixel already gets.
    """
    a = alpha.float().clamp(eps, 1.0 - eps)
    return -(a * a.log() + (1.0 - a) * (1.0 - a).log()).sum()


def opaque_centres(model: GaussianModel, min_opacity: float = POINTS_MIN_OPACITY) -> Tensor:
    """Centres of the Gaussians more opaque than ``min_opacity``: the model's points (e.g. for Chamfer)."""
    with torch.no_grad():
        return model.means.detach()[model.get_opacities().detach() > min_opacity].float()
