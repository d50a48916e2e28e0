"""The NeRF baseline as one module: field + occupancy grid, built from :class:`~splatgen.config.NerfConfig`."""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..cameras import Cameras
from ..config import NerfConfig
from .encoding import HashGridEncoding
from .field import NeRFField
from .occupancy import OccupancyGrid
from .render import NerfRenderOutput, render_nerf

ADAM_KWARGS = {"betas": (0.9, 0.99), "eps": 1e-15}
"""stable-dreamfusion's settings for ``--optim adam``."""


class NeRFModel(nn.Module):
    """stable-dreamfusion's grid NeRF (hash grid + MLP, density blob, occupancy grid) in plain PyTorch."""

    def __init__(self, cfg: NerfConfig):
        super().__init__()
        self.cfg = cfg
        encoding = HashGridEncoding(
            bound=cfg.bound,
            num_levels=cfg.num_levels,
            level_dim=cfg.level_dim,
            base_resolution=cfg.base_resolution,
            log2_hashmap_size=cfg.log2_hashmap_size,
            desired_resolution=cfg.desired_resolution,
            interpolation="smoothstep",  # stable-dreamfusion's choice for its grid backbone
        )
        self.field = NeRFField(
            encoding,
            hidden_dim=cfg.hidden_dim,
            num_layers=cfg.num_layers,
            density_activation=cfg.density_activation,
            blob_density=cfg.blob_density,
            blob_radius=cfg.blob_radius,
        )
        self.grid = OccupancyGrid(cfg.bound, cfg.grid_resolution, cfg.density_thresh, cfg.occupancy_decay)

    @classmethod
    def from_config(cls, cfg: NerfConfig, device: torch.device | str = "cpu") -> "NeRFModel":
        cfg.validate()
        return cls(cfg).to(device)

    @property
    def device(self) -> torch.device:
        return self.field.encoding.embeddings.device

    # ------------------------------------------------------------------ optimisation
    def param_groups(self) -> List[dict]:
        """Adam groups: the hash grid at ``lr * encoder_lr_mult``, the MLP at ``lr``."""
        return [
            {"params": self.field.encoding_parameters(), "lr": self.cfg.lr * self.cfg.encoder_lr_mult,
             "name": "encoding"},
            {"params": self.field.mlp_parameters(), "lr": self.cfg.lr, "name": "mlp"},
        ]

    def make_optimizer(self) -> torch.optim.Adam:
        """``torch.optim.Adam(param_groups(), betas=(0.9, 0.99), eps=1e-15)``: the optimiser a run trains with."""
        return torch.optim.Adam(self.param_groups(), **ADAM_KWARGS)

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        cams: Cameras,
        background: Tensor,
        shading: str = "albedo",
        light_dirs: Optional[Tensor] = None,
        ambient: Union[float, Tensor] = 1.0,
        perturb: bool = False,
        generator: Optional[torch.Generator] = None,
        chunk: Optional[int] = None,
        use_grid: bool = True,
    ) -> NerfRenderOutput:
        """Render ``cams`` (see :func:`~splatgen.nerf.render.render_nerf`); without autograd the rays go in
        chunks of ``max_ray_batch`` unless ``chunk`` says otherwise."""
        if chunk is None and not torch.is_grad_enabled():
            chunk = self.cfg.max_ray_batch
        return render_nerf(
            self.field, self.grid if use_grid else None, cams, background,
            num_steps=self.cfg.num_steps, upsample_steps=self.cfg.upsample_steps, shading=shading,
            light_dirs=light_dirs, ambient=ambient, perturb=perturb, generator=generator, chunk=chunk,
        )

    def regularization(self, out: NerfRenderOutput) -> Tensor:
        """``lambda_entropy * entropy + lambda_orient * orient + lambda_opacity * opacity``: the loss a training
        step adds (fixed weights; stable-dreamfusion ramps the entropy weight in over the first half of the run).
        A term whose weight is 0 is left out, not multiplied by 0, so it costs no backward pass and a NaN in it
        cannot reach the gradients; ``orient`` exists only when the render computed normals."""
        c, losses = self.cfg, out.losses
        loss = c.lambda_entropy * losses["entropy"]
        if c.lambda_orient > 0 and "orient" in losses:
            loss = loss + c.lambda_orient * losses["orient"]
        if c.lambda_opacity > 0:
            loss = loss + c.lambda_opacity * losses["opacity"]
        return loss

    # ------------------------------------------------------------------ occupancy
    @torch.no_grad()
    def update_occupancy(self, step: Optional[int] = None, generator: Optional[torch.Generator] = None) -> None:
        self.grid.update(self.field, step, generator)

    def maybe_update_occupancy(self, step: int, generator: Optional[torch.Generator] = None) -> bool:
        """Update the grid when ``step % update_every == 0`` (so at step 0, before the first render)."""
        if step % self.cfg.update_every == 0:
            self.update_occupancy(step, generator)
            return True
        return False

    def num_occupied(self) -> int:
        return self.grid.num_occupied()

    def is_finite(self) -> bool:
        """All parameters finite and no NaN in the occupancy densities (``+inf`` marks unvisited cells)."""
        ok = all(bool(torch.isfinite(p).all()) for p in self.field.parameters())
        return ok and not bool(torch.isnan(self.grid.density).any())

    # ------------------------------------------------------------------ schedule
    def sample_shading(
        self,
        step: int,
        total_steps: int,
        batch: int,
        generator: Optional[torch.Generator] = None,
        cam_positions: Optional[Tensor] = None,
    ) -> Tuple[str, Tensor, Tensor]:
        """DreamFusion's shading schedule: ``(shading, ambient [B], light_dirs [B, 3])``.

        Albedo with ambient 1 while ``step < albedo_ratio * total_steps``; afterwards one shading per step,
        ``'textureless'`` with probability ``textureless_ratio`` else ``'lambertian'``, ambient ~
        ``U[min_ambient, 1]``. Light: ``normalize(cam_position + N(0, I))`` per view (stable-dreamfusion's
        ``safe_normalize(rays_o + randn(3))``); a random unit vector when ``cam_positions`` is None.
        All draws come from ``generator`` on its own device (CPU by default) and are moved to the model's.
        """
        c = self.cfg
        dev = self.device
        gdev = generator.device if generator is not None else torch.device("cpu")
        if cam_positions is None:
            base = torch.zeros(batch, 3, device=gdev)
        else:
            base = cam_positions.detach().to(gdev, torch.float32).reshape(batch, 3)
        noise = torch.randn(batch, 3, generator=generator, device=gdev)
        light = torch.nn.functional.normalize(base + noise, dim=-1).to(dev)
        if step < c.albedo_ratio * total_steps:
            return "albedo", torch.ones(batch, device=dev), light
        u = torch.rand(2, generator=generator, device=gdev, dtype=torch.float64).tolist()
        ambient = c.min_ambient + (1.0 - c.min_ambient) * u[0]
        shading = "textureless" if u[1] < c.textureless_ratio else "lambertian"
        return shading, torch.full((batch,), ambient, device=dev), light

    # ------------------------------------------------------------------ state
    def state(self) -> Dict:
        """Everything needed to resume: config, field weights and the occupancy grid (tensors on CPU)."""
        return {
            "config": dataclasses.asdict(self.cfg),
            "model": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }

    def load_state(self, state: Dict) -> None:
        self.load_state_dict({k: v.to(self.device) for k, v in state["model"].items()})

    @classmethod
    def from_state(cls, state: Dict, device: torch.device | str = "cpu") -> "NeRFModel":
        model = cls.from_config(NerfConfig(**state["config"]), device)
        model.load_state(state)
        return model

    # ------------------------------------------------------------------ export
    def default_export_threshold(self) -> float:
        """The occupancy threshold ``min(mean density, density_thresh)`` once the grid has been updated,
        ``density_thresh`` before (stable-dreamfusion's marching-cubes threshold)."""
        t = float(self.grid.threshold)
        return t if int(self.grid.num_updates) > 0 and math.isfinite(t) else self.cfg.density_thresh

    @torch.no_grad()
    def extract_points(
        self, resolution: Optional[int] = None, threshold: Optional[float] = None, max_points: int = 200000,
        chunk: int = 1 << 18,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Density samples at the centres of a ``resolution^3`` grid over the box (``export_resolution`` by
        default) whose density exceeds ``threshold`` (:meth:`default_export_threshold` by default): xyz [N, 3],
        albedo [N, 3], density [N]; at most ``max_points``, the densest kept."""
        res = int(resolution or self.cfg.export_resolution)
        thr = self.default_export_threshold() if threshold is None else float(threshold)
        b = self.cfg.bound
        cell = 2.0 * b / res
        dev = self.device
        axis = (torch.arange(res, device=dev, dtype=torch.float32) + 0.5) * cell - b
        xs, cs, ds = [], [], []
        n = res**3
        for s in range(0, n, chunk):
            idx = torch.arange(s, min(s + chunk, n), device=dev)
            pts = torch.stack([axis[idx // (res * res)], axis[(idx // res) % res], axis[idx % res]], -1)
            sigma = self.field.density(pts)
            keep = sigma > thr
            if bool(keep.any()):
                p = pts[keep]
                _, albedo = self.field(p)
                xs.append(p)
                cs.append(albedo)
                ds.append(sigma[keep])
        if not xs:
            z = torch.zeros(0, 3, device=dev)
            return z, z.clone(), torch.zeros(0, device=dev)
        xyz, rgb, dens = torch.cat(xs), torch.cat(cs), torch.cat(ds)
        if xyz.shape[0] > max_points:
            top = torch.topk(dens, max_points).indices
            xyz, rgb, dens = xyz[top], rgb[top], dens[top]
        return xyz, rgb, dens
