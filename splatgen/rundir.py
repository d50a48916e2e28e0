"""The run folder: its format, in one place.

A finished run folder holds::

    config.yaml        the resolved config (the prompt included)
    splats.ply         the Gaussians, 3DGS layout (a NeRF run: nerf.ply, its density as splats)
    metrics.jsonl      scalars every run.log_every steps, densify events, periodic evaluations
    summary.json       prompt, representation, seconds, steps, sizes, phase timings
    previews.png       run.preview_views views of the result
    metrics.json       ground-truth scores (procedural-world prompts)
    checkpoints/       final.pt (a NeRF run is loaded from it), step_*.pt, interrupted.pt, last_good.pt
    interrupted.ply    what was optimised when a run was interrupted; last_good.ply: the state before NaN/Inf

:class:`RunFolder` writes one (it is the trainer's :class:`~splatgen.trainer.RunSink`);
:func:`load_finished_run` reads one back, on whatever device and renderer this machine has.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .config import Config, load_config, save_config
from .errors import NotARunError, RunDirError
from .export import load_ply, save_image_grid, save_ply
from .representation import GaussianRepresentation, NerfRepresentation, Representation

log = logging.getLogger("splatgen")

CONFIG = "config.yaml"
METRICS_LOG = "metrics.jsonl"
SUMMARY = "summary.json"
METRICS = "metrics.json"
PREVIEWS = "previews.png"
CHECKPOINTS = "checkpoints"
#: what makes a folder hold a run (an --out folder holding one of these is refused unless overwriting).
RUN_MARKERS = (CONFIG, GaussianRepresentation.ply_name, NerfRepresentation.ply_name, METRICS_LOG, CHECKPOINTS)


def splats_name(cfg: Config) -> str:
    """The file name of a run's exported model: ``nerf.ply`` for a NeRF, else ``splats.ply``."""
    return (NerfRepresentation if cfg.model.type == "nerf" else GaussianRepresentation).ply_name


def model_file(cfg: Config) -> str:
    """The file a finished run of ``cfg``'s representation is loaded from."""
    return f"{CHECKPOINTS}/final.pt" if cfg.model.type == "nerf" else splats_name(cfg)


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2))


class RunFolder:
    """A run folder being written. Creating one refuses a folder that already holds a run unless ``overwrite``."""

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        present = [m for m in RUN_MARKERS if (self.path / m).exists()] if self.path.exists() else []
        if present and not overwrite:
            raise RunDirError(
                f"{self.path} already holds a run (found {present}); choose another --out folder, or pass --overwrite "
                "to replace it"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._metrics_file = None
        self._tb = None

    # ---------------------------------------------------------------- what the trainer writes
    def open_logs(self, tensorboard: bool) -> None:
        self._metrics_file = open(self.path / METRICS_LOG, "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tb"))
            except ImportError:
                log.warning("run.tensorboard=true but tensorboard is not installed; logging to metrics.jsonl only")

    def close_logs(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def log(self, row: Dict[str, Any]) -> None:
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(row) + "\n")
        if self._tb is not None and "event" not in row:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def save_checkpoint(self, name: str, payload: Dict[str, Any]) -> Path:
        path = self.path / CHECKPOINTS / name
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path

    def save_splats(self, name: str, params: Dict[str, Tensor]) -> Path:
        path = self.path / name
        save_ply(params, path)
        return path

    # ---------------------------------------------------------------- what the API writes around the trainer
    def write_config(self, cfg: Config) -> None:
        save_config(cfg, self.path / CONFIG)

    def write_previews(self, images: Tensor) -> Path:
        save_image_grid(images, self.path / PREVIEWS)
        return self.path / PREVIEWS

    def write_summary(self, summary: Dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)


# -------------------------------------------------------------------------------------------- reading runs
def read_run_config(run_dir: str | Path) -> Config:
    """The config of a run folder (``config.yaml``), or :class:`RunDirError` if it is not a run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise NotARunError(f"{run_dir / CONFIG} not found: {run_dir} is not a finished run folder")
    return load_config([run_dir / CONFIG])


def load_finished_run(run_dir: str | Path, device: torch.device | str = "cpu", render_backend: str = "auto",
                      cfg: Optional[Config] = None) -> Tuple[Config, Representation]:
    """(config, representation) of a finished run folder: a NeRF from ``checkpoints/final.pt``, Gaussians from
    ``splats.ply``. Built with what this machine has (``render_backend``, kernel backend ``auto``), whatever the
    run was trained with, so a run trained on a GPU with gsplat and the Triton kernels loads on a CPU."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir) if cfg is None else cfg
    path = run_dir / model_file(cfg)
    if not path.is_file():
        raise NotARunError(f"{path} not found: {run_dir} is not a finished run folder")
    device = torch.device(device)
    cfg.render.backend, cfg.densify.backend = render_backend, "auto"
    gen = torch.Generator().manual_seed(0)
    if cfg.model.type == "nerf":
        rep: Representation = NerfRepresentation(cfg, device, gen)
        rep.model.load_state(torch.load(path, map_location=device, weights_only=False)["params"])
        return cfg, rep
    return cfg, GaussianRepresentation(cfg, device, gen, model=load_ply(path, device=device))


def find_splats(path: str | Path) -> Path:
    """The ``.ply`` of a run folder (``splats.ply`` or ``nerf.ply``), or ``path`` itself when it is a file."""
    path = Path(path)
    if path.is_dir():
        names = (GaussianRepresentation.ply_name, NerfRepresentation.ply_name)
        return next((path / n for n in names if (path / n).is_file()), path / names[0])
    return path
