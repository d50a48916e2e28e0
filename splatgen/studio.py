"""``splatgen studio``: a page in the browser to generate, watch, browse and download runs.

Built on viser's GUI like :mod:`splatgen.viewer` (whose server, host checks and live view it reuses):

- **Generate.** Type a prompt, pick a bundled config preset (the names ``--config`` takes) and the steps, press
  Generate. Each run is written into the runs folder (``--runs``, default ``runs/``) exactly as
  ``splatgen generate PROMPT --config PRESET run.steps=N`` writes it: the same checks before a folder is
  claimed, the same numbered folder (``runs/a-red-mug-2``), the same files, through :func:`splatgen.api.generate`.
- **One run at a time.** The studio trains on one device, so a Generate pressed while a run is going is queued
  (:class:`RunQueue`) and shown as queued; a run that fails shows its one-line error and the next one starts.
- **Watch.** The Gaussians are drawn while they optimise through :class:`~splatgen.viewer.LiveViewer`, with its
  throttle (at most one update a second and 2 % of the wall time).
- **Browse and download.** The finished runs of the folder, newest first, with their previews and scores
  (``previews.png``, ``summary.json``, ``metrics.json``); the chosen one is shown in the scene and can be
  downloaded as ``.ply``, ``.spz``, ``.glb`` (a mesh) or ``.mp4`` (a turntable), written by the same
  exporters and defaults as ``splatgen export RUN FILE``.

The page listens on 127.0.0.1 unless another host is asked for, as ``splatgen view`` does: whoever reaches it
can start runs and read the runs folder.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .errors import SplatgenError, short
from .viewer import DEFAULT_HOST, DEFAULT_PORT, LiveViewer, server_url, start_server, wait_for_ctrl_c

log = logging.getLogger("splatgen")

__all__ = ["DOWNLOADS", "Job", "RunQueue", "Studio", "export_run", "finished_runs", "serve_studio"]

#: what a finished run can be downloaded as (see :func:`export_run`)
DOWNLOADS = (".ply", ".spz", ".glb", ".mp4")
#: the scores of a run shown beside its previews (those its files hold): (file, key, format); metrics.json holds
#: the ground-truth scores of procedural-world prompts (``splatgen evaluate``)
SCORES = (("summary.json", "seconds", "{:.1f} s"), ("summary.json", "steps", "{:,.0f} steps"),
          ("summary.json", "num_gaussians", "{:,.0f} Gaussians"), ("metrics.json", "iou", "IoU {:.3f}"),
          ("metrics.json", "psnr_fg", "PSNR {:.2f} dB"), ("metrics.json", "janus", "Janus {:.2f}"),
          ("metrics.json", "r_precision", "R-precision {:.2f}"))
#: jobs listed on the page (the newest finished ones; running and queued ones are always listed)
SHOWN_JOBS = 8


def one_line(exc: BaseException) -> str:
    """An error as the page shows it: one line. splatgen's own errors are already written for the user; anything
    else is a bug, named by its type (its traceback goes to the terminal)."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, SplatgenError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return short(text, 300, quote=False)


# ------------------------------------------------------------------------------------------------ the queue
@dataclass
class Job:
    """One Generate press: ``state`` goes queued -> running -> done, failed or stopped."""

    id: int
    prompt: str
    config: str
    steps: Optional[int]
    state: str = "queued"
    step: int = 0
    out: Optional[Path] = None
    """The run folder (its final name), once claimed."""
    error: str = ""
    seconds: float = 0.0
    """The optimisation's seconds (the summary's ``seconds``) of a finished run."""


class RunQueue:
    """Runs jobs one after the other in one worker thread (one device, one run at a time).

    Args:
        runs_dir: where runs are written (numbered folders named after the prompt, as ``splatgen generate``).
        overrides: ``key=value`` strings applied to every run, before the job's steps.
        on_change: called with the job after every change of its state (from the worker or the submitting thread).
        on_step: called as ``on_step(job, steps_done, rep)`` after every training step (it must return fast).
    """

    def __init__(self, runs_dir: Union[str, Path] = "runs", overrides: Sequence[str] = (),
                 on_change: Optional[Callable[[Job], Any]] = None,
                 on_step: Optional[Callable[[Job, int, Any], Any]] = None):
        self.runs_dir = Path(runs_dir)
        self.overrides = list(overrides)
        self.on_change, self.on_step = on_change, on_step
        self.jobs: List[Job] = []
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._closing = False
        self._worker: Optional[threading.Thread] = None
        self._active: Optional[Job] = None  # the job taken by the worker, until its end is shown

    def submit(self, prompt: str, config: str = "default", steps: Optional[int] = None) -> Job:
        """Queue a run of ``prompt`` with the bundled preset (or YAML file) ``config`` and ``steps`` (None: the
        preset's); it starts when the runs before it are over. Nothing is checked here: a bad prompt or setting
        fails its own job, with its error, and the next job runs."""
        with self._cond:
            if self._closing:
                raise SplatgenError("the studio is shutting down; no new runs")
            job = Job(next(self._ids), prompt, config, steps)
            self.jobs.append(job)
            if self._worker is None:
                import torch

                # OpenMP's thread count is per thread: the worker computes with the submitting thread's, as a
                # `splatgen generate` in this process would (the same count, the same bytes)
                self._worker = threading.Thread(target=self._work, args=(torch.get_num_threads(),),
                                                name="splatgen-studio-runs", daemon=True)
                self._worker.start()
            self._cond.notify_all()
            self._changed(job)  # shown as queued before the worker can take it
        return job

    def _busy(self) -> bool:
        return self._active is not None or any(j.state == "queued" for j in self.jobs)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until every submitted job is over and shown (or ``timeout`` seconds passed); returns whether it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Drop the queued jobs and stop the running one at its next step (its ``.partial`` folder keeps the
        model, like a Ctrl-C of ``splatgen generate``); wait up to ``timeout`` s for it."""
        with self._cond:
            self._closing = True
            dropped = [j for j in self.jobs if j.state == "queued"]
            for j in dropped:
                j.state, j.error = "stopped", "the studio was closed before it started"
            self._cond.notify_all()
        for j in dropped:
            self._changed(j)
        if self._worker is not None:
            self._worker.join(timeout)

    # ---------------------------------------------------------------- the worker
    def _changed(self, job: Job) -> None:
        if self.on_change is not None:
            try:
                self.on_change(job)
            except Exception:  # the page failing to show a change must not stop the runs
                log.exception("studio: showing job %d failed", job.id)

    def _next(self) -> Optional[Job]:
        with self._cond:
            while True:
                if self._closing:
                    return None
                job = next((j for j in self.jobs if j.state == "queued"), None)
                if job is not None:
                    job.state, self._active = "running", job
                    return job
                self._cond.wait()

    def _work(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        while True:
            job = self._next()
            if job is None:
                return
            self._changed(job)
            try:
                result = self._run(job)
                job.seconds, job.state = result.seconds, "done"
            except KeyboardInterrupt:  # close() stopped it
                job.state, job.error = "stopped", f"stopped at step {job.step}; {job.out}.partial keeps the model"
            except Exception as exc:
                if not isinstance(exc, SplatgenError):
                    log.exception("studio: the run of %s failed", short(job.prompt))
                job.state, job.error = "failed", one_line(exc)
            self._changed(job)
            with self._cond:
                self._active = None
                self._cond.notify_all()

    def _run(self, job: Job):
        """What ``splatgen generate PROMPT --config PRESET [overrides] run.steps=N`` does, into ``runs_dir``."""
        from .api import check_input, run_generation
        from .rundir import RunFolder, slug

        steps = [] if job.steps is None else [f"run.steps={job.steps}"]
        cfg, device = check_input(job.prompt, job.config, [*self.overrides, *steps])  # as `splatgen generate` does
        prompt = cfg.prompt
        job.steps = cfg.run.steps
        out = RunFolder.claim_numbered(self.runs_dir, slug(prompt))
        job.out = out.final
        self._changed(job)
        log.info("studio: writing %s (renamed %s when complete)", out.path, out.final)

        def step(done: int, rep: Any) -> None:
            job.step = done
            if self._closing:
                raise KeyboardInterrupt
            if self.on_step is not None:
                self.on_step(job, done, rep)

        return run_generation(cfg, out, device=device, on_step=step)


# ------------------------------------------------------------------------------------------------ runs on disk
def finished_runs(runs_dir: Union[str, Path]) -> List[Path]:
    """The finished run folders directly in ``runs_dir``, newest first (interrupted ``.partial`` ones are not
    finished; a folder that is not a run is left out)."""
    from .rundir import CONFIG, PARTIAL

    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_symlink() or not p.is_dir() or p.name.endswith(PARTIAL) or not (p / CONFIG).is_file():
            continue
        try:
            found.append((p.stat().st_mtime, p.name, p))
        except OSError:
            continue
    return [p for _, _, p in sorted(found, key=lambda t: (-t[0], t[1]))]


def _read_json(path: Path) -> Dict[str, Any]:
    """A run's small JSON record, or {} when it is missing, a link or unreadable (a folder is shown as it is)."""
    from .fileio import read_own_text

    try:
        data = json.loads(read_own_text(path, 1 << 20) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def run_scores(run: Path) -> List[str]:
    """The run's scores (:data:`SCORES`) as short texts ("12.3 s", "IoU 0.712"), those its files hold."""
    records = {name: _read_json(run / name) for name in {s[0] for s in SCORES}}
    return [fmt.format(records[name][key]) for name, key, fmt in SCORES
            if isinstance(records[name].get(key), (int, float)) and not isinstance(records[name][key], bool)]


def export_run(run: Union[str, Path], path: Union[str, Path]) -> Path:
    """Write a run as ``path`` (its extension picks the format) with the defaults of ``splatgen export RUN PATH``:
    splats in the format's frame, a mesh with glTF's axes, a turntable at this machine's default size."""
    from .devices import resolve_device
    from .export import export_file, export_format
    from .rundir import export_source

    path = Path(path)
    film = export_format(path).kind == "video"
    export_file(export_source(run, film, resolve_device("auto") if film else "cpu")[0], path)
    return path


# ------------------------------------------------------------------------------------------------ the page
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<~|])")


def _md(text: str, limit: int = 80) -> str:
    """User text (a prompt, a folder name, an error) shown literally inside a markdown line (never at its start,
    where ``#``, ``-`` and ``1.`` would mean more): emphasis, code, links and HTML are escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", short(text, limit, quote=False))


def job_line(job: Job) -> str:
    """How the page lists a job."""
    what = f"{_md(job.prompt.strip() or '(empty prompt)')} ({_md(job.config, 40)}"
    what += f", {job.steps} steps)" if job.steps is not None else ")"
    if job.state == "done":
        return f"**done** {what}: {_md(job.out.name if job.out else '')} in {job.seconds:.1f} s"
    if job.state in ("failed", "stopped"):
        return f"**{job.state}** {what}: {_md(job.error, 300)}"
    return f"**{job.state}** {what}"


class Studio:
    """The studio's page on a viser server; see the module docstring.

    Args:
        runs_dir: the runs folder written and browsed.
        host, port: where to listen (loopback by default; the next free port when ``port`` is taken; 0: any).
        overrides: ``key=value`` strings for every run (checked here, so a typo is refused before serving).
        config: the preset selected at first.
    """

    def __init__(self, runs_dir: Union[str, Path] = "runs", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 overrides: Sequence[str] = (), config: str = "default"):
        from .api import resolve_config
        from .resources import config_names

        presets = config_names()
        if config not in presets:
            raise SplatgenError(f"--config {config!r} is not a bundled preset; choose one of {presets}")
        resolve_config(config, overrides)  # a bad override is refused now, in one line
        self.runs_dir = Path(runs_dir)
        self.overrides = list(overrides)
        self._lock = threading.Lock()  # the runs list
        self._jobs_lock = threading.Lock()  # the jobs list
        self._shown: Optional[str] = None  # the finished run the scene and the panel show
        self.queue = RunQueue(self.runs_dir, self.overrides, on_change=self._job_changed, on_step=self._on_step)
        self.server = start_server(host, port, label="splatgen studio")
        try:
            self._build(presets, config)
        except BaseException:
            self.server.stop()
            raise

    @property
    def url(self) -> str:
        return server_url(self.server)

    def _build(self, presets: List[str], config: str) -> None:
        gui = self.server.gui
        gui.configure_theme(control_width="large", show_share_button=False)
        with gui.add_folder("Generate"):
            self.prompt = gui.add_text("Prompt", initial_value="", hint='what to generate, e.g. "a red mug"')
            self.preset = gui.add_dropdown("Config", presets, initial_value=config,
                                           hint="a bundled preset (splatgen generate --config NAME)")
            self.steps = gui.add_number("Steps", initial_value=self._preset_steps(config), min=1, step=1)
            self.generate_button = gui.add_button("Generate")
            self.jobs_md = gui.add_markdown("no runs yet: type a prompt and press Generate")
        with gui.add_folder("Scene"):
            self.live = LiveViewer(server=self.server)
        with gui.add_folder(f"Runs in {self.runs_dir}"):
            self.run_choice = gui.add_dropdown("Run", ["(none yet)"])
            self.previews = gui.add_image(_blank_image(), label="previews", visible=False)
            self.scores_md = gui.add_markdown("")
            self.download = gui.add_button_group("Download", list(DOWNLOADS))
            self.download_md = gui.add_markdown("")

        @self.preset.on_update
        def _(_event) -> None:
            self.steps.value = self._preset_steps(self.preset.value)

        @self.generate_button.on_click
        def _(_event) -> None:
            self.submit(self.prompt.value, self.preset.value, int(self.steps.value))

        @self.run_choice.on_update
        def _(_event) -> None:
            self.show_run(self.run_choice.value)

        @self.download.on_click
        def _(event) -> None:
            self.send_download(event.client, event.target.value)

        @self.server.on_client_connect
        def _(_client) -> None:  # opening or reloading the page lists runs written meanwhile by other processes
            self.refresh_runs()

        self.refresh_runs()

    def _preset_steps(self, name: str) -> int:
        from .api import resolve_config

        return int(resolve_config(name, self.overrides).run.steps)

    # ---------------------------------------------------------------- generating
    def submit(self, prompt: str, config: str, steps: Optional[int] = None) -> Job:
        """What the Generate button does: queue the run (see :class:`RunQueue`)."""
        return self.queue.submit(prompt, config, steps)

    def _job_changed(self, job: Job) -> None:
        with self._jobs_lock:  # the worker and a Generate press may both report: the later list is written last
            jobs = list(self.queue.jobs)
            current = [j for j in jobs if j.state in ("running", "queued")]
            over = [j for j in jobs if j.state not in ("running", "queued")][::-1][:SHOWN_JOBS]
            self.jobs_md.content = "  \n".join(job_line(j) for j in current + over)
        if job.state == "running":
            self._shown = None  # the scene shows this run's Gaussians from its first step on
        if job.state == "done":
            self.refresh_runs(select=job.out.name if job.out else None)

    def _on_step(self, job: Job, done: int, rep: Any) -> None:
        if done == 1:  # the first step of a run replaces whatever the scene showed, at once
            self.live.update(rep.splat_params(), f"{_md(job.prompt)}: step 1", force=True)
        else:
            self.live.on_step(done, rep, total=job.steps)

    # ---------------------------------------------------------------- browsing
    def refresh_runs(self, select: Optional[str] = None) -> None:
        """List the runs folder again (newest first) and show ``select`` (default: the one shown, else the newest)."""
        with self._lock:
            names = [p.name for p in finished_runs(self.runs_dir)]
            current = self.run_choice.value
            self.run_choice.options = names or ["(none yet)"]
            choice = select if select in names else current if current in names else (names[0] if names else None)
            if choice is not None and choice != self.run_choice.value:
                self.run_choice.value = choice  # its on_update shows it
            elif choice is not None and self._shown != choice:
                self.show_run(choice)

    def show_run(self, name: str) -> None:
        """Show a finished run: its splats in the scene, its previews and scores in the panel."""
        import numpy as np
        from PIL import Image

        from .export import load_ply
        from .rundir import PREVIEWS, find_splats

        run = self.runs_dir / name
        if not name or not (run / "config.yaml").is_file():
            return
        self._shown = name
        try:
            model = load_ply(find_splats(run)[0])
            self.live.update(model, label=_md(name), force=True)
        except SplatgenError as exc:
            self.scores_md.content = f"cannot show {_md(name)}: {_md(one_line(exc), 300)}"
            return
        try:
            with Image.open(run / PREVIEWS) as im:
                self.previews.image = np.asarray(im.convert("RGB"))
            self.previews.visible = True
        except OSError:  # no previews (run.preview_views=0) or an unreadable file
            self.previews.visible = False
        prompt = _read_json(run / "summary.json").get("prompt")
        self.scores_md.content = f"**{_md(str(prompt or name))}**  \n" + " · ".join(run_scores(run))

    def send_download(self, client, ext: str) -> None:
        """What a Download button does: write the shown run as ``ext`` (:func:`export_run`) and send the file to
        the browser that asked (``client``, a viser ``ClientHandle``); a failure is shown in one line."""
        name = self.run_choice.value
        run = self.runs_dir / name
        if client is None or ext not in DOWNLOADS or not (run / "config.yaml").is_file():
            self.download_md.content = "no finished run to download yet"
            return
        self.download_md.content = f"writing {_md(name)}{ext} ..."
        try:
            with tempfile.TemporaryDirectory(prefix="splatgen-studio-") as tmp:
                path = export_run(run, Path(tmp) / f"{name}{ext}")
                data = path.read_bytes()
        except Exception as exc:
            if not isinstance(exc, SplatgenError):
                log.exception("studio: exporting %s as %s failed", run, ext)
            self.download_md.content = f"cannot write {_md(name)}{ext}: {_md(one_line(exc), 300)}"
            return
        client.send_file_download(f"{name}{ext}", data, save_immediately=True)
        size = f"{len(data) / 1e6:.1f} MB" if len(data) >= 1e5 else f"{len(data) / 1e3:.1f} kB"
        self.download_md.content = f"sent {_md(name)}{ext} ({size})"

    def close(self) -> None:
        """Stop the running job at its next step (see :meth:`RunQueue.close`) and the server."""
        self.queue.close()
        self.server.stop()


def _blank_image():
    import numpy as np

    return np.full((8, 8, 3), 255, np.uint8)


def serve_studio(runs_dir: Union[str, Path] = "runs", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 overrides: Sequence[str] = (), config: str = "default", block: bool = True) -> Studio:
    """Serve the studio and print its URL; ``block``: until Ctrl-C (a running job stops at its next step and
    keeps its ``.partial`` folder), else return the running :class:`Studio` (call ``close()`` when done)."""
    studio = Studio(runs_dir, host, port, overrides, config)
    print(f"splatgen: studio for {runs_dir} at {studio.url}" + (" (Ctrl-C to stop)" if block else ""), flush=True)
    if not block:
        return studio
    wait_for_ctrl_c(studio.close)
    return studio
