"""The optimisation loop: sample cameras, render, guidance, step, densify.

``Trainer.train()`` runs ``train_step`` once per step and does everything else (logging, checkpoints,
previews, evaluation) around it, so the step itself reads top to bottom.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from torch import Tensor

from . import schedules
from .cameras import Cameras, evenly_spaced_cameras, sample_orbit_cameras
from .config import Config, save_config
from .densify import DensifyParams, DensifyStats
from .errors import DeviceError, NonFiniteError, RunDirError
from .export import save_ply
from .gaussians import GaussianModel
from .guidance.base import Guidance
from .kernels_glue import accumulate_stats, densify_step, resolve_kernel_backend, sds_loss
from .render import make_background, render, resolve_backend
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


def prepare_run_dir(out_dir: Optional[Path], overwrite: bool) -> None:
    """Create the run folder; refuse one that already holds a run unless ``overwrite``."""
    if out_dir is None:
        return
    markers = ("config.yaml", "splats.ply", "metrics.jsonl", "checkpoints")
    if out_dir.exists() and any((out_dir / m).exists() for m in markers) and not overwrite:
        raise RunDirError(
            f"{out_dir} already holds a run (found {[m for m in markers if (out_dir / m).exists()]}); "
            "choose another --out folder, or pass --overwrite to replace it"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


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
    model: GaussianModel
    history: List[dict] = field(default_factory=list)
    stage_ms: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0


class Trainer:
    """One generation. ``guidance`` may be passed in (tests, benchmarks); otherwise it is built from the config."""

    def __init__(
        self,
        cfg: Config,
        out_dir: Optional[str | Path] = None,
        guidance: Optional[Guidance] = None,
        overwrite: bool = False,
        profile: bool = False,
    ):
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.device = resolve_device(cfg.run.device)
        prepare_run_dir(self.out_dir, overwrite)
        if self.out_dir is not None:
            save_config(cfg, self.out_dir / "config.yaml")

        # Every random draw comes from these: cameras/timesteps/backgrounds/splits on the CPU (identical on
        # any device), the SDS noise on the compute device (cheap for large latents).
        self.gen = torch.Generator().manual_seed(cfg.run.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.run.seed + 1)

        self.guidance = guidance if guidance is not None else self._build_guidance()
        # A guidance handed in with its embeddings already set (benchmarks with random embeddings) is used as is.
        if not getattr(self.guidance, "text_ready", False):
            self.guidance.prepare_text(cfg.prompt, cfg.guidance.negative_prompt, cfg.guidance.view_dependent)
        self.background_kind = getattr(self.guidance, "required_background", None) or cfg.render.background
        if self.background_kind != cfg.render.background:
            log.info("guidance %s needs a %s background; using it", type(self.guidance).__name__, self.background_kind)

        m = cfg.model
        self.model = GaussianModel.init_ball(
            m.num_points, m.init_radius, m.init_scale, m.init_opacity, m.sh_degree, m.init_color,
            generator=self.gen, device=self.device,
        )
        o = cfg.optim
        self.model.create_optimizer(dict(
            means=o.lr_means, scales=o.lr_scales, quats=o.lr_quats, opacities=o.lr_opacities, sh0=o.lr_sh0, shN=o.lr_shN,
        ))
        self.render_backend = resolve_backend(cfg.render.backend, self.device)
        self.kernel_backend = resolve_kernel_backend(cfg.densify.backend, self.device)
        self.densify_params = DensifyParams.from_config(cfg.densify)
        self.stats = DensifyStats.zeros(len(self.model), self.device)
        self.schedule = schedules.TimestepSchedule(cfg.schedule, self.guidance.alphas_cumprod.cpu(), cfg.run.steps)
        self.timer = StageTimer(self.device, profile)
        self._last_good: Optional[Dict[str, Tensor]] = None
        self._last_good_step = -1
        self._metrics_file = None
        self._tb = None

    # ------------------------------------------------------------------ construction helpers
    def _build_guidance(self) -> Guidance:
        from .guidance import load_guidance, resolve_dtype

        g = self.cfg.guidance
        if g.type == "world":
            from .world.oracle import WorldGuidance

            return WorldGuidance.from_config(self.cfg, device=self.device)
        return load_guidance(g, self.device, resolve_dtype(g.dtype, self.device))

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> StepOutput:
        cfg, T = self.cfg, self.timer
        total = cfg.run.steps
        res = schedules.resolution_at(step, total, cfg.render.resolution, cfg.render.resolution_milestones)
        self.model.set_active_sh_degree(
            schedules.sh_degree_at(step, total, cfg.model.sh_degree, cfg.model.sh_degree_milestones)
        )
        self.model.set_lr("means", schedules.means_lr_at(step, total, cfg.optim.lr_means, cfg.optim.lr_means_final))
        c = cfg.camera
        cams = sample_orbit_cameras(
            c.batch_size, res, self.gen, c.elevation_range, c.azimuth_range, c.radius_range, c.fovy_range,
            front_half_angle=c.front_half_angle, overhead_elevation=c.overhead_elevation,
        ).to(self.device)
        bg = make_background(self.background_kind, c.batch_size, cfg.render.background_color, self.gen, self.device)
        t = self.schedule(step, c.batch_size, self.gen).to(self.device)

        with T("render"):
            out = render(self.model, cams, bg, backend=self.render_backend,
                         near_plane=cfg.render.near_plane, eps2d=cfg.render.eps2d)
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
                images.backward(images_leaf.grad)
        with T("optimizer"):
            if self._in_window(step):
                accumulate_stats(self.kernel_backend, self.stats, out.means2d.grad, out.radii, out.width, out.height)
            assert self.model.optimizer is not None
            self.model.optimizer.step()
            self.model.optimizer.zero_grad(set_to_none=True)
        with T("densify"):
            self._maybe_densify(step)
        return StepOutput(loss.detach(), sstats["grad_norm"], sstats["num_nonfinite"], t, res)

    def _in_window(self, step: int) -> bool:
        d = self.cfg.densify
        total = self.cfg.run.steps
        return d.enabled and int(d.start * total) <= step < int(d.stop * total)

    def _maybe_densify(self, step: int) -> None:
        d, total = self.cfg.densify, self.cfg.run.steps
        if not d.enabled:
            return
        if schedules.in_densify_window(step, total, d.start, d.stop, d.every):
            counts = densify_step(self.kernel_backend, self.model, self.stats, self.densify_params, self.gen)
            self.stats = DensifyStats.zeros(len(self.model), self.device)
            self._log({"step": step + 1, "event": "densify", **counts})
        if d.opacity_reset_every > 0 and self._in_window(step) and (step + 1) % d.opacity_reset_every == 0:
            self.model.reset_opacities(d.reset_opacity)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        cfg = self.cfg
        total = cfg.run.steps
        history: List[dict] = []
        start = time.perf_counter()
        self._open_logs()
        bar = self._progress(total)
        try:
            for step in range(total):
                so = self.train_step(step)
                last = step == total - 1
                if (step + 1) % cfg.run.log_every == 0 or last:
                    row = self._scalars(step, so, start)
                    history.append(row)
                    self._log(row)
                    self._check_finite(step, row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{row['loss']:.3g}", n=row["num_gaussians"], t=row["t"])
                if cfg.run.checkpoint_every and (step + 1) % cfg.run.checkpoint_every == 0 and not last:
                    self._check_finite(step, None)
                    self.save_checkpoint(step + 1)
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            # Never lose work: keep what was optimised so far next to the run's files.
            if self.out_dir is not None and self.model.is_finite():
                path = self.save_checkpoint(step, name="interrupted.pt")
                save_ply(self.model, self.out_dir / "interrupted.ply")
                log.warning("interrupted at step %d; saved %s and interrupted.ply", step, path)
            raise
        finally:
            if bar is not None:
                bar.close()
            self._close_logs()
        seconds = time.perf_counter() - start
        stage_ms = {k: 1000.0 * v / total for k, v in self.timer.totals.items()} if self.timer.enabled else {}
        if self.out_dir is not None:
            self.save_checkpoint(total, name="final.pt")
        return TrainResult(self.model, history, stage_ms, seconds, total)

    def _scalars(self, step: int, so: StepOutput, start: float) -> dict:
        return {
            "step": step + 1,
            "loss": float(so.loss),
            "grad_norm": float(so.grad_norm),
            "nonfinite": int(so.num_nonfinite),
            "t": int(so.t[0]),
            "resolution": so.resolution,
            "num_gaussians": len(self.model),
            "sh_degree": self.model.active_sh_degree,
            "lr_means": self.model.optimizer.param_groups[0]["lr"] if self.model.optimizer else 0.0,
            "elapsed_s": round(time.perf_counter() - start, 3),
        }

    def _check_finite(self, step: int, row: Optional[dict]) -> None:
        """Stop on NaN/Inf with a clear message; keep the last good state on disk."""
        bad_loss = row is not None and not math.isfinite(row["loss"])
        if not bad_loss and self.model.is_finite():
            self._last_good = self.model.state()
            self._last_good_step = step + 1
            return
        where = "the loss" if bad_loss else "the Gaussian parameters"
        saved = ""
        if self.out_dir is not None and self._last_good is not None:
            path = self.out_dir / "checkpoints" / "last_good.pt"
            path.parent.mkdir(exist_ok=True)
            torch.save({"step": self._last_good_step, "params": self._last_good}, path)
            save_ply(self._last_good, self.out_dir / "last_good.ply")
            saved = f"; the last good state (step {self._last_good_step}) is in {path} and {self.out_dir / 'last_good.ply'}"
        raise NonFiniteError(
            f"{where} became NaN/Inf at step {step + 1}{saved}. Try a lower learning rate (optim.*), a smaller "
            "guidance.guidance_scale, or guidance.grad_clip > 0."
        )

    # ------------------------------------------------------------------ files
    def save_checkpoint(self, step: int, name: Optional[str] = None) -> Optional[Path]:
        if self.out_dir is None:
            return None
        path = self.out_dir / "checkpoints" / (name or f"step_{step:06d}.pt")
        path.parent.mkdir(exist_ok=True)
        assert self.model.optimizer is not None
        tmp = path.with_suffix(".tmp")
        torch.save({
            "step": step,
            "params": self.model.state(),
            "sh_degree": self.model.sh_degree,
            "active_sh_degree": self.model.active_sh_degree,
            "optimizer": self.model.optimizer.state_dict(),
            "rng": self.gen.get_state(),
        }, tmp)
        tmp.replace(path)
        return path

    def _open_logs(self) -> None:
        if self.out_dir is None:
            return
        self._metrics_file = open(self.out_dir / "metrics.jsonl", "a", buffering=1)
        if self.cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:
                log.warning("run.tensorboard=true but tensorboard is not installed; logging to metrics.jsonl only")

    def _close_logs(self) -> None:
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _log(self, row: dict) -> None:
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(row) + "\n")
        if self._tb is not None and "event" not in row:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, row["step"])

    def _progress(self, total: int):
        mode = self.cfg.run.progress
        if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc="splatgen", dynamic_ncols=True)


def preview_cameras(n: int, resolution: int, device: torch.device) -> Cameras:
    return evenly_spaced_cameras(n, resolution, elevation=15.0, radius=2.25, fovy=45.0, device=device)
