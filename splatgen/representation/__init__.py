"""The 3D representation behind the trainer: 3D Gaussians or the NeRF baseline.

The trainer (:mod:`splatgen.trainer`) owns everything both share: cameras, backgrounds, timesteps, the
guidance, score distillation, logging and checkpoints. A :class:`Representation` owns the rest: its
parameters and optimiser, its differentiable renderer, what happens between ``backward()`` and the next
step (densification for Gaussians, the occupancy grid for NeRF), its file export and its ground-truth
evaluation. So a benchmark comparing the two changes exactly one thing.

This module is the contract; :mod:`splatgen.representation.kinds` is the table of the kinds (``model.type``
-> class), and each class owns its kind: its name, its run-folder files and its loader. Each kind adapts a model
that knows nothing of the trainer: :mod:`splatgen.representation.gaussian` the 3D Gaussians of
:mod:`splatgen.gaussians`, :mod:`splatgen.representation.nerf` the NeRF of :mod:`splatgen.nerf`.

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

from ..cameras import Cameras
from ..config import Config


@dataclass
class RepOutput:
    """A training render.

    Attributes:
        rgb: [B, H, W, 3] composited over the background (differentiable).
        alpha: [B, H, W, 1] accumulated opacity.
        depth: [B, H, W, 1] expected camera-space depth.
        reg_loss: a scalar added to the loss before ``backward()`` (NeRF's entropy/orientation terms, the Gaussians' alpha entropy), or None.
        raw: the backend's own output, handed back to :meth:`Representation.post_backward`.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    reg_loss: Optional[Tensor] = None
    raw: Any = None


class Representation(ABC):
    """What the trainer needs from a 3D representation (see the module docstring)."""

    #: its ``model.type``: the key of :data:`splatgen.representation.kinds.REPRESENTATIONS`
    kind: str = ""
    #: file name of the exported .ply in a run folder
    ply_name: str = ""
    #: the file of a finished run folder that :meth:`load` reads (relative to the folder)
    model_file: str = ""
    #: the files of an interrupted run folder that :meth:`load` reads, the first one present wins
    interrupted_files: Tuple[str, ...] = ()
    #: name of :meth:`size` in logs (``num_gaussians``, ``num_occupied``)
    size_name: str = ""
    #: what the error of a run that went NaN says became NaN ("the Gaussians' parameters")
    parameters_name: str = ""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer

    @classmethod
    @abstractmethod
    def estimate_memory(cls, cfg: Config) -> Tuple[int, str]:
        """A rough lower bound of the bytes a run of this kind needs at its largest (guidance weights not
        counted), and what holds them in words ("Gaussians up to 40000"): :func:`splatgen.devices.check_memory`
        refuses sizes that cannot fit, up front."""

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
    def render_eval(self, cams: Cameras, background: Tensor, backend: Optional[str] = None
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        """(rgb [B,H,W,3], alpha [B,H,W,1], depth [B,H,W,1]) without gradients, for metrics and previews;
        ``backend`` names a Gaussian renderer other than the run's (a NeRF has one renderer)."""

    @abstractmethod
    def points(self) -> Tensor:
        """[N, 3] points of the model's surface/volume for Chamfer (opaque Gaussians, dense NeRF cells)."""

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def summary(self) -> str:
        """The model in a few words, for the command line ("2048 Gaussians")."""

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

    @classmethod
    @abstractmethod
    def load(cls, cfg: Config, device: torch.device, saved: Any) -> "Representation":
        """The representation of a run with config ``cfg``, from what :attr:`model_file` (or one of
        :attr:`interrupted_files`) holds, read by the run folder (a ``.ply`` as a model, a ``.pt`` as a
        checkpoint's mapping)."""

    def scalars(self) -> Dict[str, Any]:
        return {self.size_name: self.size(), "num_elements": self.size()}

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device
