"""The evaluator CLIP's caption features, kept on disk across processes.

Every evaluation of a world prompt scores its renders against all of the world's captions, and a fresh process
used to run the evaluator's text tower over all of them again (a second or more of a CPU run's evaluation)
though they only change when the evaluator's files do. They are kept in the user cache folder
(``platformdirs.user_cache_dir("splatgen")``, or ``$SPLATGEN_CACHE_DIR``), one safetensors file per key.

The key is a hash of everything the features are a function of: the content of every file of the evaluator
folder (a hash of the bytes, not the modification time, so a file rewritten in place is never served stale),
the captions, the device (the GPU model; the CPU's vector instructions and thread count) and the torch and
open_clip versions: what may make another machine or build round differently, since a home folder may be
shared by several machines. A hit therefore gives exactly the tensor the text tower would compute. The cache can only save time: a missing,
unreadable or malformed entry is recomputed (and rewritten), and a folder that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

log = logging.getLogger("splatgen")

#: Environment variable that moves splatgen's on-disk cache (default: the user cache folder).
CACHE_ENV = "SPLATGEN_CACHE_DIR"
#: Subfolder of the cache holding the evaluator's caption features.
CAPTION_FEATURES = "evaluator_caption_features"
_KEY = "text_features"


def cache_dir() -> Path:
    """splatgen's on-disk cache: ``$SPLATGEN_CACHE_DIR`` if set, else the user cache folder of this platform."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("splatgen"))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        return "none"


def _device_facts(device: torch.device) -> dict:
    """What the rounding of the text tower's float32 arithmetic may depend on besides the inputs: the GPU model,
    or the CPU's vector instructions and the thread count (the BLAS may split its sums by thread)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "cuda": torch.version.cuda}
    if device.type == "cpu":
        return {"type": "cpu", "isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    return {"type": device.type}


def caption_features_key(folder: Path, texts: Sequence[str], device: torch.device) -> str:
    """Hash of what the features of ``texts`` by the CLIP in ``folder`` on ``device`` depend on."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    facts = {"texts": list(texts), "device": _device_facts(torch.device(device)), "torch": torch.__version__,
             "open_clip": _version("open_clip_torch")}
    h.update(json.dumps(facts, sort_keys=True).encode())
    return h.hexdigest()


def _read(path: Path, rows: int) -> Optional[Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        features = load_file(str(path))[_KEY]
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        log.debug("unreadable cache entry %s (%s); recomputing", path, exc)
        return None
    if features.dtype != torch.float32 or features.dim() != 2 or features.shape[0] != rows:
        log.debug("malformed cache entry %s; recomputing", path)
        return None
    return features


def _write(path: Path, features: Tensor) -> None:
    from safetensors.torch import save

    from ..fileio import atomic_write_bytes

    try:  # renamed into place (fileio), so another process never reads half a file
        atomic_write_bytes(path, save({_KEY: features.detach().cpu().contiguous()}), durable=False)
    except OSError as exc:  # a read-only or full disk: the run goes on without the cache
        log.debug("could not write the cache entry %s (%s)", path, exc)


def cached_caption_features(folder: Path, texts: Sequence[str], device: torch.device,
                            compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` (the [len(texts), E] float32 features of ``texts``), from the on-disk cache when an entry
    for exactly these files, captions, device type and versions is there; computed and stored otherwise."""
    path = cache_dir() / CAPTION_FEATURES / f"{caption_features_key(folder, texts, device)}.safetensors"
    features = _read(path, len(texts))
    if features is not None:
        return features.to(device)
    features = compute()
    _write(path, features)
    return features
