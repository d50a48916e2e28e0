"""Files that are never half-written, JSON that is always valid, and checkpoints that cannot run code.

- :func:`atomic_write` writes to a temporary file in the target's folder, flushes and fsyncs it, renames it
  over the target and fsyncs the folder: after a crash, a kill or a full disk the target is either the old
  file or the new one, never a part of one. A failure removes the temporary file.
- :func:`clean_temp_files` removes what a killed process left behind (only temporary files of this module).
- :func:`write_json` writes strict JSON: NaN and infinities become ``null``.
- :func:`load_checkpoint` reads ``.pt`` files with ``torch.load(weights_only=True)``: tensors, numbers,
  strings and containers only, so a run folder someone shares cannot execute code when it is read.
- :func:`open_own` opens the files splatgen keeps open or appends to (a run's lock and log, a batch's manifest)
  without ever going through a symbolic link: run and batch folders are shared (a lab's NFS, a downloaded batch),
  and a link planted in one must never make splatgen write, truncate or read outside it. (What
  :func:`atomic_write` writes replaces a link by its rename, so it never writes through one either.)

Errors a user's environment causes (no space left, no permission, a read-only file system) become one
:class:`~splatgen.errors.OutputError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Union

from .errors import OutputError, SplatgenError

#: mark of the temporary files of :func:`atomic_path` (``.<stem>.<pid>.splatgen-tmp<suffix>``).
TMP_SUFFIX = ".splatgen-tmp"
#: ``os.open`` refuses a symbolic link as the last part of the path with this flag (0 where the platform lacks it)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

log = logging.getLogger("splatgen")


def open_own(path: Union[str, Path], flags: int, mode: int = 0o644) -> int:
    """``os.open`` for a file of a folder splatgen writes, never through a symbolic link: a link in its place is
    removed first (with a warning naming it and where it pointed) and the file is opened or created in its place.

    Raises:
        OutputError: a link appeared there between the removal and the open (the open refuses it).
    """
    path = Path(path)
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:  # pragma: no cover - gone meanwhile
            target = "?"
        log.warning("%s was a symbolic link (to %s); splatgen replaced it by its own file and wrote nothing through it",
                    path, target)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    try:
        return os.open(path, flags | NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(f"cannot write {path}: it is a symbolic link (one appeared while splatgen opened the "
                              "file); splatgen never writes through links") from None
        raise


def open_own_text(path: Union[str, Path], append: bool = True, buffering: int = -1):
    """A text file object of :func:`open_own` for appending (created if missing), UTF-8."""
    fd = open_own(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC))
    return os.fdopen(fd, "a" if append else "w", buffering=buffering, encoding="utf-8")


#: first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(text: Any) -> Any:
    """A text cell for a CSV that people open in spreadsheets: one that starts like a formula gets a leading
    apostrophe, as OWASP's CSV-injection guidance says, so ``=HYPERLINK(...)`` shows as text and never runs.
    Numbers and None pass unchanged."""
    if isinstance(text, str) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def read_own_text(path: Union[str, Path], limit: int = 4096) -> str:
    """The start of a small file of a shared folder, read without following a symbolic link ('' for a link, a
    missing or an unreadable file): what a folder holds is shown, never a file it points to."""
    try:
        fd = os.open(Path(path), os.O_RDONLY | NOFOLLOW)
    except OSError:
        return ""
    try:
        return os.read(fd, limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - some file systems do not open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def output_error(path: Union[str, Path], exc: OSError) -> OutputError:
    """One clear line for a file that could not be written."""
    reason = exc.strerror or type(exc).__name__
    return OutputError(f"cannot write {path}: {reason}")


@contextlib.contextmanager
def atomic_path(path: Union[str, Path], durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` with the same suffix, for writers that need a file name (an ffmpeg
    subprocess picks the container from it): renamed over ``path`` (fsynced first, with ``durable``) when the
    block ends without an error, removed when it raises."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{TMP_SUFFIX}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path)
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except OSError as exc:
        _remove(tmp)
        raise output_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None], durable: bool = True) -> Path:
    """Write ``path`` through ``write(file)`` atomically (and, with ``durable``, fsynced before the rename)."""
    with atomic_path(path, durable) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def atomic_write_bytes(path: Union[str, Path], data: bytes, durable: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), durable)


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN), tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_line(obj: Any) -> str:
    """One line of strict JSON (NaN/Inf as null)."""
    return json.dumps(json_safe(obj), allow_nan=False)


def write_json(path: Union[str, Path], obj: Any) -> Path:
    """Strict JSON (NaN/Inf as null), indented, written atomically."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temp_files(path: Union[str, Path]) -> int:
    """Remove the temporary files of earlier writes of ``path`` whose process is gone (a ``kill -9`` during an
    export leaves one, and the ffmpeg it fed finishes writing into it after): they are ``.<stem>.<pid>`` files of
    this module beside ``path``; those of live processes are left alone. Returns how many went."""
    path = Path(path)
    n = 0
    for p in path.parent.glob(f".{path.stem}.*{TMP_SUFFIX}{path.suffix}"):
        pid = p.name[len(path.stem) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(p)
            n += 1
    return n


def clean_temp_files(folder: Union[str, Path]) -> int:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` (and its subfolders) when a process
    died mid-write; returns how many. Only call it on a folder this process owns."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(f"*{TMP_SUFFIX}*"):
            _remove(p)
            n += 1
    return n


def save_checkpoint_file(path: Union[str, Path], payload: Any) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Union[str, Path], map_location: Any = "cpu") -> Any:
    """Read a ``.pt`` file written by splatgen, refusing anything but tensors, numbers, strings and containers.

    Raises:
        SplatgenError: the file is missing, truncated, or holds objects that loading would have to execute
            (a pickle made to run code is refused here, not run).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise SplatgenError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SplatgenError(
            f"refused to load {path}: it holds more than tensors and plain values, and reading it would run code "
            f"from the file ({first[:160]}). splatgen never writes such files; do not load it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SplatgenError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {str(exc).strip()[:160]})") from None
