"""The optimisation loop: sample cameras, render, guidance, step, densify.

``Trainer.train()`` runs ``train_step`` once per step and does everything else (logging, checkpoints,
evaluation) around it, so the step itself reads top to bottom.

The trainer is handed its components and knows none of their kinds: a :class:`~splatgen.guidance.Guidance`,
optionally a ``run`` (a :class:`RunSink`, where logs, checkpoints and rescued models go; the run folder of
:mod:`splatgen.rundir` is one) and an ``evaluator`` (a callable scoring the representation, as torchtitan's
validator is a component of its trainer; the procedural world supplies one for its prompts).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol

import torch
from torch import Tensor

from . import schedules
from .cameras import Cameras, evenly_spaced_cameras, sample_orbit_cameras
from .config import Config
from .errors import DeviceError, NonFiniteError
from .guidance.base import Guidance
from .kernels_glue import resolve_kernel_backend, sds_loss
from .render import make_background
from .representation import Representation, build_representation
from .sds import add_noise, sds_weight

log = logging.getLogger("splatgen")

STAGES = ("render", "vae", "unet", "sds", "backward_vae", "backward_render", "optimizer", "densify")


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU -> :class:`DeviceError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"run.device={name!r} asks for CUDA, but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}). Use run.device=cpu or "
                "run.device=auto."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"run.device={name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


class RunSink(Protocol):
    """Where a run's records go (implemented by :class:`splatgen.rundir.RunFolder`)."""

    def open_logs(self, tensorboard: bool) -> None: ...

    def close_logs(self) -> None: ...

    def log(self, row: Dict[str, Any]) -> None:
        """One row of scalars or one event (a dict with ``event``)."""

    def save_checkpoint(self, name: str, payload: Dict[str, Any]) -> Path:
        """Write a checkpoint (``checkpoints/<name>``) atomically; returns its path."""

    def save_splats(self, name: str, params: Dict[str, Tensor]) -> Path:
        """Write gsplat-layout Gaussians as a 3DGS ``.ply`` named ``name`` in the run; returns its path."""


#: evaluator(rep) -> ground-truth metrics of the representation as it is now.
Evaluator = Callable[[Representation], Dict[str, Any]]


class StageTimer:
    """Wall-clock per stage; synchronises CUDA around each stage only when ``enabled``."""

    def __init__(self, device: torch.device, enabled: bool):
        self.device, self.enabled = device, enabled
        self.totals: Dict[str, float] = {s: 0.0 for s in STAGES}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.totals[stage] += time.perf_counter() - t0


@dataclass
class StepOutput:
    loss: Tensor
    grad_norm: Tensor
    num_nonfinite: Tensor
    t: Tensor
    resolution: int


@dataclass
class TrainResult:
    rep: Representation
    history: List[dict] = field(default_factory=list)
    stage_ms: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    """Optimisation wall-clock, excluding the periodic evaluations of ``run.eval_every``."""
    steps: int = 0
    evals: List[dict] = field(default_factory=list)
    """The periodic ground-truth evaluations (``run.eval_every``), one dict per checkpoint."""

    @property
    def model(self):
        return self.rep.module


class Trainer:
    """One generation: ``guidance`` scores the renders; ``run`` (optional) receives logs and checkpoints;
    ``evaluator`` (optional) is called every ``run.eval_every`` steps."""

    def __init__(
        self,
        cfg: Config,
        guidance: Guidance,
        run: Optional[RunSink] = None,
        evaluator: Optional[Evaluator] = None,
        profile: bool = False,
    ):
        self.cfg = cfg
        self.run = run
        self.device = resolve_device(cfg.run.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.run.cudnn_benchmark

        # Every random draw comes from these: cameras/timesteps/backgrounds on the CPU (identical on any device),
        # the SDS noise on the compute device (cheap for large latents).
        self.gen = torch.Generator().manual_seed(cfg.run.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.run.seed + 1)
        # The representation draws (initialisation, split children, NeRF sampling and shading) from its own
        # generator, so two runs that differ only in the representation see the same cameras, backgrounds,
        # timesteps and noise.
        self.rep_gen = torch.Generator().manual_seed(cfg.run.seed + 2)

        self.guidance = guidance
        # A guidance handed in with its embeddings already set (benchmarks with random embeddings) is used as is.
        if not self.guidance.text_ready:
            self.guidance.prepare_text(cfg.prompt, cfg.guidance.negative_prompt, cfg.guidance.view_dependent)
        self.background_kind = self.guidance.required_background or cfg.render.background
        if self.background_kind != cfg.render.background:
            log.info("guidance %s needs a %s background; using it", type(self.guidance).__name__, self.background_kind)

        self.rep: Representation = build_representation(cfg, self.device, self.rep_gen)
        self.model = self.rep.module
        self.kernel_backend = resolve_kernel_backend(cfg.densify.backend, self.device)
        self.evaluator = evaluator if cfg.run.eval_every > 0 else None
        self.schedule = schedules.TimestepSchedule(cfg.schedule, self.guidance.alphas_cumprod.cpu(), cfg.run.steps)
        self.timer = StageTimer(self.device, profile)
        self._last_good: Optional[Dict[str, Any]] = None
        self._last_good_step = -1

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> StepOutput:
        cfg, T, rep = self.cfg, self.timer, self.rep
        total = cfg.run.steps
        res = schedules.resolution_at(step, total, cfg.render.resolution, cfg.render.resolution_milestones)
        with T("densify"):  # the structural updates: the NeRF's occupancy grid (Gaussians: schedules only)
            rep.begin_step(step)
        c = cfg.camera
        cams = sample_orbit_cameras(
            c.batch_size, res, self.gen, c.elevation_range, c.azimuth_range, c.radius_range, c.fovy_range,
            front_half_angle=c.front_half_angle, overhead_elevation=c.overhead_elevation,
        ).to(self.device)
        bg = make_background(self.background_kind, c.batch_size, cfg.render.background_color, self.gen, self.device)
        t = self.schedule(step, c.batch_size, self.gen).to(self.device)

        with T("render"):
            out = rep.render_train(cams, bg, step)
            images = out.rgb.permute(0, 3, 1, 2)
        # Cut the graph between renderer and encoder so both backward passes can be timed separately.
        images_leaf = images.detach().requires_grad_(True)
        with T("vae"):
            x0 = self.guidance.encode(images_leaf)
        with T("unet"):
            noise = torch.randn(x0.shape, generator=self.noise_gen, device=self.device, dtype=torch.float32)
            x_t = add_noise(x0.detach(), noise, t, self.guidance.alphas_cumprod)
            eps = self.guidance.predict_noise(x_t, t, cams.directions)
        with T("sds"):
            w = sds_weight(t, self.guidance.alphas_cumprod, cfg.guidance.weighting, self.schedule.prior)
            loss, sstats = sds_loss(self.kernel_backend, x0, eps, noise, w, cfg.guidance.guidance_scale,
                                    cfg.guidance.grad_clip)
        with T("backward_vae"):
            loss.backward()
        with T("backward_render"):
            # Nothing visible (e.g. every Gaussian culled) leaves the render without a graph: nothing to do.
            if images_leaf.grad is not None and images.requires_grad:
                if out.reg_loss is not None:
                    ((images * images_leaf.grad).sum() + out.reg_loss).backward()
                else:
                    images.backward(images_leaf.grad)
        with T("optimizer"):
            rep.post_backward(out, step)
            rep.optimizer_step()
        with T("densify"):
            event = rep.after_step(step)
            if event is not None:
                self._log(event)
        return StepOutput(loss.detach(), sstats["grad_norm"], sstats["num_nonfinite"], t, res)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        cfg = self.cfg
        total = cfg.run.steps
        history: List[dict] = []
        evals: List[dict] = []
        eval_seconds = 0.0
        start = time.perf_counter()
        if self.run is not None:
            self.run.open_logs(cfg.run.tensorboard)
        bar = self._progress(total)
        step = 0
        try:
            for step in range(total):
                so = self.train_step(step)
                last = step == total - 1
                if (step + 1) % cfg.run.log_every == 0 or last:
                    row = self._scalars(step, so, start, eval_seconds)
                    history.append(row)
                    self._log(row)
                    self._check_finite(step, row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.3g}", n=self.rep.size(), t=row["t"])
                if self.evaluator is not None and ((step + 1) % cfg.run.eval_every == 0 or last):
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    t0 = time.perf_counter()
                    evals.append(self.evaluate(step + 1, t0 - start - eval_seconds))
                    self._log({"event": "eval", **evals[-1]})
                    eval_seconds += time.perf_counter() - t0
                if cfg.run.checkpoint_every and (step + 1) % cfg.run.checkpoint_every == 0 and not last:
                    self._check_finite(step, None)
                    self.save_checkpoint(step + 1)
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            # Never lose work: keep what was optimised so far next to the run's files.
            if self.run is not None and self.rep.is_finite():
                path = self.save_checkpoint(step, name="interrupted.pt")
                self.run.save_splats("interrupted.ply", self.rep.splat_params())
                log.warning("interrupted at step %d; saved %s and interrupted.ply", step, path)
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.run is not None:
                self.run.close_logs()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start - eval_seconds
        stage_ms = {k: 1000.0 * v / total for k, v in self.timer.totals.items()} if self.timer.enabled else {}
        if self.run is not None:
            self.save_checkpoint(total, name="final.pt")
        return TrainResult(self.rep, history, stage_ms, seconds, total, evals)

    def evaluate(self, step: int, train_seconds: float) -> dict:
        """The evaluator's metrics of the current model, with the step and the training seconds so far."""
        assert self.evaluator is not None
        return {"step": step, "train_seconds": train_seconds, **self.evaluator(self.rep)}

    def _scalars(self, step: int, so: StepOutput, start: float, eval_seconds: float = 0.0) -> dict:
        return {
            "step": step + 1,
            "loss": float(so.loss),
            "grad_norm": float(so.grad_norm),
            "nonfinite": int(so.num_nonfinite),
            "t": int(so.t[0]),
            "resolution": so.resolution,
            **self.rep.scalars(),
            "elapsed_s": round(time.perf_counter() - start - eval_seconds, 3),
        }

    def _check_finite(self, step: int, row: Optional[dict]) -> None:
        """Stop on NaN/Inf with a clear message; keep the last good state on disk."""
        bad_loss = row is not None and not math.isfinite(row["loss"])
        if not bad_loss and self.rep.is_finite():
            self._last_good = self.rep.state()
            self._last_good_step = step + 1
            return
        where = "the loss" if bad_loss else {"gaussians": "the Gaussians' parameters"}.get(self.rep.kind, "the NeRF's parameters")
        saved = ""
        if self.run is not None and self._last_good is not None:
            path = self.run.save_checkpoint("last_good.pt", {"step": self._last_good_step, "kind": self.rep.kind,
                                                            "params": self._last_good})
            ply = self.run.save_splats("last_good.ply", self.rep.splat_params(self._last_good))
            saved = f"; the last good state (step {self._last_good_step}) is in {path} and {ply}"
        raise NonFiniteError(
            f"{where} became NaN/Inf at step {step + 1}{saved}. Try a lower learning rate (optim.* or nerf.lr), a "
            "smaller guidance.guidance_scale, or guidance.grad_clip > 0."
        )

    # ------------------------------------------------------------------ records
    def save_checkpoint(self, step: int, name: Optional[str] = None) -> Optional[Path]:
        if self.run is None:
            return None
        payload = {"step": step, **self.rep.checkpoint(), "rng": self.gen.get_state(), "rep_rng": self.rep_gen.get_state()}
        return self.run.save_checkpoint(name or f"step_{step:06d}.pt", payload)

    def _log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log(row)

    def _progress(self, total: int):
        mode = self.cfg.run.progress
        if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc="splatgen", dynamic_ncols=True)


def preview_cameras(n: int, resolution: int, device: torch.device) -> Cameras:
    return evenly_spaced_cameras(n, resolution, elevation=15.0, radius=2.25, fovy=45.0, device=device)
