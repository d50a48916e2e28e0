"""The Python API: ``splatgen.generate(prompt, ...)`` and the result it returns."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .cameras import Cameras, evenly_spaced_cameras
from .config import Config, config_files, load_config
from .devices import check_memory, resolve_device
from .errors import ConfigError, PromptError, RunDirError, short
from .export import export_file
from .export.formats import BY_NAME
from .fileio import load_checkpoint
from .representation import Representation
from .representation.kinds import representation_class

if TYPE_CHECKING:
    from .rundir import RunFolder
    from .trainer import Trainer, TrainResult

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

    def export(self, path: str | Path, up: Optional[str] = None, **options: Any) -> Path:
        """Write the result as the file ``path`` names, exactly as ``splatgen export RUN path`` writes it (the
        same bytes): ``.ply``, ``.splat``, ``.spz``, ``.splats.glb`` splats, a ``.glb`` or ``.obj`` mesh, an
        ``.mp4`` or ``.gif`` turntable, each in the frame its viewers expect unless ``up`` (``"z"``: splatgen's
        own, +Z up; ``"y"``; ``"-y"``) says otherwise. ``options`` are the command's (``pad_sh3``,
        ``mesh_resolution``, ``iso``, ``faces``, ``texture_size``, ``kind``, ``frames``, ``fps``,
        ``resolution``), with its defaults; the format table :mod:`splatgen.export.formats` lists them all."""
        export_file(self.rep, path, up=up, **options)
        return Path(path)

    def save_ply(self, path: str | Path, pad_sh_to_degree3: bool = False, up: Optional[str] = None) -> Path:
        """Write the model as a 3DGS-layout .ply (a NeRF writes its density as a point cloud of splats), the file
        ``splatgen export RUN mug.ply`` writes: -Y up, as SuperSplat expects. ``up="z"`` writes the run's own
        frame (+Z up, the bytes of the run folder's ``splats.ply``)."""
        ply = BY_NAME["ply"]  # by name, not by extension: any file name is written as a .ply
        ply.write(self.rep, Path(path), up or ply.default_up, pad_sh_to_degree3)
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
    # No config: the bundled offline default (configs/default.yaml), as `splatgen generate` and `splatgen config` use.
    return load_config(config_files(config), overrides, extra=extra)


def check_input(prompt: Any, config: str | Path | Sequence[str | Path] | Config | None = None,
                overrides: Sequence[str] = (), **kwargs: Any) -> Tuple[Config, torch.device]:
    """Everything about a generation's input that can be refused, checked once and before a run folder is
    claimed: the prompt, the config (files, overrides, values), the device and whether the run fits in it.

    Returns the config (its ``prompt`` set) and the device, for :func:`run_generation`, which checks neither
    again. Arguments as for :func:`generate`.
    """
    prompt = check_prompt(prompt)
    cfg = resolve_config(config, overrides, **kwargs)
    cfg.prompt = prompt
    from .components import check_views

    check_views(cfg)
    device = resolve_device(cfg.run.device)
    check_memory(cfg, device, *representation_class(cfg.model.type).estimate_memory(cfg))
    return cfg, device


def generate(
    prompt: str,
    config: str | Path | Sequence[str | Path] | Config | None = None,
    out_dir: "str | Path | RunFolder | None" = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
    guidance=None,
    profile: bool = False,
    resume: bool = False,
    on_step: Optional[Callable[[int, Representation], Any]] = None,
    **kwargs: Any,
) -> GenerationResult:
    """Generate 3D Gaussians for ``prompt``.

    Progress (``run.progress``): a bar when stderr is a terminal; elsewhere (a notebook, a log file) INFO lines on
    the ``splatgen`` logger every tenth of the steps or 30 s, shown once logging is on
    (``logging.basicConfig(level=logging.INFO)``).

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
        on_step: called as ``on_step(steps_done, rep)`` after every step (a live view, e.g.
            :meth:`splatgen.viewer.LiveViewer.on_step`; it must return fast).
        **kwargs: section overrides, ``run={"steps": 100}`` or ``run__steps=100``.

    Raises:
        RunInterrupted: Ctrl-C or SIGTERM (in the main thread) stopped the run at a step boundary; what was kept
            is in the message and ``<out_dir>.partial`` can be resumed.
    """
    from .rundir import RunFolder

    t0 = time.perf_counter()
    try:
        cfg, device = check_input(prompt, config, overrides, **kwargs)
        if resume and out_dir is None:
            raise RunDirError("resume needs the run folder (out_dir) of the interrupted run")
    except BaseException:
        if isinstance(out_dir, RunFolder):  # claimed by the caller: leave no empty folder behind
            out_dir.release() if out_dir.resumed else out_dir.abandon()
        raise
    run = out_dir if isinstance(out_dir, RunFolder) or out_dir is None else \
        RunFolder.claim(out_dir, overwrite=overwrite, resume=resume, require_interrupted=resume)
    return run_generation(cfg, run, guidance=guidance, profile=profile, t0=t0, device=device, on_step=on_step)


def run_generation(cfg: Config, run: "Optional[RunFolder]", guidance=None, profile: bool = False,
                   t0: Optional[float] = None, device: Optional[torch.device] = None,
                   on_step: Optional[Callable[[int, Representation], Any]] = None) -> GenerationResult:
    """One generation of ``cfg`` (its ``prompt`` set; checked by :func:`check_input`) into a claimed run folder
    (or none), in four phases: set up, train, write, evaluate. The body of :func:`generate` and of ``splatgen
    generate``, shared with the batch runner (which passes a guidance it keeps for the next prompt).

    ``device``: the one :func:`check_input` returned (resolved from ``run.device`` when not given).
    ``on_step``: called as ``on_step(steps_done, rep)`` after every step (beside ``run.viewer``'s live view).

    Setup failures remove the run folder when it holds nothing worth keeping; an interrupted or failed run keeps
    it (``.partial``) to resume or inspect; a complete run is renamed to its final name.
    """
    t0 = time.perf_counter() if t0 is None else t0
    device = resolve_device(cfg.run.device) if device is None else device
    setup = _set_up(cfg, run, guidance, device, profile, on_step)
    t_setup = time.perf_counter()
    try:  # from here an interrupted or failed run keeps its folder to resume or inspect
        tr = _train(setup.trainer)
        t_train = time.perf_counter()
        result = GenerationResult(tr.rep, cfg, run.final if run is not None else None, tr.history, tr.stage_ms,
                                  tr.seconds, evals=tr.evals, distillation=tr.distillation)
        result.timings = {"setup": t_setup - t0, "guidance": setup.guidance_seconds,
                          "optimisation": t_train - t_setup, "first_step": tr.first_step_seconds}
        if run is None:
            result.timings["total"] = t_train - t0
        else:
            _write(run, cfg, tr.rep, result)
            result.timings["export"] = time.perf_counter() - t_train
            _evaluate(run, cfg, tr, result, device, t0, resumed_from=setup.trainer.start_step)
            run.finish()
    except BaseException:
        if run is not None:
            run.release()
        raise
    finally:
        setup.close()
    return result


@dataclass
class _Setup:
    """What the set-up phase built for one run, and what must be let go of once the run ends."""

    trainer: "Trainer"
    guidance: Any
    own_guidance: bool
    """Built for this run (released at its end); a guidance handed in belongs to the caller (a batch keeps it)."""
    live: Any = None
    """The live viewer (``run.viewer``), or None."""
    guidance_seconds: float = 0.0

    def close(self) -> None:
        if self.own_guidance:
            self.guidance.release()
        if self.live is not None:
            self.live.close()


def _set_up(cfg: Config, run: "Optional[RunFolder]", guidance, device: torch.device, profile: bool,
            on_step: Optional[Callable[[int, Representation], Any]] = None) -> _Setup:
    """Phase 1: the guidance, the evaluator, the live viewer and the trainer, a resumed run's checkpoint loaded
    into it, and ``config.yaml`` written. Nothing of it is kept if it fails: what was built is released, and a
    run folder that holds nothing worth keeping is removed."""
    from .components import build_evaluator, build_guidance
    from .trainer import Trainer

    own_guidance = guidance is None
    live = None
    try:
        checkpoint = _checkpoint_to_resume(run, cfg)
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
        hooks = [h for h in (live.on_step if live is not None else None, on_step) if h is not None]
        trainer = Trainer(cfg, guidance, run=run, evaluator=evaluator, profile=profile,
                          on_step=(lambda done, rep: [h(done, rep) for h in hooks]) if hooks else None, device=device)
        if checkpoint is not None:
            path, payload = checkpoint
            try:
                trainer.resume(payload)
            except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # a checkpoint of another run's shape
                raise RunDirError(f"cannot resume {run.final} from {path.name}: {str(exc).splitlines()[0][:200]}; "
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
    return _Setup(trainer, guidance, own_guidance, live, t_guidance)


def _checkpoint_to_resume(run: "Optional[RunFolder]", cfg: Config) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest checkpoint of a resumed run (its path and contents), once it is shown to be this run's to
    continue (same config, same prompt); None when the run is new or saved no checkpoint (it starts again)."""
    from .rundir import config_differences

    if run is None or not run.resumed:
        return None
    saved = run.saved_config()
    if saved is not None:
        diffs = config_differences(saved, cfg)
        if diffs:
            raise ConfigError(f"--resume needs the config the run started with; these differ: {diffs[:8]} "
                              f"(see {run.path / 'config.yaml'})")
    cps = run.checkpoints()
    if not cps:
        if run.refused:
            raise RunDirError(f"cannot resume {run.final}: {run.refused_message()}; start it again with "
                              "--overwrite (its work is lost), or move the folder away")
        log.info("%s saved no checkpoint; starting it again", run.final)
        return None
    step, path = cps[0]
    payload = load_checkpoint(path)
    saved_prompt = payload.get("prompt")
    if saved_prompt is not None and saved_prompt != cfg.prompt:
        raise RunDirError(f"{path} was saved by a run of {short(saved_prompt)}, not of "
                          f"{short(cfg.prompt)}; it is not this run's to continue (choose another --out)")
    log.info("resuming %s from step %d (%s)", run.final, step, path.name)
    return path, payload


def _train(trainer: "Trainer") -> "TrainResult":
    """Phase 2: the optimisation; Ctrl-C and SIGTERM stop it at a step boundary (see :func:`stop_on_signals`)."""
    with stop_on_signals(trainer):
        return trainer.train()


def _write(run: "RunFolder", cfg: Config, rep: Representation, result: GenerationResult) -> None:
    """Phase 3: the model's file (``splats.ply``, a NeRF's ``nerf.ply``), the previews and the turntable video
    (``run.video``) in the run folder."""
    from .rundir import splats_name
    from .trainer import preview_cameras

    run.save_splats(splats_name(cfg), rep.splat_params())
    if cfg.run.preview_views > 0:
        cams = preview_cameras(cfg.run.preview_views, cfg.run.preview_resolution, rep.device)
        run.write_previews(result.render(cameras=cams))
    if cfg.run.video:
        from .export.video import write_turntable

        video = write_turntable(rep, run.path / "turntable.mp4")
        log.info("turntable.mp4: %d frames, %dx%d px, %.2f MB", video.frames, video.width, video.height,
                 video.bytes / 1e6)


def _evaluate(run: "RunFolder", cfg: Config, tr: "TrainResult", result: GenerationResult, device: torch.device,
              t0: float, resumed_from: int = 0) -> None:
    """Phase 4: ``summary.json``, then the ground-truth metrics of a world prompt (``run.evaluate``:
    ``metrics.json`` and ``result.metrics``), then the summary again with the time of every phase. The summary
    is written first too, so a failing evaluation still leaves it."""
    start = time.perf_counter()
    summary = {"prompt": cfg.prompt, "representation": tr.rep.kind, "seconds": round(tr.seconds, 3),
               "steps": tr.steps, **tr.rep.scalars(), "device": str(device),
               "threads": torch.get_num_threads() if device.type == "cpu" else None,
               "stage_ms": tr.stage_ms, "distillation": tr.distillation}
    if resumed_from > 0:  # resumed: `seconds` counts every process's training, so say which part is ours
        summary.update(resumed_from_step=resumed_from, seconds_this_process=round(tr.seconds_this_process, 3))

    def write_summary() -> None:
        run.write_summary({**summary, "timings_s": {k: round(v, 3) for k, v in result.timings.items()}})

    write_summary()
    if cfg.run.evaluate:
        result.metrics = _maybe_evaluate(run, cfg)
    end = time.perf_counter()
    result.timings.update(evaluation=end - start, total=end - t0)
    write_summary()


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
    from .rundir import RunView
    from .world.grammar import is_world_prompt

    if not is_world_prompt(cfg.prompt):
        return None
    from .world.metrics import evaluate_run  # the ray caster and the evaluator: loaded for world prompts only

    model = run.path / representation_class(cfg.model.type).model_file
    return evaluate_run(RunView(run.path, load_config([run.path / "config.yaml"]), True, model))


def load_result(run_dir: str | Path, device: str = "cpu") -> GenerationResult:
    """Load a finished run folder (``config.yaml`` + ``splats.ply``, or ``checkpoints/final.pt`` for a NeRF)."""
    from .rundir import load_run

    view, rep = load_run(run_dir, device, allow_interrupted=False)
    return GenerationResult(rep, view.cfg, view.folder)
