"""The run folder: its format and its life, in one place.

A finished run folder ``OUT/`` holds::

    config.yaml        the resolved config (the prompt included)
    splats.ply         the Gaussians, 3DGS layout (a NeRF run: nerf.ply, its density as splats)
    metrics.jsonl      scalars every run.log_every steps, densify events, periodic evaluations
    summary.json       prompt, representation, seconds, steps, sizes, phase timings; ``seconds`` is the training
                       time of every process that worked on the run: a resumed one adds ``resumed_from_step``
                       and ``seconds_this_process`` (that part of it spent after resuming)
    previews.png       run.preview_views views of the result
    metrics.json       ground-truth scores (procedural-world prompts)
    checkpoints/       final.pt (a NeRF run is loaded from it); step_*.pt when run.checkpoint_every asks

Its life:

- **Claimed, then written under another name.** A run is written in ``OUT.partial/``, created with an
  exclusive ``mkdir`` and held with an exclusive lock (``OUT.partial/.lock``, flock) for as long as the
  process lives, so two processes can never write one folder; default numbered folders (``runs/a-red-mug-2``)
  are claimed the same way. ``OUT`` itself appears only when the run is complete (one rename), so a folder
  under its final name is always a finished run, and ``--overwrite`` replaces an old run only then.
- **Interrupted runs stay resumable.** Ctrl-C or SIGTERM leave ``OUT.partial/`` with ``interrupted.ply``
  and ``checkpoints/interrupted.pt``; a kill leaves the latest periodic checkpoint. The lock dies with the
  process, so ``--resume`` can take the folder over; ``evaluate`` and ``export`` read ``interrupted.ply``.
- **Nothing half-written.** Every file goes through :func:`splatgen.fileio.atomic_write` (temporary file,
  fsync, rename); leftovers of a killed process are removed when a folder is claimed.
- **Nothing executable read.** Checkpoints are read with ``weights_only=True`` (:func:`fileio.load_checkpoint`).

:class:`RunFolder` writes one (it is the trainer's :class:`~splatgen.trainer.RunSink`); :func:`load_run` reads
one back on whatever device and renderer this machine has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shlex
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .config import Config, config_to_yaml, load_config
from .errors import ConfigError, NotARunError, OutputError, RunDirError, SplatgenError
from .export import load_ply, save_image_grid, save_ply
from .fileio import (
    NOFOLLOW,
    atomic_write,
    atomic_write_text,
    clean_temp_files,
    json_line,
    load_checkpoint,
    open_own,
    output_error,
    read_own_text,
    save_checkpoint_file,
    write_json,
)
from .representation import Representation
from .representation.kinds import REPRESENTATIONS, representation_class

try:  # POSIX; elsewhere a claim relies on the exclusive mkdir alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("splatgen")

CONFIG = "config.yaml"
METRICS_LOG = "metrics.jsonl"
SUMMARY = "summary.json"
METRICS = "metrics.json"
PREVIEWS = "previews.png"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
PARTIAL = ".partial"
#: what makes a folder hold a run.
RUN_MARKERS = (CONFIG, *(rep.ply_name for rep in REPRESENTATIONS.values()), METRICS_LOG, CHECKPOINTS)
#: checkpoints a run can be resumed from, newest step first (periodic ones are step_*.pt and resume.pt).
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
#: what a checkpoint to continue from holds besides its step (see ``Trainer.state_dict``)
RESUME_KEYS = ("kind", "params", "optimizer", "rng", "rep_rng", "noise_rng")


def checkpoint_problem(payload: Any) -> Optional[str]:
    """Why ``payload`` (a loaded ``.pt``) is not a checkpoint a run can continue from, or None when it is one."""
    if not isinstance(payload, dict):
        return f"it holds a {type(payload).__name__}, not a checkpoint's mapping"
    step = payload.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"its step is {step!r}, not a count of steps"
    missing = [k for k in RESUME_KEYS if k not in payload]
    if missing:
        return f"it lacks {', '.join(missing)}"
    return None


def splats_name(cfg: Config) -> str:
    """The file name of a run's exported model: ``nerf.ply`` for a NeRF, else ``splats.ply``."""
    return representation_class(cfg.model.type).ply_name


def partial_path(out: Path) -> Path:
    """Where the run of ``out`` is written until it is complete: ``out.partial``."""
    return out.with_name(out.name + PARTIAL)


def slug(prompt: str, limit: int = 60) -> str:
    """A folder name from a prompt: lowercase letters, digits and dashes only (never a path)."""
    s = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return s[:limit].strip("-") or "run"


def _holds_run(path: Path) -> List[str]:
    return [m for m in RUN_MARKERS if (path / m).exists()] if path.is_dir() else []


# -------------------------------------------------------------------------------------------- locking
class _Lock:
    """An exclusive, non-blocking flock on ``folder/.lock``, released when the process dies. The lock file is
    never opened through a symbolic link (:func:`fileio.open_own`: a link there is replaced), and only the
    process that holds the lock writes into it."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    @classmethod
    def try_acquire(cls, folder: Path, create: bool) -> Optional["_Lock"]:
        """The lock, or None when another live process holds it. ``create=False``: a missing lock file is
        reported as FileNotFoundError (a folder being finished or left by a process that died at once)."""
        path = folder / LOCK
        if not create and not path.is_symlink() and not path.exists():
            raise FileNotFoundError(path)
        fd = open_own(path, os.O_RDWR | os.O_CREAT)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError:  # pragma: no cover - a file system without flock: the mkdir claim still holds
                pass
        lock = cls(fd, path)
        lock.write_owner()
        return lock

    def write_owner(self) -> None:
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, info.encode(), 0)

    def release(self, remove: bool = False) -> None:
        if self.fd < 0:
            return
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self.fd)  # closing the last descriptor drops the flock
        self.fd = -1


def _being_written(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s run lock, probed read-only: nothing is written, and a symbolic
    link in the lock's place is no lock (splatgen makes its lock files itself). A lock file that vanishes while
    we look belongs to a run being finished: that counts as being written too."""
    path = folder / LOCK
    if path.is_symlink() or not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:  # a link that appeared meanwhile (ELOOP), an unreadable file: no live splatgen lock
        return False
    try:
        if fcntl is None:  # pragma: no cover
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # pragma: no cover - a file system without flock
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _owner(folder: Path) -> str:
    return read_own_text(folder / LOCK, 200).strip() or "another process"


def _mkdir_parents(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"cannot create {path}: a file of that name is in the way") from None
    except OSError as exc:
        raise output_error(path, exc) from None


def _clear(folder: Path) -> None:
    """Empty a folder this process owns (keeps the lock file)."""
    for p in folder.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# -------------------------------------------------------------------------------------------- writing
class RunFolder:
    """A run folder owned by this process: written in ``final.partial/`` and renamed to ``final`` by :meth:`finish`.

    Create one with :meth:`claim` (an explicit ``--out``) or :meth:`claim_numbered` (``runs/<prompt slug>``,
    ``-2``, ``-3``...). ``path`` is where files go while the run is written.
    """

    def __init__(self, final: Path, lock: _Lock, overwrite: bool = False, resumed: bool = False):
        self.final = final
        self.path = partial_path(final)
        self._lock = lock
        self.overwrite = overwrite
        #: True when the folder was taken over from an interrupted run (``--resume``).
        self.resumed = resumed
        self._metrics_file = None
        self._tb = None
        self._wandb = None

    # ---------------------------------------------------------------- claiming
    @classmethod
    def claim(cls, out: str | Path, *, overwrite: bool = False, resume: bool = False,
              require_interrupted: bool = False) -> "RunFolder":
        """Own the run folder ``out`` (see the module docstring). ``require_interrupted`` (``--resume`` asked by a
        user): refuse when there is no interrupted run to continue, instead of starting one.

        Raises:
            RunDirError: ``out`` is a file, holds a finished run (without ``overwrite``), holds other files, or
                another process is writing it; or an interrupted run is there and neither ``resume`` nor
                ``overwrite`` says what to do with it.
            OutputError: the folder cannot be created (permissions, read-only, ...).
        """
        out = Path(out)
        for p in (out, partial_path(out)):
            if p.is_symlink():  # the run would be renamed onto the link at its very end, or written through it
                raise RunDirError(f"--out {out}: {p} is a symbolic link; give the real folder (splatgen never writes "
                                  "through links)")
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {out} is a file; give a folder (it is created)")
        if out.name.endswith(PARTIAL):
            raise RunDirError(f"--out {out} names a run's working folder; give the run's own name ({out.name[:-len(PARTIAL)]})")
        present = _holds_run(out)
        if present and not overwrite:
            hint = " (it is finished; nothing to resume)" if resume else ""
            raise RunDirError(f"{out} already holds a run{hint} (found {present}); choose another --out folder, or pass "
                              "--overwrite to replace it once the new run is complete")
        if out.is_dir() and not present and any(out.iterdir()):
            raise RunDirError(f"{out} is not empty and holds no run; choose a new or empty folder for --out")
        staging = partial_path(out)
        if require_interrupted and not overwrite and not staging.exists():
            raise RunDirError(f"there is no interrupted run in {out} to resume ({staging} does not exist); leave out "
                              "--resume to start a new run there")
        _mkdir_parents(out.parent)
        try:
            staging.mkdir()
            created = True
        except FileExistsError:
            created = False
        except OSError as exc:
            raise output_error(staging, exc) from None
        if created:
            return cls(out, _Lock.try_acquire(staging, create=True), overwrite)
        return cls._take_over(out, staging, overwrite=overwrite, resume=resume)

    @classmethod
    def _take_over(cls, out: Path, staging: Path, *, overwrite: bool, resume: bool) -> "RunFolder":
        lock = None
        for _ in range(20):  # a lock file that is missing for a moment belongs to a run being finished
            try:
                lock = _Lock.try_acquire(staging, create=False)
                break
            except FileNotFoundError:
                if not staging.exists():
                    return cls.claim(out, overwrite=overwrite, resume=resume)
                time.sleep(0.1)
        else:
            lock = _Lock.try_acquire(staging, create=True)
        if lock is None:
            raise RunDirError(f"{out} is being written right now by {_owner(staging)} (in {staging}); wait for it, "
                              "or choose another --out folder")
        folder = cls(out, lock, overwrite)
        step = folder.saved_step()
        if step is None and folder.refused and not overwrite:
            # Work may be in there that this version cannot read: never thrown away without being asked to.
            lock.release()
            raise RunDirError(
                f"{staging} holds an interrupted run of {out} whose checkpoint cannot be continued from "
                f"({folder.refused_message()}); start it again with --overwrite (its work is lost), or move the folder away"
            )
        if resume:
            folder.resumed = True
            # Scores of the interrupted model (``splatgen evaluate`` on the .partial) do not describe the run it
            # becomes; a finished run writes its own.
            with contextlib.suppress(FileNotFoundError):
                (staging / "metrics.json").unlink()
        elif overwrite or step is None:
            # --overwrite, or a run that died before saving any state (e.g. during setup): start again
            _clear(staging)
        else:
            lock.release()
            raise RunDirError(
                f"{staging} holds an interrupted run of {out} (saved at step {step}); continue it with --resume, or "
                "start again with --overwrite"
            )
        clean_temp_files(staging)
        return folder

    @classmethod
    def claim_numbered(cls, root: str | Path, name: str) -> "RunFolder":
        """Own ``root/name``, or ``root/name-2``, ``-3``... (the first that is neither finished nor being written)."""
        root = Path(root)
        _mkdir_parents(root)
        for i in range(1, 100_000):
            out = root / (name if i == 1 else f"{name}-{i}")
            if out.exists() or partial_path(out).exists():
                continue
            try:
                partial_path(out).mkdir()
            except FileExistsError:
                continue  # another process claimed it between the check and the mkdir
            except OSError as exc:
                raise output_error(partial_path(out), exc) from None
            return cls(out, _Lock.try_acquire(partial_path(out), create=True))
        raise RunDirError(f"no free run folder name under {root}")  # pragma: no cover

    # ---------------------------------------------------------------- what the trainer writes
    def open_logs(self, tensorboard: bool, keep_bytes: Optional[int] = None) -> None:
        """Open ``metrics.jsonl`` for appending; ``keep_bytes`` first cuts it to that length (a resumed run drops
        the rows written after its checkpoint, so the log reads as one run)."""
        path = self.path / METRICS_LOG
        try:
            # Opened, cut and appended through one descriptor that is never a symbolic link (open_own replaces a
            # link, and the log starts empty then): nothing outside the run folder is truncated or appended to.
            fd = open_own(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            if keep_bytes is not None:
                os.ftruncate(fd, min(keep_bytes, os.fstat(fd).st_size))
            elif not self.resumed:
                os.ftruncate(fd, 0)
            self._metrics_file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        except OSError as exc:
            raise output_error(path, exc) from None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tb"))
            except ImportError:
                log.warning("run.tensorboard=true but tensorboard is not installed; logging to metrics.jsonl only")

    def start_wandb(self, cfg: Config) -> None:
        """A Weights & Biases run that gets the scalars :meth:`log` writes (``run.wandb``) until :meth:`close_logs`:
        named after the folder unless ``run.wandb_name`` says otherwise, holding the resolved config and the
        folder as ``run_folder``. It is a run of its own (``reinit='create_new'``): a W&B run the calling program
        has open keeps its own records. A resumed run starts a new W&B run that continues at the checkpoint's
        step. wandb keeps its files under ``WANDB_DIR`` (default ``./wandb``), never in the run folder."""
        try:  # imported here only: splatgen needs wandb nowhere else
            import wandb
        except ImportError:
            raise ConfigError("run.wandb=true needs the wandb package: pip install 'splatgen[wandb]'") from None
        r = cfg.run
        try:
            self._wandb = wandb.init(
                project=r.wandb_project, entity=r.wandb_entity or None, name=r.wandb_name or self.final.name,
                config={**dataclasses.asdict(cfg), "run_folder": str(self.final)}, reinit="create_new",
            )
        except Exception as exc:  # wandb's own errors (not logged in, no network, an unknown entity): one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SplatgenError(f"run.wandb: Weights & Biases could not start a run ({first}); log in with "
                                "`wandb login`, or set WANDB_MODE=offline to keep it in local files") from None

    def log_bytes(self) -> int:
        """The length of ``metrics.jsonl`` so far (stored in checkpoints for :meth:`open_logs`)."""
        if self._metrics_file is not None:
            self._metrics_file.flush()
        path = self.path / METRICS_LOG
        return path.stat().st_size if path.exists() else 0

    def close_logs(self) -> None:
        if self._metrics_file is not None:
            try:
                self._metrics_file.flush()
                os.fsync(self._metrics_file.fileno())
            except OSError:
                pass
            self._metrics_file.close()
            self._metrics_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def log(self, row: Dict[str, Any]) -> None:
        if self._metrics_file is not None:
            try:
                self._metrics_file.write(json_line(row) + "\n")
            except OSError as exc:
                raise output_error(self.path / METRICS_LOG, exc) from None
        if "event" not in row and (self._tb is not None or self._wandb is not None):
            scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
            if self._tb is not None:
                for k, v in scalars.items():
                    self._tb.add_scalar(k, v, row["step"])
            if self._wandb is not None:
                self._wandb.log(scalars, step=row["step"])

    def save_checkpoint(self, name: str, payload: Dict[str, Any]) -> Path:
        return save_checkpoint_file(self.path / CHECKPOINTS / name, payload)

    def remove_checkpoint(self, name: str) -> None:
        try:
            (self.path / CHECKPOINTS / name).unlink()
        except FileNotFoundError:
            pass

    def save_splats(self, name: str, params: Dict[str, Tensor]) -> Path:
        path = self.path / name
        save_ply(params, path)
        return path

    # ---------------------------------------------------------------- what the API writes around the trainer
    def write_config(self, cfg: Config) -> None:
        atomic_write_text(self.path / CONFIG, config_to_yaml(cfg))

    def write_previews(self, images: Tensor) -> Path:
        return atomic_write(self.path / PREVIEWS, lambda f: save_image_grid(images, f))

    def write_summary(self, summary: Dict[str, Any]) -> None:
        write_json(self.path / SUMMARY, summary)

    def write_json(self, name: str, obj: Any) -> Path:
        return write_json(self.path / name, obj)

    # ---------------------------------------------------------------- resuming
    def checkpoints(self) -> List[Tuple[int, Path]]:
        """(step, path) of every checkpoint a run can continue from, newest first. Files that cannot be one (torn,
        empty, code-carrying, another shape) are never resumed from; they are listed in :attr:`refused` with the
        reason."""
        found = []
        folder = self.path / CHECKPOINTS
        if folder.is_dir():
            for p in folder.glob("*.pt"):
                m = _STEP_RE.match(p.name)
                if m or p.name in ("resume.pt", "interrupted.pt"):
                    found.append(p)
        out = []
        self.refused: List[Tuple[Path, str]] = []
        for p in sorted(found):
            try:
                payload = load_checkpoint(p)
            except SplatgenError as exc:
                self.refused.append((p, str(exc)))
                continue
            problem = checkpoint_problem(payload)
            if problem is not None:
                self.refused.append((p, f"{p} is not a checkpoint splatgen can continue from: {problem}"))
                continue
            out.append((int(payload["step"]), p))
        return sorted(out, key=lambda sp: -sp[0])

    def refused_message(self) -> str:
        """The refused checkpoints of the last :meth:`checkpoints` call, one clause each."""
        return "; ".join(reason for _, reason in getattr(self, "refused", []))

    def saved_step(self) -> Optional[int]:
        """The step of the newest checkpoint, or None when the run saved nothing to continue from."""
        cps = self.checkpoints()
        return cps[0][0] if cps else None

    def saved_config(self) -> Optional[Config]:
        return load_config([self.path / CONFIG]) if (self.path / CONFIG).is_file() else None

    # ---------------------------------------------------------------- the end
    def finish(self) -> Path:
        """Make the run visible under its final name (replacing an old run when overwriting); returns it."""
        self.close_logs()
        clean_temp_files(self.path)
        # A resumed run is complete now: the model its interruption kept is superseded by the final one.
        with contextlib.suppress(FileNotFoundError):
            (self.path / "interrupted.ply").unlink()
        old = None
        if self.final.exists():
            if not self.overwrite:  # pragma: no cover - claim() refused this already
                raise RunDirError(f"{self.final} appeared while the run was written; the result stays in {self.path}")
            old = self.final.with_name(f"{self.final.name}.replaced-{os.getpid()}")
            os.rename(self.final, old)
        try:
            self._lock.release(remove=True)
            os.rename(self.path, self.final)
        except OSError as exc:
            raise OutputError(f"cannot rename {self.path} to {self.final}: {exc.strerror}") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def release(self) -> None:
        """Stop owning the folder and keep it (an interrupted or failed run, to resume or inspect)."""
        self.close_logs()
        self._lock.release()

    def abandon(self) -> None:
        """Remove the folder: the run failed before it had anything worth keeping (e.g. during setup)."""
        self.close_logs()
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.release()


def find_resumable(root: str | Path, prompt: str) -> List[Path]:
    """Final paths of the interrupted runs of ``prompt`` under ``root`` (``root/*.partial`` not being written)."""
    root = Path(root)
    out = []
    for staging in sorted(root.glob(f"*{PARTIAL}")) if root.is_dir() else []:
        cfg_path = staging / CONFIG
        if not cfg_path.is_file():
            continue
        try:
            if load_config([cfg_path]).prompt != prompt:
                continue
        except SplatgenError:
            continue
        if _being_written(staging):
            continue
        out.append(staging.with_name(staging.name[: -len(PARTIAL)]))
    return out


#: settings a resume may change: where the run is shown and logged, not what it computes
RESUME_MAY_CHANGE: Tuple[str, ...] = ("run.progress", "run.device", "run.tensorboard", "run.wandb", "run.wandb_project",
                                      "run.wandb_entity", "run.wandb_name", "run.viewer", "run.viewer_port")


def config_differences(a: Config, b: Config, ignore: Tuple[str, ...] = RESUME_MAY_CHANGE) -> List[str]:
    """Dotted keys whose values differ between two configs (for refusing a resume with another config); the
    ``ignore``d ones (by default the progress bar, device, TensorBoard, W&B and live-view settings) may differ."""
    from omegaconf import OmegaConf

    def flat(cfg: Config) -> Dict[str, Any]:
        d = OmegaConf.to_container(OmegaConf.structured(cfg))
        out = {}
        for sec, val in d.items():
            if isinstance(val, dict):
                out.update({f"{sec}.{k}": v for k, v in val.items()})
            else:
                out[sec] = val
        return out

    fa, fb = flat(a), flat(b)
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


# -------------------------------------------------------------------------------------------- reading
@dataclass
class RunView:
    """A run folder as found on disk: finished, or interrupted (``model`` then is what it saved)."""

    folder: Path
    cfg: Config
    finished: bool
    model: Path
    """The file the model loads from: splats.ply / nerf.ply, checkpoints/final.pt (NeRF), interrupted.ply..."""
    note: str = ""


def read_run_config(run_dir: str | Path) -> Config:
    """The config of a run folder (``config.yaml``), or one clear error if there is none or it is unreadable."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise NotARunError(f"{run_dir} is not a run folder: it has no {CONFIG}")
    try:
        return load_config([run_dir / CONFIG])
    except ConfigError as exc:
        raise NotARunError(f"{run_dir / CONFIG} is damaged: {exc}") from None


def find_run(path: str | Path, allow_interrupted: bool = True) -> RunView:
    """The run at ``path``: a finished run folder, or (with ``allow_interrupted``) an interrupted one, given by
    its name (``runs/x`` while only ``runs/x.partial`` exists) or by its working folder.

    Raises:
        NotARunError: naming what is missing and what to do.
    """
    path = Path(path)
    if not path.exists() and partial_path(path).is_dir():
        path = partial_path(path)
    if not path.is_dir():
        raise NotARunError(f"{path} is not a run folder (no such folder)")
    cfg = read_run_config(path)
    interrupted = path.name.endswith(PARTIAL)
    rep_class = representation_class(cfg.model.type)
    if not interrupted:
        model = path / rep_class.model_file
        if not model.is_file():
            raise NotARunError(f"{path} is not a finished run: {model.relative_to(path)} is missing")
        return RunView(path, cfg, True, model)
    if _being_written(path):
        raise NotARunError(f"{path} is being written right now by {_owner(path)}; wait until it finishes")
    final = path.with_name(path.name[: -len(PARTIAL)])
    # The run's own config file carries every setting it started with, so the command works as printed.
    resume = (f"continue it with: splatgen generate {shlex.quote(cfg.prompt)} --config "
              f"{shlex.quote(str(path / CONFIG))} --out {shlex.quote(str(final))} --resume")
    found = [path / name for name in rep_class.interrupted_files if (path / name).is_file()]
    if not allow_interrupted or not found:
        what = "has no saved model yet" if not found else "is not finished"
        raise NotARunError(f"{final} is not finished and {path} {what}; {resume}")
    return RunView(path, cfg, False, found[0], note=f"{final} is not finished: using {found[0]} ({resume})")


def load_run(path: str | Path, device: torch.device | str = "cpu", render_backend: str = "auto",
             allow_interrupted: bool = True) -> Tuple[RunView, Representation]:
    """(the run, its representation) of the run at ``path`` (see :func:`find_run` and :func:`load_view`)."""
    view = find_run(path, allow_interrupted)
    return view, load_view(view, device, render_backend)


def load_view(view: RunView, device: torch.device | str = "cpu", render_backend: str = "auto") -> Representation:
    """The representation of a run: Gaussians from its ``.ply``, a NeRF from its checkpoint. Built with what this
    machine has (``render_backend``, kernel backend ``auto``), whatever the run was trained with, so a run trained
    on a GPU with gsplat and the Triton kernels loads on a CPU."""
    cfg = view.cfg
    device = torch.device(device)
    cfg.render.backend, cfg.densify.backend = render_backend, "auto"
    saved = load_ply(view.model, device=device) if view.model.suffix == ".ply" else \
        load_checkpoint(view.model, map_location=device)
    return representation_class(cfg.model.type).load(cfg, device, saved)


def export_source(path: str | Path, film: bool, device: torch.device | str = "cpu") -> Tuple[Any, str]:
    """(what ``splatgen export`` writes a file from, a note) for ``path``, a run folder or a ``.ply``: with
    ``film`` (a turntable) the run's own representation, so a NeRF run is filmed as a NeRF; otherwise its splats
    (:func:`find_splats`: ``splats.ply``, an interrupted run's ``interrupted.ply``, or the ``.ply`` itself)."""
    if film:
        if Path(path).is_file():
            return load_ply(path, device=device), ""
        view, rep = load_run(path, device=device)
        return rep, view.note
    ply, note = find_splats(path)
    return load_ply(ply), note


def find_splats(path: str | Path) -> Tuple[Path, str]:
    """(the ``.ply`` to read, a note) for ``path``: a ``.ply`` file, a finished run folder, or an interrupted one
    (its ``interrupted.ply``, with a note saying so)."""
    path = Path(path)
    if path.is_file():
        return path, ""
    view = find_run(path)
    if view.model.suffix == ".ply":
        return view.model, view.note
    ply = view.folder / splats_name(view.cfg)
    if ply.is_file():
        return ply, view.note
    raise NotARunError(f"{view.folder} has no .ply to read ({splats_name(view.cfg)} is missing)")


def disk_error(exc: OSError) -> bool:
    """Whether an OSError is the environment refusing a write (full disk, permissions, read-only)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
