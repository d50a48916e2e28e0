"""The Python API: ``splatgen.generate(prompt, ...)`` and the result it returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .cameras import Cameras, evenly_spaced_cameras
from .config import Config, load_config
from .errors import PromptError
from .export import save_image_grid, save_ply
from .representation import Representation
from .rundir import splats_name

log = logging.getLogger("splatgen")


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise PromptError(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PromptError('the prompt is empty; describe the object to generate, e.g. "a red mug"')
    return " ".join(prompt.split())


@dataclass
class GenerationResult:
    """What a generation produced: the model (a :class:`GaussianModel`, or a NeRF with ``model.type=nerf``),
    the config, and where files were written."""

    model: Any
    config: Config
    out_dir: Optional[Path] = None
    history: List[dict] = field(default_factory=list)
    stage_ms: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: Optional[Dict[str, Any]] = None
    rep: Optional[Representation] = None
    evals: List[dict] = field(default_factory=list)
    """Ground-truth metrics every ``run.eval_every`` steps (procedural-world prompts)."""
    timings: Dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds of the phases of ``generate``: setup (config, guidance and text encoding, model),
    optimisation (including any ``run.eval_every`` evaluations, which ``seconds`` leaves out), export (.ply,
    previews, summary), evaluation, total."""

    @property
    def num_gaussians(self) -> int:
        """Gaussians in the model (for a NeRF: its occupied grid cells)."""
        return self.rep.size() if self.rep is not None else len(self.model)

    def save_ply(self, path: str | Path, pad_sh_to_degree3: bool = False) -> Path:
        """Write the model as a 3DGS-layout .ply (a NeRF writes its density as a point cloud of splats)."""
        save_ply(self.rep.splat_params() if self.rep is not None else self.model, path, pad_sh_to_degree3)
        return Path(path)

    def render(
        self,
        cameras: Optional[Cameras] = None,
        n_views: int = 4,
        resolution: int = 256,
        elevation: float = 15.0,
        background: Sequence[float] = (1.0, 1.0, 1.0),
        backend: str = "auto",
    ) -> Tensor:
        """Images [B, H, W, 3] in [0, 1] (by default ``n_views`` views evenly spaced in azimuth)."""
        from .render import render, resolve_backend

        dev = self.rep.device if self.rep is not None else self.model.device
        cams = cameras if cameras is not None else evenly_spaced_cameras(n_views, resolution, elevation=elevation, device=dev)
        bg = torch.tensor(background, dtype=torch.float32, device=dev).expand(len(cams), 3)
        if self.rep is not None and self.rep.kind != "gaussians":
            return self.rep.render_eval(cams.to(dev), bg)[0].clamp(0, 1).cpu()
        with torch.no_grad():
            out = render(self.model, cams.to(dev), bg, backend=resolve_backend(backend, dev))
        return out.rgb.clamp(0, 1).cpu()

    def save_previews(self, path: str | Path, n_views: int = 4, resolution: int = 256) -> Path:
        save_image_grid(self.render(n_views=n_views, resolution=resolution), path)
        return Path(path)


def _overrides_from_kwargs(kwargs: Dict[str, Any]) -> dict:
    """``run={"steps": 10}`` merges a section; ``run__steps=10`` is the dotted key run.steps."""
    extra: dict = {}
    for k, v in kwargs.items():
        if isinstance(v, dict):
            extra.setdefault(k, {}).update(v)
        elif "__" in k:
            sec, key = k.split("__", 1)
            extra.setdefault(sec, {})[key] = v
        else:
            extra[k] = v
    return extra


def generate(
    prompt: str,
    config: str | Path | Sequence[str | Path] | Config | None = None,
    out_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    guidance=None,
    profile: bool = False,
    **kwargs: Any,
) -> GenerationResult:
    """Generate 3D Gaussians for ``prompt``.

    Args:
        prompt: the text prompt.
        config: a YAML path, a bundled config name (``"default"``, ``"sd21"``...), a list of them, or a Config;
            None means the bundled ``default`` (the offline procedural-world prior).
        out_dir: run folder for ``splats.ply``, ``config.yaml``, ``metrics.jsonl``, checkpoints and previews
            (None: nothing written).
        overrides: ``"section.key=value"`` strings, as on the command line.
        overwrite: replace an existing run in ``out_dir`` (otherwise that is refused).
        guidance: a ready :class:`~splatgen.guidance.base.Guidance` to use instead of building one.
        profile: time each stage of the step (synchronises the GPU; for benchmarks).
        **kwargs: section overrides, ``run={"steps": 100}`` or ``run__steps=100``.
    """
    import time

    from .components import build_evaluator, build_guidance
    from .rundir import RunFolder
    from .trainer import Trainer, preview_cameras, resolve_device

    t0 = time.perf_counter()
    prompt = check_prompt(prompt)
    extra = _overrides_from_kwargs(kwargs)
    if isinstance(config, Config):
        from omegaconf import OmegaConf

        base = OmegaConf.to_container(OmegaConf.structured(config))
        cfg = load_config(extra=_deep_merge(base, extra), overrides=overrides)
    else:
        # No config: the bundled offline default (configs/default.yaml), as `splatgen generate` uses.
        files = ["default"] if config is None else ([config] if isinstance(config, (str, Path)) else list(config))
        cfg = load_config(files, overrides, extra=extra)
    cfg.prompt = prompt
    device = resolve_device(cfg.run.device)
    run = RunFolder(out_dir, overwrite=overwrite) if out_dir is not None else None
    if run is not None:
        run.write_config(cfg)
    if guidance is None:
        guidance = build_guidance(cfg, device)
    evaluator = None
    if cfg.run.eval_every > 0:
        evaluator = build_evaluator(cfg)
        if evaluator is None:
            log.warning("run.eval_every=%d ignored: %r is not a prompt of the procedural world, so there is no "
                        "ground truth to evaluate against", cfg.run.eval_every, cfg.prompt)
    trainer = Trainer(cfg, guidance, run=run, evaluator=evaluator, profile=profile)
    t_setup = time.perf_counter()
    tr = trainer.train()
    t_train = time.perf_counter()
    result = GenerationResult(tr.model, cfg, run.path if run is not None else None, tr.history, tr.stage_ms,
                              tr.seconds, rep=tr.rep, evals=tr.evals)
    if run is not None:
        run.save_splats(splats_name(cfg), tr.rep.splat_params())
        if cfg.run.preview_views > 0:
            cams = preview_cameras(cfg.run.preview_views, cfg.run.preview_resolution, tr.rep.device)
            run.write_previews(result.render(cameras=cams))
        t_export = time.perf_counter()
        result.timings = {"setup": t_setup - t0, "optimisation": t_train - t_setup, "export": t_export - t_train}
        summary = {"prompt": prompt, "representation": tr.rep.kind, "seconds": round(tr.seconds, 3),
                   "steps": tr.steps, **tr.rep.scalars(), "device": str(trainer.device), "stage_ms": tr.stage_ms}

        def write_summary() -> None:
            run.write_summary({**summary, "timings_s": {k: round(v, 3) for k, v in result.timings.items()}})

        write_summary()  # before the evaluation, so a failing evaluation still leaves it
        if cfg.run.evaluate:
            result.metrics = _maybe_evaluate(run.path, prompt)
        t_eval = time.perf_counter()
        result.timings.update(evaluation=t_eval - t_export, total=t_eval - t0)
        write_summary()
    else:
        result.timings = {"setup": t_setup - t0, "optimisation": t_train - t_setup, "total": t_train - t0}
    trainer.guidance.release()
    return result


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _maybe_evaluate(run_dir: Path, prompt: str) -> Optional[Dict[str, Any]]:
    from .world.grammar import is_world_prompt
    from .world.metrics import evaluate_run

    if not is_world_prompt(prompt):
        return None
    return evaluate_run(run_dir)


def load_result(run_dir: str | Path, device: str = "cpu") -> GenerationResult:
    """Load a finished run folder (``config.yaml`` + ``splats.ply``, or ``checkpoints/final.pt`` for a NeRF)."""
    from .rundir import load_finished_run

    cfg, rep = load_finished_run(run_dir, device)
    return GenerationResult(rep.module, cfg, Path(run_dir), rep=rep)
