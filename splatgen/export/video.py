"""Turntable videos: the model seen from a camera circling it, as H.264 ``.mp4`` or ``.gif``.

The camera orbits at a fixed elevation, radius and field of view (the previews' defaults: 15 degrees,
2.25, 45 degrees) with azimuths ``0, 360*T/F, 2*360*T/F, ...`` for ``T`` turns (one by default): frame 0
looks at the object's front (azimuth 0, the +X axis, splatgen's convention) and the video loops seamlessly
(frame F would equal frame 0). Frames are rendered in batches (gsplat on CUDA, splatgen's PyTorch renderer
elsewhere) and streamed into the encoder, so memory does not grow with the number of frames.

A **camera path** replaces the orbit with one camera per frame, given as a list of orbit cameras (a JSON file
of them, or the same list in Python)::

    [{"elevation": 15, "azimuth": 0, "radius": 2.25},
     {"elevation": 20, "azimuth": 10, "radius": 2.0, "fovy": 40}]

``elevation`` and ``azimuth`` in degrees (splatgen's orbit convention, :mod:`splatgen.cameras`), ``radius`` the
distance from the origin in world units, ``fovy`` the vertical field of view in degrees (optional; the video's
``fovy`` otherwise). These are the numbers splatgen's own cameras are made of, every camera looks at the
object's centre with +Z up, and a path of any shape is a list a few lines of Python can write.

Three kinds of frame:

- ``"rgb"``: the colours over ``background``;
- ``"depth"``: camera-space depth mapped through a colormap (``"turbo"``, near = red, far = blue, or
  ``"grey"``, near = white) over one fixed range for the whole video (the visible surface's depths in a
  quick low-resolution pass around the orbit, or ``depth_range``), blended over the background by the
  pixel's opacity;
- ``"alpha"``: accumulated opacity as grey (white = opaque, black = empty).

Video files (``write_turntable``): ``.mp4`` is H.264 (libx264 from the ffmpeg binary that ships with the
``imageio-ffmpeg`` wheel) in ``yuv420p`` with ``+faststart``, the combination browsers, QuickTime and
phones play; yuv420p needs even sizes, so odd ones are padded by one edge pixel. ``.gif`` (Pillow) has a
256-colour palette per frame and delays in 10 ms steps. Files are written atomically (a temporary file in
the same folder, then ``os.replace``): an error or Ctrl-C never leaves a partial video under the final name.

Anything with ``render_eval(cameras, background) -> (rgb, alpha, depth)`` can be filmed, so a NeRF run
(:class:`splatgen.representation.nerf.NerfRepresentation`) makes a turntable as Gaussians do.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..cameras import Cameras, orbit_cameras
from ..errors import SplatgenError
from ..fileio import atomic_path
from ..gaussians import PARAM_NAMES, GaussianModel
from ..render import render

__all__ = [
    "KINDS", "COLORMAPS", "VIDEO_SUFFIXES", "CAMERA_KEYS", "VideoInfo", "default_resolution", "turntable_cameras",
    "read_camera_path", "camera_path_cameras", "iter_turntable", "render_turntable", "write_turntable", "turbo",
]

KINDS = ("rgb", "depth", "alpha")
"""What a frame shows: colours, depth through a colormap, or accumulated opacity."""
COLORMAPS = ("turbo", "grey")
"""Colormaps of ``kind="depth"``."""
VIDEO_SUFFIXES = (".mp4", ".gif")
"""File types :func:`write_turntable` writes."""
CAMERA_KEYS = ("elevation", "azimuth", "radius")
"""What each camera of a camera path gives (degrees, degrees, world units); ``fovy`` (degrees) is optional."""
_OPTIONAL_CAMERA_KEYS = ("fovy",)
_CAMERA_EXAMPLE = '{"elevation": 15, "azimuth": 0, "radius": 2.25}'

DEFAULT_FRAMES = 120
"""120 frames at 30 fps: a 4 s turn, as threestudio's and GaussianDreamer's turntables."""
DEFAULT_RESOLUTION_CUDA = 512
DEFAULT_RESOLUTION_CPU = 256
DEFAULT_CRF = 18
"""libx264's constant rate factor (0 lossless .. 51 worst; its own default is 23). 18 is the usual
"visually lossless" choice; a 4 s turntable of one object on a flat background stays small at it."""
DEFAULT_PRESET = "medium"
DEFAULT_BATCH = 8
"""Views rendered per call of the renderer: larger batches amortise per-call overhead; memory stays bounded
(the PyTorch renderer works in bands of pixel rows)."""

_PROBE_VIEWS, _PROBE_SIZE = 8, 64

Renderable = Union[GaussianModel, dict, str, Path, Any]


@dataclass
class VideoInfo:
    """What :func:`write_turntable` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    bytes: int

    def __str__(self) -> str:
        return (f"{self.path} ({self.frames} frames, {self.width}x{self.height}, {self.fps:g} fps, "
                f"{self.bytes / 1e6:.2f} MB)")


def default_resolution(device: torch.device | str) -> int:
    """Frame size when none is given: 512 px on CUDA, where gsplat renders a view in milliseconds; 256 px
    elsewhere, the previews' size: splatgen's PyTorch renderer on an idle 2-core CPU renders a 120-frame turn
    of a 3.7k-Gaussian model in 6 s at 256 px and 22 s at 512 px (``benchmarks/results/export/video.json``;
    many times longer when other processes compete for the cores)."""
    return DEFAULT_RESOLUTION_CUDA if torch.device(device).type == "cuda" else DEFAULT_RESOLUTION_CPU


def turntable_cameras(
    frames: int, resolution: int, elevation: float = 15.0, radius: float = 2.25, fovy: float = 45.0,
    device: torch.device | str = "cpu", turns: float = 1.0,
) -> Cameras:
    """``frames`` cameras circling the origin ``turns`` times, frame 0 at azimuth 0 (the object's front, +X).

    Azimuths are wrapped to [0, 360) before the cameras are built, so a frame a whole number of turns on is the
    very same camera as frame 0 (``turns=2``: frame ``frames/2`` renders frame 0's image bit for bit)."""
    azimuths = [(360.0 * turns * i / frames) % 360.0 for i in range(frames)]
    return orbit_cameras([elevation] * frames, azimuths, radius, fovy, resolution, device=device)


def _check_view(where: str, elevation: float, radius: float, fovy: float) -> None:
    """One camera's numbers (an orbit's or a path's): the error names ``where`` they came from."""
    if not (math.isfinite(radius) and radius > 0):
        raise SplatgenError(f"{where}radius must be > 0, got {radius!r}")
    if not (0 < fovy < 180):
        raise SplatgenError(f"{where}fovy must be in (0, 180) degrees, got {fovy!r}")
    if not -90 <= elevation <= 90:
        raise SplatgenError(f"{where}elevation must be in [-90, 90] degrees, got {elevation!r}")


def read_camera_path(source: Union[str, Path, Sequence[Any]], fovy: float = 45.0) -> List[Dict[str, float]]:
    """A checked camera path: ``source`` is a JSON file holding a list of cameras, or that list itself.

    Returns one dict per frame with every key of :data:`CAMERA_KEYS` and ``fovy`` (``fovy`` filling in where a
    camera gives none), as floats.

    Raises:
        SplatgenError: an unreadable file, JSON that is not a non-empty list of objects, a camera without one of
            :data:`CAMERA_KEYS` or with a key that is not a camera's (named with the camera's index), or a value
            out of range (elevation in [-90, 90], radius > 0, fovy in (0, 180)).
    """
    if isinstance(source, (str, Path)):
        where = f"camera path {source}: "
        try:
            cameras = json.loads(Path(source).read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise SplatgenError(f"camera path {source}: no such file") from None
        except IsADirectoryError:
            raise SplatgenError(f"camera path {source} is a folder; give a .json file") from None
        except UnicodeDecodeError:
            raise SplatgenError(f"{where}not UTF-8 text; give a JSON list of cameras") from None
        except json.JSONDecodeError as exc:
            raise SplatgenError(f"{where}not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except OSError as exc:
            raise SplatgenError(f"{where}cannot be read ({exc.strerror})") from None
    else:
        where, cameras = "camera path: ", source
    if not isinstance(cameras, (list, tuple)) or not cameras:
        raise SplatgenError(f"{where}must be a non-empty list of cameras, such as [{_CAMERA_EXAMPLE}, ...]")
    keys = CAMERA_KEYS + _OPTIONAL_CAMERA_KEYS
    path = []
    for i, cam in enumerate(cameras):
        if not isinstance(cam, dict):
            raise SplatgenError(f"{where}camera [{i}] is a {type(cam).__name__}, not an object such as {_CAMERA_EXAMPLE}")
        unknown = sorted(str(k) for k in cam if k not in keys)
        if unknown:
            raise SplatgenError(f"{where}camera [{i}] has the unknown key {unknown[0]!r}; a camera has {list(keys)}")
        missing = [k for k in CAMERA_KEYS if k not in cam]
        if missing:
            raise SplatgenError(f"{where}camera [{i}] has no {missing[0]!r}; every camera needs {list(CAMERA_KEYS)} "
                                "(degrees, degrees, world units) and may give 'fovy' (degrees)")
        values = {**dict.fromkeys(_OPTIONAL_CAMERA_KEYS, fovy), **cam}
        for k, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SplatgenError(f"{where}camera [{i}]: {k}={v!r} is not a finite number")
        _check_view(f"{where}camera [{i}]: ", values["elevation"], values["radius"], values["fovy"])
        path.append({k: float(values[k]) for k in keys})
    return path


def camera_path_cameras(path: Sequence[Dict[str, float]], resolution: int,
                        device: torch.device | str = "cpu") -> Cameras:
    """The cameras of a checked path (:func:`read_camera_path`), ``resolution`` pixels square."""
    return orbit_cameras([c["elevation"] for c in path], [c["azimuth"] for c in path], [c["radius"] for c in path],
                         [c["fovy"] for c in path], resolution, device=device)


# ---------------------------------------------------------------------------------------------- colormaps
# Turbo (Google, Apache-2.0): 33 entries of its 256-entry table (every 8th), linearly interpolated; within
# 0.01 of the full table (tests/test_video.py compares it with matplotlib's copy).
_TURBO_TABLE = torch.tensor([
    (0.190, 0.072, 0.232), (0.225, 0.164, 0.451), (0.251, 0.252, 0.634), (0.268, 0.338, 0.780),
    (0.276, 0.421, 0.891), (0.275, 0.501, 0.966), (0.259, 0.580, 0.999), (0.214, 0.659, 0.980),
    (0.158, 0.736, 0.923), (0.112, 0.806, 0.845), (0.093, 0.866, 0.762), (0.120, 0.912, 0.687),
    (0.197, 0.949, 0.595), (0.305, 0.977, 0.490), (0.428, 0.994, 0.386), (0.547, 0.999, 0.296),
    (0.644, 0.990, 0.234), (0.716, 0.969, 0.208), (0.795, 0.930, 0.204), (0.867, 0.880, 0.214),
    (0.927, 0.820, 0.226), (0.969, 0.755, 0.227), (0.992, 0.684, 0.207), (0.996, 0.598, 0.174),
    (0.986, 0.505, 0.134), (0.962, 0.411, 0.093), (0.926, 0.325, 0.058), (0.881, 0.253, 0.035),
    (0.824, 0.192, 0.020), (0.756, 0.137, 0.009), (0.675, 0.090, 0.004), (0.583, 0.049, 0.005),
    (0.480, 0.016, 0.011),
], dtype=torch.float32)


def turbo(x: Tensor) -> Tensor:
    """The turbo colormap: ``x`` [...] in [0, 1] (clamped) -> RGB [..., 3] in [0, 1] (0 dark blue, 1 dark red)."""
    table = _TURBO_TABLE.to(x.device)
    pos = x.float().clamp(0, 1) * (table.shape[0] - 1)
    lo = pos.floor().long().clamp(max=table.shape[0] - 2)
    frac = (pos - lo).unsqueeze(-1)
    return table[lo] * (1 - frac) + table[lo + 1] * frac


# --------------------------------------------------------------------------------------- what gets filmed
@dataclass
class _Subject:
    """A model reduced to what filming needs: a batch renderer and its device."""

    render: Callable[[Cameras, Tensor], Tuple[Tensor, Tensor, Tensor]]
    device: torch.device


def _gaussian_subject(model: GaussianModel, device: Optional[torch.device], backend: str) -> _Subject:
    if len(model) == 0:
        raise SplatgenError("cannot film a model with zero Gaussians")
    if device is not None and model.device != device:
        model = GaussianModel.from_tensors(sh_degree=model.sh_degree, **{k: v.to(device) for k, v in model.params.items()})
    if not model.is_finite():
        # One NaN can blank whole frames; render what is finite (the .ply writer drops the same rows).
        finite = torch.ones(len(model), dtype=torch.bool, device=model.device)
        for v in model.params.values():
            finite &= torch.isfinite(v.detach().reshape(len(model), -1)).all(dim=1)
        if not bool(finite.any()):
            raise SplatgenError("cannot film a model whose Gaussians are all non-finite (NaN/Inf)")
        model = GaussianModel.from_tensors(sh_degree=model.sh_degree,
                                           **{k: v.detach()[finite] for k, v in model.params.items()})

    def render_views(cams: Cameras, bg: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            out = render(model, cams, bg, backend=backend)
        return out.rgb, out.alpha, out.depth

    return _Subject(render_views, model.device)


def _subject(obj: Renderable, device: Optional[torch.device | str], backend: str) -> _Subject:
    """Accepts a :class:`GaussianModel`, a dict of gsplat-layout tensors, a ``.ply`` path, a representation
    (Gaussians or NeRF), anything holding one as ``.rep``, or anything with ``render_eval``."""
    dev = torch.device(device) if device is not None else None
    if isinstance(obj, (str, Path)):
        from .ply import load_ply

        path = Path(obj)
        if path.is_dir():
            raise SplatgenError(f"{path} is a folder; pass its .ply (e.g. {path / 'splats.ply'}) or the run's "
                                "representation (splatgen.rundir.load_run)")
        obj = load_ply(path)  # SplatgenError for a missing or unreadable file
    if isinstance(obj, dict):
        missing = [k for k in PARAM_NAMES if k not in obj]
        if missing:
            raise SplatgenError(f"a dict of Gaussians needs {list(PARAM_NAMES)}; missing {missing}")
        if obj["means"].shape[0] == 0:
            raise SplatgenError("cannot film a model with zero Gaussians")
        obj = GaussianModel.from_tensors(**{k: torch.as_tensor(obj[k]).detach() for k in PARAM_NAMES})
    if getattr(obj, "rep", None) is not None:  # e.g. splatgen.api.GenerationResult
        obj = obj.rep
    if isinstance(obj, GaussianModel):
        return _gaussian_subject(obj, dev, backend)
    inner = getattr(obj, "model", None)
    if isinstance(inner, GaussianModel):  # GaussianRepresentation: film its Gaussians with our backend choice
        return _gaussian_subject(inner, dev, backend)
    if callable(getattr(obj, "render_eval", None)):  # the NeRF baseline, or any Representation
        size = getattr(obj, "size", None)
        if callable(size) and size() == 0:
            raise SplatgenError(f"cannot film an empty {type(obj).__name__} (size 0)")
        rep_device = getattr(obj, "device", None)
        rep_device = torch.device(rep_device) if rep_device is not None else (dev or torch.device("cpu"))
        if dev is not None and (dev.type != rep_device.type or dev.index not in (None, rep_device.index)):
            raise SplatgenError(f"the {type(obj).__name__} lives on {rep_device}; it cannot be filmed on {dev}")

        def render_views(cams: Cameras, bg: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
            with torch.no_grad():
                return obj.render_eval(cams, bg)

        return _Subject(render_views, rep_device)
    raise SplatgenError(
        f"cannot film a {type(obj).__name__}: pass a GaussianModel, a dict of Gaussian tensors, a .ply path, "
        "or a representation with render_eval(cameras, background)"
    )


def _background(background: Union[str, Sequence[float]]) -> Tuple[float, float, float]:
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
    if isinstance(background, str):
        if background not in named:
            raise SplatgenError(f"background={background!r}: use 'white', 'black' or 3 values in [0, 1]")
        return named[background]
    values = tuple(float(c) for c in background)
    if len(values) != 3 or not all(0.0 <= c <= 1.0 for c in values):
        raise SplatgenError(f"background={list(background)!r} must be 'white', 'black' or 3 values in [0, 1]")
    return values  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ frames
def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise SplatgenError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


@dataclass
class _Plan:
    subject: _Subject
    cams: Cameras
    probe: Cameras
    """Small views spread over the video's cameras, for the depth range of ``kind='depth'``."""
    bg: Tuple[float, float, float]
    kind: str
    colormap: str
    depth_range: Optional[Tuple[float, float]]
    radius: float
    batch_size: int
    progress: Optional[Callable[[int, int], None]] = None


#: the orbit's own arguments and their defaults: a camera path replaces them all.
_ORBIT_DEFAULTS = {"frames": DEFAULT_FRAMES, "elevation": 15.0, "radius": 2.25, "turns": 1.0}


def _plan(
    model_or_params: Renderable, frames: int, resolution: Optional[int], elevation: float, radius: float,
    fovy: float, background: Union[str, Sequence[float]], kind: str, device: Optional[torch.device | str],
    backend: str, batch_size: int, depth_range: Optional[Tuple[float, float]], colormap: str,
    progress: Optional[Callable[[int, int], None]] = None, turns: float = 1.0,
    camera_path: Union[str, Path, Sequence[Any], None] = None,
) -> _Plan:
    """Every check of the arguments, before any rendering or file: one clear error for bad input."""
    frames = _check_int("frames", frames, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    if kind not in KINDS:
        raise SplatgenError(f"kind={kind!r} is not a turntable kind; choose one of {list(KINDS)}")
    if colormap not in COLORMAPS:
        raise SplatgenError(f"colormap={colormap!r} is not known; choose one of {list(COLORMAPS)}")
    _check_view("", elevation, radius, fovy)
    if isinstance(turns, bool) or not isinstance(turns, (int, float)) or not (math.isfinite(turns) and turns > 0):
        raise SplatgenError(f"turns must be a number > 0, got {turns!r}")
    path = None
    if camera_path is not None:
        given = {"frames": frames, "elevation": elevation, "radius": radius, "turns": turns}
        changed = [f"{k}={v!r}" for k, v in given.items() if v != _ORBIT_DEFAULTS[k]]
        if changed:
            raise SplatgenError(f"a camera path gives every frame's camera; leave out what shapes the orbit "
                                f"({', '.join(changed)})")
        path = read_camera_path(camera_path, fovy)
    if depth_range is not None:
        near, far = (float(v) for v in depth_range)
        if not 0 <= near < far:
            raise SplatgenError(f"depth_range must be (near, far) with 0 <= near < far, got {depth_range!r}")
        depth_range = (near, far)
    bg = _background(background)
    subject = _subject(model_or_params, device, backend)
    res = default_resolution(subject.device) if resolution is None else _check_int("resolution", resolution, 2)
    if path is None:
        cams = turntable_cameras(frames, res, elevation, radius, fovy, device=subject.device, turns=turns)
        probe = turntable_cameras(_PROBE_VIEWS, _PROBE_SIZE, elevation, radius, fovy, subject.device)
    else:
        cams = camera_path_cameras(path, res, subject.device)
        spread = sorted({round(i * (len(path) - 1) / max(_PROBE_VIEWS - 1, 1)) for i in range(_PROBE_VIEWS)})
        probe = camera_path_cameras([path[i] for i in spread], _PROBE_SIZE, subject.device)
        radius = float(np.median([c["radius"] for c in path]))
    return _Plan(subject, cams, probe, bg, kind, colormap, depth_range, float(radius), batch_size, progress)


def _depth_range(plan: _Plan) -> Tuple[float, float]:
    """One range for the whole video, so a colour means one depth in every frame: ``depth_range``, or the 1st
    to 99th percentile of the opaque pixels' depths in :data:`_PROBE_VIEWS` small views around the orbit or
    along the camera path (the visible surface over the whole video, robust to a few floaters far from the
    object)."""
    if plan.depth_range is not None:
        return plan.depth_range
    cams = plan.probe
    _, alpha, depth = plan.subject.render(cams, torch.ones(len(cams), 3, device=plan.subject.device))
    seen = depth[alpha > 0.5].float()
    if seen.numel() < 2:
        return max(plan.radius - 1.0, 0.0), plan.radius + 1.0
    near, far = (float(v) for v in torch.quantile(seen, torch.tensor([0.01, 0.99], device=seen.device)))
    pad = max(far - near, 1e-3) * 0.05
    return max(near - pad, 0.0), far + pad


def _to_uint8(images: Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def _frames(plan: _Plan) -> Iterator[np.ndarray]:
    dev, n = plan.subject.device, len(plan.cams)
    near, far = _depth_range(plan) if plan.kind == "depth" else (0.0, 1.0)
    for start in range(0, n, plan.batch_size):
        cams = plan.cams[start:start + plan.batch_size]
        bg = torch.tensor(plan.bg, dtype=torch.float32, device=dev).expand(len(cams), 3)
        rgb, alpha, depth = plan.subject.render(cams, bg)
        if plan.kind == "rgb":
            image = rgb
        elif plan.kind == "alpha":
            image = alpha.expand(*alpha.shape[:-1], 3)
        else:
            t = ((far - depth) / (far - near)).squeeze(-1)  # near -> 1, far -> 0
            colour = turbo(t) if plan.colormap == "turbo" else t.clamp(0, 1).unsqueeze(-1).expand(*t.shape, 3)
            a = alpha.clamp(0, 1)
            image = colour.to(a.dtype) * a + bg[:, None, None, :].to(a.dtype) * (1 - a)
        if plan.progress is not None:
            plan.progress(start + len(cams), n)
        yield _to_uint8(image.float())


def iter_turntable(
    model_or_params: Renderable,
    frames: int = DEFAULT_FRAMES,
    resolution: Optional[int] = None,
    elevation: float = 15.0,
    radius: float = 2.25,
    fovy: float = 45.0,
    background: Union[str, Sequence[float]] = "white",
    kind: str = "rgb",
    device: Optional[torch.device | str] = None,
    backend: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    depth_range: Optional[Tuple[float, float]] = None,
    colormap: str = "turbo",
    progress: Optional[Callable[[int, int], None]] = None,
    turns: float = 1.0,
    camera_path: Union[str, Path, Sequence[Dict[str, float]], None] = None,
) -> Iterator[np.ndarray]:
    """The frames of :func:`render_turntable`, one batch ``[b, H, W, 3]`` uint8 at a time (arguments are
    checked when this is called, not when the first batch is drawn)."""
    plan = _plan(model_or_params, frames, resolution, elevation, radius, fovy, background, kind, device, backend,
                 batch_size, depth_range, colormap, progress, turns, camera_path)
    return _frames(plan)


def render_turntable(
    model_or_params: Renderable,
    frames: int = DEFAULT_FRAMES,
    resolution: Optional[int] = None,
    elevation: float = 15.0,
    radius: float = 2.25,
    fovy: float = 45.0,
    background: Union[str, Sequence[float]] = "white",
    kind: str = "rgb",
    device: Optional[torch.device | str] = None,
    backend: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    depth_range: Optional[Tuple[float, float]] = None,
    colormap: str = "turbo",
    progress: Optional[Callable[[int, int], None]] = None,
    turns: float = 1.0,
    camera_path: Union[str, Path, Sequence[Dict[str, float]], None] = None,
) -> np.ndarray:
    """Render turns around the model (one by default): ``[frames, H, W, 3]`` uint8 RGB, frame 0 facing the
    front; or the frames of a camera path.

    Args:
        model_or_params: a :class:`~splatgen.gaussians.GaussianModel`, a dict of gsplat-layout tensors
            (``means, scales, quats, opacities, sh0, shN``), a 3DGS ``.ply`` path, a representation
            (Gaussians or the NeRF baseline), an object holding one as ``.rep`` (``GenerationResult``), or
            anything with ``render_eval(cameras, background) -> (rgb, alpha, depth)``.
        frames: number of frames F >= 1 (azimuths ``360 * turns * i / F``).
        resolution: square frame size in pixels; ``None``: :func:`default_resolution` of the device.
        elevation, radius, fovy: the orbit (degrees, world units, degrees), the previews' by default;
            ``elevation`` in [-90, 90], ``radius`` > 0.
        background: ``'white'``, ``'black'`` or RGB in [0, 1] (also under ``kind='depth'``).
        kind: one of :data:`KINDS`.
        device: where to render; ``None``: where the model is (a dict or ``.ply``: the CPU).
        backend: ``'auto'`` (gsplat on CUDA, PyTorch elsewhere), ``'torch'`` or ``'gsplat'``.
        batch_size: views per renderer call.
        depth_range: ``(near, far)`` camera distances of ``kind='depth'``; ``None``: the visible surface's
            1st-99th percentile depths in 8 views of 64 px around the orbit.
        colormap: ``'turbo'`` or ``'grey'`` for ``kind='depth'``.
        progress: called as ``progress(frames_done, frames)`` after each batch (a progress bar).
        turns: how many times the camera circles the model over the video (> 0; 2: twice, 0.5: half way).
        camera_path: instead of the orbit, one camera per frame: a JSON file or a list of
            ``{"elevation", "azimuth", "radius"[, "fovy"]}`` (see :func:`read_camera_path`); ``frames``,
            ``elevation``, ``radius`` and ``turns`` are then left at their defaults (``fovy`` fills in where a
            camera gives none).

    Raises:
        SplatgenError: bad arguments (``frames < 1``, unknown ``kind``, a negative radius, a camera path camera
            without its ``azimuth``...) or a model with zero Gaussians.
    """
    batches = iter_turntable(model_or_params, frames, resolution, elevation, radius, fovy, background, kind, device,
                             backend, batch_size, depth_range, colormap, progress, turns, camera_path)
    return np.concatenate(list(batches), axis=0)


# ------------------------------------------------------------------------------------------------ files
def _as_frames(frames: Any) -> np.ndarray:
    """[F, H, W, 3] uint8 from uint8 or float-in-[0, 1] arrays/tensors."""
    if isinstance(frames, Tensor):
        frames = frames.detach().cpu()
        frames = _to_uint8(frames.float()) if frames.is_floating_point() else frames.numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise SplatgenError(f"frames must be [F >= 1, H, W, 3] RGB images, got shape {list(arr.shape)}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = (np.clip(arr, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise SplatgenError(f"frames must be uint8 or floats in [0, 1], got {arr.dtype}")
    return arr


def _even(batch: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one edge pixel: yuv420p stores colour at half resolution in both axes."""
    _, h, w, _ = batch.shape
    if h % 2 == 0 and w % 2 == 0:
        return batch
    return np.pad(batch, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _write_mp4(batches: Iterator[np.ndarray], tmp: Path, fps: float, crf: int, preset: str) -> Tuple[int, int, int]:
    import imageio_ffmpeg

    writer = None
    count, size = 0, (0, 0)
    try:
        for batch in batches:
            batch = np.ascontiguousarray(_even(batch))
            if writer is None:
                size = (batch.shape[2], batch.shape[1])
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), size, fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                    quality=None, macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-crf", str(crf), "-preset", preset, "-movflags", "+faststart"],
                )
                writer.send(None)
            for frame in batch:
                writer.send(frame)
                count += 1
    except OSError as exc:  # imageio-ffmpeg raises IOError when ffmpeg dies (disk full, killed, bad args)
        raise SplatgenError(f"ffmpeg could not write {tmp.name}: {str(exc).splitlines()[0]}") from None
    finally:
        if writer is not None:
            writer.close()  # waits for ffmpeg to finish the file (or kills it on KeyboardInterrupt)
    return count, size[0], size[1]


def _write_gif(batches: Iterator[np.ndarray], tmp: Path, fps: float) -> Tuple[int, int, int]:
    from PIL import Image

    # Quantise each frame as it arrives (a palette image is a third of the RGB frame).
    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.MEDIANCUT) for b in batches for f in b]
    duration = max(round(1000.0 / fps / 10.0) * 10, 20)  # GIF delays are in 10 ms; browsers treat < 20 as 100
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                   optimize=False, disposal=2)
    return len(images), images[0].width, images[0].height


def write_turntable(
    frames_or_model: Any,
    path: str | Path,
    fps: float = 30,
    *,
    crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
    **render_kwargs: Any,
) -> VideoInfo:
    """Write a turntable video (``.mp4``: H.264/yuv420p; ``.gif``) atomically.

    Args:
        frames_or_model: ``[F, H, W, 3]`` frames (uint8, or floats in [0, 1]; numpy or torch), or anything
            :func:`render_turntable` films, rendered and encoded batch by batch.
        path: the file; its suffix picks the format (one of :data:`VIDEO_SUFFIXES`). Parent folders are made.
        fps: frames per second (> 0).
        crf, preset: libx264's quality (0-51, lower is better) and speed preset (``.mp4`` only).
        **render_kwargs: :func:`render_turntable`'s arguments (``frames``, ``resolution``, ``kind``, ...) when
            a model is given.

    Returns:
        :class:`VideoInfo` of the written file.

    Raises:
        SplatgenError: an unknown suffix, ``fps <= 0``, bad frames or render arguments, or an encoder failure;
            nothing is left at ``path`` (or beside it) then.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise SplatgenError(f"cannot write a turntable to {path.name!r}: use one of {list(VIDEO_SUFFIXES)}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise SplatgenError(f"fps must be a number > 0, got {fps!r}")
    crf = _check_int("crf", crf, 0)
    if crf > 51:
        raise SplatgenError(f"crf must be in [0, 51], got {crf}")
    if path.is_dir():
        raise SplatgenError(f"{path} is a folder; give a file name such as {path / 'turntable.mp4'}")

    if isinstance(frames_or_model, (np.ndarray, Tensor, list, tuple)):
        if render_kwargs:
            raise SplatgenError(f"render arguments {sorted(render_kwargs)} only apply when a model is given")
        arr = _as_frames(frames_or_model)
        batches: Iterator[np.ndarray] = iter([arr])
    else:
        batches = iter_turntable(frames_or_model, **render_kwargs)  # checks everything before a file exists

    if suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise SplatgenError("writing .mp4 needs the imageio-ffmpeg package (it ships its own ffmpeg): "
                            "pip install imageio-ffmpeg")
    # A temporary file beside the target with the same suffix (ffmpeg picks the container from it), renamed when
    # the encoder is done: an error or Ctrl-C never leaves a partial video under the final name.
    with atomic_path(path) as tmp:
        if suffix == ".mp4":
            count, width, height = _write_mp4(batches, tmp, float(fps), crf, preset)
        else:
            count, width, height = _write_gif(batches, tmp, float(fps))
    return VideoInfo(path, count, width, height, float(fps), path.stat().st_size)
