"""The NeRF of :mod:`splatgen.nerf` as the trainer's :class:`~splatgen.representation.Representation`: the
optimiser and the regulariser of :class:`~splatgen.nerf.model.NeRFModel` (the ones its tests test), occupancy
updates between steps, and its density written as splats."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..cameras import Cameras
from ..config import Config
from ..devices import largest_side
from ..nerf import NeRFModel, nerf_to_gaussian_params
from . import RepOutput, Representation


class NerfRepresentation(Representation):
    """The stable-dreamfusion-style NeRF of :mod:`splatgen.nerf` (hash grid + MLP, occupancy skipping)."""

    kind, ply_name, size_name = "nerf", "nerf.ply", "num_occupied"
    model_file, interrupted_files = "checkpoints/final.pt", ("checkpoints/interrupted.pt",)

    @classmethod
    def estimate_memory(cls, cfg: Config) -> Tuple[int, str]:
        """The ray samples of one step at the largest resolution, each with its encoding and hidden features
        kept for the backward pass."""
        n = cfg.nerf
        samples = cfg.camera.batch_size * largest_side(cfg) ** 2 * (n.num_steps + n.upsample_steps)
        return samples * 4 * (3 + n.num_levels * n.level_dim + 2 * n.hidden_dim) * 2, f"{samples} ray samples a step"
    parameters_name = "the NeRF's parameters"

    def __init__(self, cfg: Config, device: torch.device, generator: torch.Generator,
                 model: Optional[NeRFModel] = None):
        self.cfg, self.gen = cfg, generator
        # Per-sample jitter and occupancy probes are drawn on the compute device (millions per step at high
        # resolution), seeded from the representation's generator.
        self.device_gen = torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        if model is None:
            # The initial weights (nn.Linear's, the hash table's) come from torch's global generator: seed it from
            # ours, on a fork, so one seed gives one NeRF and the caller's global state is left as it was.
            init_seed = int(torch.randint(2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                model = NeRFModel.from_config(cfg.nerf, device)
        self.model = model
        self.module = self.model
        self.optimizer = self.model.make_optimizer()

    def begin_step(self, step: int) -> None:
        # Update the occupancy grid before rendering (at step 0 too, as stable-dreamfusion does): until its
        # first update every cell counts as occupied and nothing is skipped.
        self.model.maybe_update_occupancy(step, self.device_gen)

    def render_train(self, cams: Cameras, background: Tensor, step: int) -> RepOutput:
        positions = torch.linalg.inv(cams.viewmats)[:, :3, 3]
        shading, ambient, light = self.model.sample_shading(step, self.cfg.run.steps, len(cams), self.gen, positions)
        out = self.model.render(cams, background, shading=shading, light_dirs=light, ambient=ambient,
                                perturb=True, generator=self.device_gen)
        return RepOutput(out.rgb, out.alpha, out.depth, self.model.regularization(out), out)

    def render_eval(self, cams: Cameras, background: Tensor, backend: Optional[str] = None
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            out = self.model.render(cams, background, shading="albedo", perturb=False)
        return out.rgb, out.alpha, out.depth

    def points(self) -> Tensor:
        xyz, _, _ = self.model.extract_points()
        return xyz.float()

    def size(self) -> int:
        return int(self.model.num_occupied())

    def summary(self) -> str:
        return f"NeRF, {self.size()} occupied cells"

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

    @classmethod
    def load(cls, cfg: Config, device: torch.device, saved: Dict[str, Any]) -> "NerfRepresentation":
        rep = cls(cfg, device, torch.Generator().manual_seed(0))
        rep.model.load_state(saved["params"])
        return rep

    def splat_params(self, state: Optional[Dict[str, Any]] = None) -> Dict[str, Tensor]:
        if state is None:
            return nerf_to_gaussian_params(self.model)
        live = self.state()
        self.model.load_state(state)
        try:
            return nerf_to_gaussian_params(self.model)
        finally:
            self.model.load_state(live)
