"""The Python API: ``splatgen.generate(prompt, ...)`` and the result it returns."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor

from .cameras import Cameras, evenly_spaced_cameras
from .config import Config, load_config
from .errors import ConfigError, PromptError, RunDirError, short
from .export import save_ply
from .fileio import load_checkpoint
from .representation import Representation

if TYPE_CHECKING:
    from .rundir import RunFolder

log = logging.getLogger("splatgen")


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise PromptError(f"the prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PromptError('the prompt is empty; describe the object to generate, e.g. "a red mug"')
    return " ".join(prompt.split())


@dataclass
class GenerationResult:
    """What a generation produced: the representation (3D Gaussians, or a NeRF with ``model.type=nerf``; its
    ``module`` is the model itself), the config, and where files were written."""

    rep: Representation
    config: Config
    out_dir: Optional[Path] = None
    history: List[dict] = field(default_factory=list)
    stage_ms: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: Optional[Dict[str, Any]] = None
    evals: List[dict] = field(default_factory=list)
    """Ground-truth metrics every ``run.eval_every`` steps (procedural-world prompts)."""
    distillation: Dict[str, Any] = field(default_factory=dict)
    """The loss of the run and its measured cost (prior calls and rows per step)."""
    timings: Dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds of the phases of ``generate``: setup (config, guidance and text encoding, model),
    optimisation (including any ``run.eval_every`` evaluations, which ``seconds`` leaves out), export (.ply,
    previews, summary), evaluation, total."""

    @property
    def num_gaussians(self) -> int:
        """Gaussians in the model (for a NeRF: its occupied grid cells)."""
        return self.rep.size()

    def save_ply(self, path: str | Path, pad_sh_to_degree3: bool = False) -> Path:
        """Write the model as a 3DGS-layout .ply (a NeRF writes its density as a point cloud of splats)."""
        save_ply(self.rep.splat_params(), path, pad_sh_to_degree3)
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
        """Images [B, H, W, 3] in [0, 1] (by default ``n_views`` views evenly spaced in azimuth); ``backend`` is
        the Gaussians' renderer (see :func:`splatgen.render.resolve_backend`)."""
        dev = self.rep.device
        cams = cameras if cameras is not None else evenly_spaced_cameras(n_views, resolution, elevation=elevation, device=dev)
        bg = torch.tensor(background, dtype=torch.float32, device=dev).expand(len(cams), 3)
        return self.rep.render_eval(cams.to(dev), bg, backend)[0].clamp(0, 1).cpu()


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


def resolve_config(config: str | Path | Sequence[str | Path] | Config | None = None, overrides: Sequence[str] = (),
                   **kwargs: Any) -> Config:
    """The run config ``generate`` would use: bundled name(s) / YAML path(s) / a Config, then ``overrides`` and
    keyword sections (``run={"steps": 100}``)."""
    extra = _overrides_from_kwargs(kwargs)
    if isinstance(config, Config):
        from omegaconf import OmegaConf

        base = OmegaConf.to_container(OmegaConf.structured(config))
        return load_config(extra=_deep_merge(base, extra), overrides=overrides)
    # No config: the bundled offline default (configs/default.yaml), as `splatgen generate` uses.
    files = ["default"] if config is None else ([config] if isinstance(config, (str, Path)) else list(config))
    return load_config(files, overrides, extra=extra)


def generate(
    prompt: str,
    config: str | Path | Sequence[str | Path] | Config | None = None,
    out_dir: "str | Path | RunFolder | None" = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    guidance=None,
    profile: bool = False,
    resume: bool = False,
    **kwargs: Any,
) -> GenerationResult:
    """Generate 3D Gaussians for ``prompt``.

    Args:
        prompt: the text prompt.
        config: a YAML path, a bundled config name (``"default"``, ``"sd21"``...), a list of them, or a Config;
            None means the bundled ``default`` (the offline procedural-world prior).
        out_dir: run folder for ``splats.ply``, ``config.yaml``, ``metrics.jsonl``, checkpoints and previews
            (None: nothing written). It is written as ``<out_dir>.partial`` and renamed when complete; see
            :mod:`splatgen.rundir`.
        overrides: ``"section.key=value"`` strings, as on the command line.
        overwrite: replace a finished run in ``out_dir`` once the new one is complete (otherwise that is refused),
            or start an interrupted one again.
        guidance: a ready :class:`~splatgen.guidance.base.Guidance` to use instead of building one (it is not
            released at the end; with ``text_ready`` set its embeddings are used as they are).
        profile: time each stage of the step (synchronises the GPU; for benchmarks).
        resume: continue the interrupted run in ``out_dir`` from its newest checkpoint (same config required);
            the result is the same as if it had never stopped.
        **kwargs: section overrides, ``run={"steps": 100}`` or ``run__steps=100``.

    Raises:
        RunInterrupted: Ctrl-C or SIGTERM (in the main thread) stopped the run at a step boundary; what was kept
            is in the message and ``<out_dir>.partial`` can be resumed.
    """
    from .rundir import RunFolder
    from .trainer import check_memory, resolve_device

    t0 = time.perf_counter()
    try:
        prompt = check_prompt(prompt)
        cfg = resolve_config(config, overrides, **kwargs)
        cfg.prompt = prompt
        device = resolve_device(cfg.run.device)
        check_memory(cfg, device)
        if resume and out_dir is None:
            raise RunDirError("resume needs the run folder (out_dir) of the interrupted run")
    except BaseException:
        if isinstance(out_dir, RunFolder):  # claimed by the caller (the CLI): leave no empty folder behind
            out_dir.release() if out_dir.resumed else out_dir.abandon()
        raise
    run = out_dir if isinstance(out_dir, RunFolder) or out_dir is None else \
        RunFolder.claim(out_dir, overwrite=overwrite, resume=resume, require_interrupted=resume)
    return run_generation(cfg, run, guidance=guidance, profile=profile, t0=t0)


def run_generation(cfg: Config, run: "Optional[RunFolder]", guidance=None, profile: bool = False,
                   t0: Optional[float] = None) -> GenerationResult:
    """One generation of ``cfg`` (its ``prompt`` set) into a claimed run folder (or none): the body of
    :func:`generate`, shared with the batch runner (which passes a guidance it keeps for the next prompt).

    Setup failures remove the run folder when it holds nothing worth keeping; an interrupted or failed run keeps
    it (``.partial``) to resume or inspect; a complete run is renamed to its final name.
    """
    from .components import build_evaluator, build_guidance
    from .rundir import config_differences, splats_name
    from .trainer import Trainer, preview_cameras, resolve_device

    t0 = time.perf_counter() if t0 is None else t0
    device = resolve_device(cfg.run.device)
    own_guidance = guidance is None
    live = None  # the live viewer (run.viewer)
    try:  # ---- setup: nothing of it is kept if it fails
        payload = None
        if run is not None and run.resumed:
            saved = run.saved_config()
            if saved is not None:
                diffs = config_differences(saved, cfg)
                if diffs:
                    raise ConfigError(f"--resume needs the config the run started with; these differ: {diffs[:8]} "
                                      f"(see {run.path / 'config.yaml'})")
            cps = run.checkpoints()
            if cps:
                payload = load_checkpoint(cps[0][1])
                saved_prompt = payload.get("prompt")
                if saved_prompt is not None and saved_prompt != cfg.prompt:
                    raise RunDirError(f"{cps[0][1]} was saved by a run of {short(saved_prompt)}, not of "
                                      f"{short(cfg.prompt)}; it is not this run's to continue (choose another --out)")
                log.info("resuming %s from step %d (%s)", run.final, cps[0][0], cps[0][1].name)
            elif run.refused:
                raise RunDirError(f"cannot resume {run.final}: {run.refused_message()}; start it again with "
                                  "--overwrite (its work is lost), or move the folder away")
            else:
                log.info("%s saved no checkpoint; starting it again", run.final)
        t_guidance = time.perf_counter()
        if guidance is None:
            guidance = build_guidance(cfg, device)
        t_guidance = time.perf_counter() - t_guidance
        evaluator = None
        if cfg.run.eval_every > 0:
            evaluator = build_evaluator(cfg)
            if evaluator is None:
                log.warning("run.eval_every=%d ignored: %s is not a prompt of the procedural world, so there is no "
                            "ground truth to evaluate against", cfg.run.eval_every, short(cfg.prompt))
        if cfg.run.viewer:
            from .viewer import LiveViewer

            live = LiveViewer(port=cfg.run.viewer_port, total_steps=cfg.run.steps)
            log.info("live view of the Gaussians at %s (it closes with the run; `splatgen view RUN` shows the "
                     "result)", live.url)
        trainer = Trainer(cfg, guidance, run=run, evaluator=evaluator, profile=profile,
                          on_step=live.on_step if live is not None else None)
        if payload is not None:
            try:
                trainer.resume(payload)
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # a checkpoint of another run's shape
                raise RunDirError(f"cannot resume {run.final} from {cps[0][1].name}: {str(exc).splitlines()[0][:200]}; "
                                  "start it again with --overwrite (its work is lost)") from None
        if run is not None:
            run.write_config(cfg)
    except BaseException:
        if live is not None:
            live.close()
        if own_guidance and guidance is not None:
            guidance.release()  # built here and never used: free its memory now (a batch keeps its own)
        if run is not None:
            run.release() if run.resumed and run.saved_step() is not None else run.abandon()
        raise
    t_setup = time.perf_counter()
    try:  # ---- training and files: an interrupted or failed run keeps its folder to resume or inspect
        with stop_on_signals(trainer):
            tr = trainer.train()
        t_train = time.perf_counter()
        result = GenerationResult(tr.rep, cfg, run.final if run is not None else None, tr.history, tr.stage_ms,
                                  tr.seconds, evals=tr.evals, distillation=tr.distillation)
        if run is not None:
            run.save_splats(splats_name(cfg), tr.rep.splat_params())
            if cfg.run.preview_views > 0:
                cams = preview_cameras(cfg.run.preview_views, cfg.run.preview_resolution, tr.rep.device)
                run.write_previews(result.render(cameras=cams))
            if cfg.run.video:
                from .export.video import write_turntable

                video = write_turntable(tr.rep, run.path / "turntable.mp4")
                log.info("turntable.mp4: %d frames, %dx%d px, %.2f MB", video.frames, video.width, video.height,
                         video.bytes / 1e6)
            t_export = time.perf_counter()
            result.timings = {"setup": t_setup - t0, "guidance": t_guidance, "optimisation": t_train - t_setup,
                              "first_step": tr.first_step_seconds, "export": t_export - t_train}
            summary = {"prompt": cfg.prompt, "representation": tr.rep.kind, "seconds": round(tr.seconds, 3),
                       "steps": tr.steps, **tr.rep.scalars(), "device": str(trainer.device),
                       "threads": torch.get_num_threads() if trainer.device.type == "cpu" else None,
                       "stage_ms": tr.stage_ms, "distillation": tr.distillation}

            def write_summary() -> None:
                run.write_summary({**summary, "timings_s": {k: round(v, 3) for k, v in result.timings.items()}})

            write_summary()  # before the evaluation, so a failing evaluation still leaves it
            if cfg.run.evaluate:
                result.metrics = _maybe_evaluate(run, cfg)
            t_eval = time.perf_counter()
            result.timings.update(evaluation=t_eval - t_export, total=t_eval - t0)
            write_summary()
            run.finish()
        else:
            result.timings = {"setup": t_setup - t0, "guidance": t_guidance, "optimisation": t_train - t_setup,
                              "first_step": tr.first_step_seconds, "total": t_train - t0}
    except BaseException:
        if run is not None:
            run.release()
        raise
    finally:
        if own_guidance:
            guidance.release()
        if live is not None:
            live.close()
    return result


@contextlib.contextmanager
def stop_on_signals(trainer) -> Iterator[None]:
    """While training: Ctrl-C and SIGTERM ask the trainer to stop at the next step boundary (it then saves what is
    needed to resume); a second signal stops at once. Only in the main thread (signals go there); restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_signal is not None:
            raise KeyboardInterrupt  # asked twice: stop now
        trainer.request_stop(signum)
        log.warning("splatgen: stopping after the current step and saving (send it again to stop at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _maybe_evaluate(run, cfg: Config) -> Optional[Dict[str, Any]]:
    """Ground-truth metrics of a world prompt's run (written to ``metrics.json`` in the run folder), else None."""
    from .representation.kinds import representation_class
    from .rundir import RunView
    from .world.grammar import is_world_prompt
    from .world.metrics import evaluate_run

    if not is_world_prompt(cfg.prompt):
        return None
    model = run.path / representation_class(cfg.model.type).model_file
    return evaluate_run(RunView(run.path, load_config([run.path / "config.yaml"]), True, model))


def load_result(run_dir: str | Path, device: str = "cpu") -> GenerationResult:
    """Load a finished run folder (``config.yaml`` + ``splats.ply``, or ``checkpoints/final.pt`` for a NeRF)."""
    from .rundir import load_run

    view, rep = load_run(run_dir, device, allow_interrupted=False)
    return GenerationResult(rep, view.cfg, view.folder)
