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
from .devices import keep_freed_cpu_memory, resolve_device
from .errors import ConfigError, NonFiniteError, RunInterrupted
from .guidance.base import Guidance
from .guidance.losses import DistillationLoss, build_loss
from .guidance.multiview import share_within_groups, uses_view_words, views_error
from .kernels_glue import resolve_kernel_backend, sds_loss
from .render import make_background
from .representation import Representation
from .representation.kinds import build_representation
from .sds import sds_weight

log = logging.getLogger("splatgen")

STAGES = ("render", "vae", "unet", "sds", "backward_vae", "backward_render", "optimizer", "densify", "estimator")


class RunSink(Protocol):
    """Where a run's records go (implemented by :class:`splatgen.rundir.RunFolder`)."""

    def open_logs(self, tensorboard: bool, keep_bytes: Optional[int] = None) -> None: ...

    def start_wandb(self, cfg: Config) -> None:
        """Start a Weights & Biases run that :meth:`log` writes to as well, until :meth:`close_logs` (run.wandb)."""

    def close_logs(self) -> None: ...

    def log(self, row: Dict[str, Any]) -> None:
        """One row of scalars or one event (a dict with ``event``)."""

    def save_checkpoint(self, name: str, payload: Dict[str, Any]) -> Path:
        """Write a checkpoint (``checkpoints/<name>``) atomically; returns its path."""

    def remove_checkpoint(self, name: str) -> None:
        """Delete ``checkpoints/<name>`` if it exists."""

    def log_bytes(self) -> int:
        """How much of the log is written (a checkpoint stores it; a resumed run cuts the log back to it)."""

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
    """Optimisation wall-clock, excluding the periodic evaluations of ``run.eval_every``; of a resumed run, the
    processes before this one included (their seconds travel in the checkpoint)."""
    steps: int = 0
    evals: List[dict] = field(default_factory=list)
    """The periodic ground-truth evaluations (``run.eval_every``), one dict per checkpoint."""
    first_step_seconds: float = 0.0
    """Wall-clock of the first step of this session (compilation, graph capture and autotuning land there)."""
    distillation: Dict[str, Any] = field(default_factory=dict)
    """The loss and what it cost: prior calls and rows (samples) per step, measured."""
    seconds_this_process: float = 0.0
    """The part of ``seconds`` this process spent (all of it unless the run was resumed)."""

    @property
    def model(self):
        return self.rep.module


class Trainer:
    """One generation: ``guidance`` scores the renders; ``run`` (optional) receives logs and checkpoints;
    ``evaluator`` (optional) is called every ``run.eval_every`` steps; ``on_step`` (optional) is called as
    ``on_step(steps_done, rep)`` after every step (the live viewer; it must return fast); ``device`` is the one
    the caller resolved from ``run.device`` (:func:`splatgen.api.check_input`), resolved here when not given."""

    def __init__(
        self,
        cfg: Config,
        guidance: Guidance,
        run: Optional[RunSink] = None,
        evaluator: Optional[Evaluator] = None,
        profile: bool = False,
        on_step: Optional[Callable[[int, Representation], Any]] = None,
        device: Optional[torch.device] = None,
    ):
        self.cfg = cfg
        self.run = run
        self.on_step = on_step
        self.device = resolve_device(cfg.run.device) if device is None else device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.run.cudnn_benchmark
        elif cfg.run.cpu_keep_freed_memory:
            keep_freed_cpu_memory()

        # Every random draw comes from these: cameras/timesteps/backgrounds on the CPU (identical on any device),
        # the SDS noise on the compute device (cheap for large latents).
        self.gen = torch.Generator().manual_seed(cfg.run.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.run.seed + 1)
        # The representation draws (initialisation, split children, NeRF sampling and shading) from its own
        # generator, so two runs that differ only in the representation see the same cameras, backgrounds,
        # timesteps and noise.
        self.rep_gen = torch.Generator().manual_seed(cfg.run.seed + 2)
        # The loss's own draws (VSD's estimator training), apart from the others for the same reason.
        self.loss_gen = torch.Generator().manual_seed(cfg.run.seed + 3)

        self.guidance = guidance
        # A multi-view prior denoises groups of views of one object: the cameras come in such groups (shared
        # elevation, distance and field of view, azimuths evenly spaced) with one timestep per group.
        self.num_views = int(guidance.joint_views)
        refusal = views_error(cfg.camera.batch_size, self.num_views)
        if refusal:
            raise ConfigError(refusal)
        view_words = uses_view_words(guidance, cfg.guidance.view_dependent)
        if cfg.guidance.view_dependent and not view_words:
            log.info("the prior sees each view's camera; the prompt gets no view words")
            if cfg.guidance.perp_neg:
                raise ConfigError("guidance.perp_neg=true pushes views apart by their view words, which this "
                                  "multi-view prior does not use (it sees the cameras); set guidance.perp_neg=false")
        # A guidance handed in with its embeddings already set (benchmarks with random embeddings) is used as is.
        if not self.guidance.text_ready:
            self.guidance.prepare_text(cfg.prompt, cfg.guidance.negative_prompt, view_words)
        self.loss: DistillationLoss = build_loss(cfg.guidance, self.guidance, cfg.camera.overhead_elevation, cfg.run.seed)
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
        # Where a resumed run continues (see resume()).
        self.start_step = 0
        self._history: List[dict] = []
        self._evals: List[dict] = []
        self._seconds_before = 0.0
        self._keep_log_bytes: Optional[int] = None
        #: set by request_stop() (a signal handler): the loop saves and stops at the next step boundary.
        self.stop_signal: Optional[int] = None
        self.first_step_seconds = 0.0
        # This session's start and the seconds its evaluations took (set by train()).
        self._start: Optional[float] = None
        self._eval_seconds = 0.0
        if cfg.run.wandb and run is not None:
            # Here, in the run's setup: a missing package or a W&B that cannot start is refused before the run
            # has anything to keep (the folder goes), and its start-up is not counted as training time.
            run.start_wandb(cfg)

    def request_stop(self, signum: int = 2) -> None:
        """Stop after the step in progress, keeping everything needed to continue (safe from a signal handler)."""
        self.stop_signal = signum

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, step: int) -> Dict[str, Any]:
        """Everything the run needs to continue after ``step`` completed steps, exactly: the representation
        (parameters, optimiser, densification statistics), every random generator, the records so far."""
        return {
            "step": step,
            "prompt": self.cfg.prompt,
            **self.rep.checkpoint(),
            "rng": self.gen.get_state(),
            "rep_rng": self.rep_gen.get_state(),
            "noise_rng": self.noise_gen.get_state(),
            "loss_rng": self.loss_gen.get_state(),
            "loss": self.loss.state_dict(),
            "history": list(self._history),
            "evals": list(self._evals),
            "seconds": self._seconds_before + self._session_seconds(),
            "log_bytes": self.run.log_bytes() if self.run is not None else 0,
        }

    def resume(self, payload: Dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (a checkpoint of this config)."""
        if payload.get("kind") != self.rep.kind:
            raise ValueError(f"checkpoint of a {payload.get('kind')} run, this run is {self.rep.kind}")
        self.rep.restore(payload)
        self.model = self.rep.module
        self.gen.set_state(payload["rng"])
        self.rep_gen.set_state(payload["rep_rng"])
        self.noise_gen.set_state(payload["noise_rng"].to(self.noise_gen.get_state().device))
        if "loss_rng" in payload:
            self.loss_gen.set_state(payload["loss_rng"])
        self.loss.load_state_dict(payload.get("loss"))
        self.start_step = int(payload["step"])
        self._history = list(payload.get("history", []))
        self._evals = list(payload.get("evals", []))
        self._seconds_before = float(payload.get("seconds", 0.0))
        self._keep_log_bytes = int(payload.get("log_bytes", 0))
        self._last_good, self._last_good_step = self.rep.state(), self.start_step

    def _session_seconds(self) -> float:
        if self._start is None:
            return 0.0
        return time.perf_counter() - self._start - self._eval_seconds

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> StepOutput:
        cfg, T, rep = self.cfg, self.timer, self.rep
        total = cfg.run.steps
        res = schedules.resolution_at(step, total, cfg.render.resolution, cfg.render.resolution_milestones)
        with T("densify"):  # the structural updates: the NeRF's occupancy grid (Gaussians: schedules only)
            rep.begin_step(step)
        c = cfg.camera
        # The loss reads the cameras' angles on the CPU (no device round trip); the renderer gets them on the device.
        cams_cpu = sample_orbit_cameras(
            c.batch_size, res, self.gen, c.elevation_range, c.azimuth_range, c.radius_range, c.fovy_range,
            front_half_angle=c.front_half_angle, overhead_elevation=c.overhead_elevation, group_size=self.num_views,
        )
        cams = cams_cpu.to(self.device)
        bg = make_background(self.background_kind, c.batch_size, cfg.render.background_color, self.gen, self.device)
        t = self.schedule(step, c.batch_size, self.gen)
        if self.num_views > 1:
            t = share_within_groups(t, self.num_views)
        t = t.to(self.device)

        with T("render"):
            out = rep.render_train(cams, bg, step)
            images = out.rgb.permute(0, 3, 1, 2)
        # Cut the graph between renderer and encoder so both backward passes can be timed separately.
        images_leaf = images.detach().requires_grad_(True)
        with T("vae"):
            x0 = self.guidance.encode(images_leaf)
        with T("unet"):  # the loss's prior calls: the noisy input, the guided pair and its baseline
            noise = torch.randn(x0.shape, generator=self.noise_gen, device=self.device, dtype=torch.float32)
            terms = self.loss.terms(x0.detach(), t, cams_cpu, noise)
        with T("sds"):
            w = sds_weight(t, self.guidance.alphas_cumprod, cfg.guidance.weighting, self.schedule.prior)
            scale = schedules.milestone_value(step, total, cfg.guidance.guidance_scale,
                                              cfg.guidance.guidance_scale_milestones)
            loss, sstats = sds_loss(self.kernel_backend, x0, terms.eps_pair, terms.baseline, w, scale,
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
        with T("estimator"):  # VSD trains its model of the renders here (other losses: nothing)
            self.loss.after_backward(x0.detach(), t, cams_cpu, self.loss_gen)
        return StepOutput(loss.detach(), sstats["grad_norm"], sstats["num_nonfinite"], t, res)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        cfg = self.cfg
        total = cfg.run.steps
        history, evals = self._history, self._evals
        self._eval_seconds = 0.0
        self._start = start = time.perf_counter()
        last_checkpoint = start
        if self.run is not None:
            self.run.open_logs(cfg.run.tensorboard, keep_bytes=self._keep_log_bytes)
        bar = self._progress(total, self.start_step)
        done = self.start_step
        try:
            for step in range(self.start_step, total):
                so = self.train_step(step)
                if step == self.start_step:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self.first_step_seconds = time.perf_counter() - start
                done = step + 1
                if self.on_step is not None:
                    self.on_step(done, self.rep)
                last = done == total
                if done % cfg.run.log_every == 0 or last:
                    row = self._scalars(step, so)
                    history.append(row)
                    self._log(row)
                    self._check_finite(step, row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.3g}", n=self.rep.size(), t=row["t"])
                if self.evaluator is not None and (done % cfg.run.eval_every == 0 or last):
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    t0 = time.perf_counter()
                    evals.append(self.evaluate(done, self._seconds_before + t0 - start - self._eval_seconds))
                    self._log({"event": "eval", **evals[-1]})
                    self._eval_seconds += time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                if last or self.run is None:
                    continue
                if self.stop_signal is not None:
                    raise self._interrupt(done, self.stop_signal)
                every = cfg.run.checkpoint_every
                minutes = cfg.run.checkpoint_minutes
                if every and done % every == 0:
                    self._check_finite(step, None)
                    self.save_checkpoint(done)
                    last_checkpoint = time.perf_counter()
                elif minutes > 0 and time.perf_counter() - last_checkpoint >= 60.0 * minutes:
                    self._check_finite(step, None)
                    self.save_checkpoint(done, name="resume.pt")
                    last_checkpoint = time.perf_counter()
        except RunInterrupted:
            raise
        except KeyboardInterrupt:
            # A hard interrupt in the middle of a step (a second Ctrl-C, or no graceful handler installed): the
            # step's state is half updated, so keep the model as a file but no checkpoint to continue from (the
            # last periodic one stays).
            if self.run is not None and self.rep.is_finite():
                self.run.save_splats("interrupted.ply", self.rep.splat_params())
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.run is not None:
                self.run.close_logs()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds_here = time.perf_counter() - start - self._eval_seconds
        seconds = self._seconds_before + seconds_here
        steps_here = max(total - self.start_step, 1)
        stage_ms = {k: 1000.0 * v / steps_here for k, v in self.timer.totals.items()} if self.timer.enabled else {}
        if self.run is not None:
            self.save_checkpoint(total, name="final.pt")
            for name in ("resume.pt", "interrupted.pt"):
                self.run.remove_checkpoint(name)
        distillation = {**self.loss.describe(), "prior_calls_per_step": round(self.loss.calls / steps_here, 3),
                        "prior_rows_per_step": round(self.loss.rows / steps_here, 3)}
        self.loss.release()
        return TrainResult(self.rep, history, stage_ms, seconds, total, evals, self.first_step_seconds, distillation,
                           seconds_this_process=seconds_here)

    def _interrupt(self, done: int, signum: int) -> RunInterrupted:
        """Keep the model (the small .ply first, so a second signal during the large checkpoint still leaves it)
        and a checkpoint to continue from; the exception says where they are."""
        assert self.run is not None
        kept = []
        if self.rep.is_finite():
            kept.append(self.run.save_splats("interrupted.ply", self.rep.splat_params()))
            kept.append(self.save_checkpoint(done, name="interrupted.pt"))
        what = " and ".join(str(p) for p in kept) if kept else "nothing (the parameters were not finite)"
        name = {2: "Ctrl-C", 15: "SIGTERM"}.get(signum, f"signal {signum}")
        return RunInterrupted(f"stopped by {name} after step {done} of {self.cfg.run.steps}; kept {what}",
                              signum=signum, step=done)

    def evaluate(self, step: int, train_seconds: float) -> dict:
        """The evaluator's metrics of the current model, with the step and the training seconds so far."""
        assert self.evaluator is not None
        return {"step": step, "train_seconds": train_seconds, **self.evaluator(self.rep)}

    def _scalars(self, step: int, so: StepOutput) -> dict:
        return {
            "step": step + 1,
            "loss": float(so.loss),
            "grad_norm": float(so.grad_norm),
            "nonfinite": int(so.num_nonfinite),
            "t": int(so.t[0]),
            "resolution": so.resolution,
            **self.rep.scalars(),
            "elapsed_s": round(self._seconds_before + self._session_seconds(), 3),
        }

    def _check_finite(self, step: int, row: Optional[dict]) -> None:
        """Stop on NaN/Inf with a clear message; keep the last good state on disk."""
        bad_loss = row is not None and not math.isfinite(row["loss"])
        if not bad_loss and self.rep.is_finite():
            self._last_good = self.rep.state()
            self._last_good_step = step + 1
            return
        where = "the loss" if bad_loss else self.rep.parameters_name
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
        return self.run.save_checkpoint(name or f"step_{step:06d}.pt", self.state_dict(step))

    def _log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log(row)

    def _progress(self, total: int, initial: int = 0):
        """A tqdm bar on a terminal; elsewhere (a log file, CI, Slurm) with ``run.progress=auto``, log lines
        (:class:`ProgressLines`), so long work is never silent; nothing with ``off``."""
        mode = self.cfg.run.progress
        if mode == "off":
            return None
        if mode == "auto" and not sys.stderr.isatty():
            return ProgressLines(total, initial)
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc="splatgen", dynamic_ncols=True)


class ProgressLines:
    """The progress bar's stand-in where no terminal shows one: a log line (steps done, the latest scalars,
    elapsed time and ETA) each time another tenth of the run is done, or :attr:`EVERY_S` seconds after the last
    line when a tenth takes longer. It takes the calls the loop makes on a tqdm bar (``update``,
    ``set_postfix``, ``close``)."""

    EVERY_S = 30.0

    def __init__(self, total: int, initial: int = 0):
        self.total, self.initial, self.n = max(total, 1), initial, initial
        self.postfix: Dict[str, Any] = {}
        self._start = self._last = time.monotonic()
        self._next = self._next_tenth()

    def _next_tenth(self) -> int:
        """The first step count past ``n`` that completes another tenth of the run."""
        return -(-(self.n * 10 // self.total + 1) * self.total // 10)  # ceil, in integers

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.n >= self._next or now - self._last >= self.EVERY_S:
            elapsed = now - self._start
            eta = elapsed / (self.n - self.initial) * (self.total - self.n)
            scalars = "".join(f", {k}={v}" for k, v in self.postfix.items())  # as the bar shows them
            log.info("step %d/%d (%d%%)%s; %s elapsed, ETA %s", self.n, self.total, 100 * self.n // self.total,
                     scalars, format_seconds(elapsed), format_seconds(eta))
            self._last, self._next = now, self._next_tenth()

    def close(self) -> None:
        pass


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``: a duration for a progress line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def preview_cameras(n: int, resolution: int, device: torch.device) -> Cameras:
    return evenly_spaced_cameras(n, resolution, elevation=15.0, radius=2.25, fovy=45.0, device=device)
