"""An interactive web view of a run (``splatgen view RUN``) and of Gaussians while they optimise.

Built on viser (nerfstudio's viewer library): a small web server in a background thread serves a page whose
three.js client sorts and draws the splats itself (WebGL), so nothing is rendered here and a browser on
another machine costs this one only the upload of the splats.

- :func:`serve_run` shows a finished run folder's ``splats.ply`` (a NeRF run: ``nerf.ply``) or any 3DGS
  ``.ply``, plus a mesh beside it if the folder holds one (``*.glb``, e.g. ``mesh.glb`` from
  ``splatgen.export.mesh``; glTF is +Y up with the front facing +Z, so it is turned into splatgen's frame).
- :class:`LiveViewer` shows the Gaussians of a training run as they change (``run.viewer=true``): the
  trainer calls :meth:`LiveViewer.on_step` after every step; it returns at once unless enough wall time has
  passed, so the view costs a clock read per step and a bounded share of the time (see its docstring).

The scene uses splatgen's frame: +Z up, and the camera starts where the previews' first view is (azimuth 0,
elevation 15 degrees, distance 2.25, 45 degree field of view), looking at the object's front. The view binds
to 127.0.0.1 by default: open it from another machine with an SSH tunnel (``ssh -L 8080:127.0.0.1:8080``) or
pass ``host="0.0.0.0"`` deliberately.

What the browser shows is each Gaussian's base colour (the SH DC term): viser's renderer has no
view-dependent colour, so shine that higher SH bands add is not shown (``splatgen export RUN out.mp4`` renders
it). Positions are float32, covariances float16 and colour/opacity 8 bits: viser's own packing (32 bytes per
splat).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .errors import SplatgenError
from .gaussians import PARAM_NAMES, SH_C0, GaussianModel, quat_to_rotmat

log = logging.getLogger("splatgen")

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "splat_arrays", "find_meshes", "start_server", "serve_run",
           "LiveViewer"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: The previews' first view (``splatgen.trainer.preview_cameras``): the object's front.
INITIAL_ELEVATION, INITIAL_RADIUS, INITIAL_FOVY = 15.0, 2.25, 45.0
#: glTF (+Y up, front +Z) -> splatgen (+Z up, front +X): (x, y, z)_gltf lands at (z, x, y); a rotation of 120
#: degrees about (1, 1, 1), as a quaternion w x y z.
GLTF_TO_WORLD_WXYZ = (0.5, 0.5, 0.5, 0.5)
#: Opacity below which a splat adds nothing to any pixel (gsplat's alpha threshold) and is not sent.
MIN_OPACITY = 1.0 / 255.0


# ------------------------------------------------------------------------------------------------ splats
def _params(model_or_params: Union[GaussianModel, Dict[str, Tensor]]) -> Dict[str, Tensor]:
    if isinstance(model_or_params, GaussianModel):
        return model_or_params.params  # type: ignore[return-value]
    missing = [k for k in ("means", "scales", "quats", "opacities", "sh0") if k not in model_or_params]
    if missing:
        raise SplatgenError(f"Gaussians need {list(PARAM_NAMES)}; missing {missing}")
    return model_or_params


def splat_arrays(
    model_or_params: Union[GaussianModel, Dict[str, Tensor]], max_splats: Optional[int] = None,
) -> Dict[str, np.ndarray]:
    """What viser's ``add_gaussian_splats`` takes, from gsplat-layout Gaussians.

    Computed where the Gaussians are (on the GPU during training) and only the result is copied to the CPU.
    Invisible (opacity < 1/255) and non-finite Gaussians are left out; with more than ``max_splats`` left,
    the most opaque ``max_splats`` are kept.

    Returns:
        ``centers`` [M, 3], ``covariances`` [M, 3, 3] (``R diag(s^2) R^T``), ``rgbs`` [M, 3] in [0, 1] (SH
        DC), ``opacities`` [M, 1]: float32 numpy arrays.
    """
    if max_splats is not None and (isinstance(max_splats, bool) or not isinstance(max_splats, int) or max_splats < 1):
        raise SplatgenError(f"max_splats must be a positive integer or None, got {max_splats!r}")
    p = _params(model_or_params)
    with torch.no_grad():
        means = p["means"].detach().float()
        opac = torch.sigmoid(p["opacities"].detach().float().reshape(-1))
        keep = opac >= MIN_OPACITY
        for name in ("means", "scales", "quats", "opacities", "sh0"):
            v = p[name].detach()
            keep &= torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)
        idx = keep.nonzero().squeeze(1)
        if max_splats is not None and idx.numel() > max_splats:
            idx = idx[torch.topk(opac[idx], max_splats, sorted=False).indices]
        R = quat_to_rotmat(p["quats"].detach()[idx].float())
        var = torch.exp(2.0 * p["scales"].detach()[idx].float())
        cov = (R * var[:, None, :]) @ R.transpose(1, 2)
        rgb = (p["sh0"].detach()[idx].float().reshape(-1, 3) * SH_C0 + 0.5).clamp(0, 1)
        out = {"centers": means[idx], "covariances": cov, "rgbs": rgb, "opacities": opac[idx, None]}
        return {k: v.cpu().numpy() for k, v in out.items()}


def find_meshes(run_dir: Union[str, Path]) -> List[Path]:
    """The mesh files of a run folder shown beside the splats: ``*.glb``, except splat glTFs (``*.splats.glb``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.glob("*.glb") if not p.name.endswith(".splats.glb"))


# ------------------------------------------------------------------------------------------------ server
def _initial_position() -> tuple:
    e = math.radians(INITIAL_ELEVATION)
    return (INITIAL_RADIUS * math.cos(e), 0.0, INITIAL_RADIUS * math.sin(e))


def check_host(host: str) -> None:
    """Refuse, in one line and at once, a host this machine cannot listen on (a name that does not resolve, an
    address that is not one of its own): viser would otherwise retry it without a word."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SplatgenError(f"cannot serve the viewer on {host!r}: the name does not resolve ({exc.strerror}); use "
                            "127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of this machine's "
                            "addresses") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((addr[0], 0))  # any free port: only the address is checked here
        except OSError as exc:
            raise SplatgenError(f"cannot serve the viewer on {host}: it is not an address of this machine "
                                f"({exc.strerror}); use 127.0.0.1 (this machine only), 0.0.0.0 (every interface) "
                                "or one of this machine's addresses") from None


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, label: str = "splatgen"):
    """A viser server on ``host:port`` (the next free port if that one is taken; ``port=0``: any free port)
    with splatgen's frame: +Z up, the camera on the object's front. Its URL: ``server_url(server)``."""
    try:
        import viser
    except ImportError:
        raise SplatgenError("the viewer needs viser: pip install 'viser>=1.1'") from None
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise SplatgenError(f"port must be an integer in [0, 65535], got {port!r}")
    check_host(host)
    try:
        # viser prints a banner with the URL on stdout whatever `verbose` says; callers print their own line.
        with contextlib.redirect_stdout(io.StringIO()):
            server = viser.ViserServer(host=host, port=port, label=label, verbose=False)
    except OSError as exc:
        raise SplatgenError(f"cannot serve the viewer on {host}:{port}: {exc}") from None
    server.scene.set_up_direction("+z")
    cam = server.initial_camera
    cam.position = _initial_position()
    cam.look_at = (0.0, 0.0, 0.0)
    cam.up = (0.0, 0.0, 1.0)
    cam.fov = math.radians(INITIAL_FOVY)
    return server


def server_url(server) -> str:
    host = server.get_host()
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{server.get_port()}"


def serve_run(
    path: Union[str, Path],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    block: bool = True,
    max_splats: Optional[int] = None,
    show_mesh: bool = True,
):
    """Serve an interactive view of a run folder (its ``splats.ply`` or ``nerf.ply``, and any mesh ``*.glb``
    in it) or of a ``.ply`` file; print its URL.

    Args:
        path: a run folder or a 3DGS ``.ply``.
        host, port: where to listen (loopback by default; the next free port when ``port`` is taken).
        block: serve until Ctrl-C, then stop the server; ``False`` returns the running server at once
            (call ``server.stop()`` when done).
        max_splats: send at most this many (the most opaque) splats, for slow browsers; ``None``: all.
        show_mesh: also show the folder's mesh files (:func:`find_meshes`), hidden behind a checkbox.

    Returns:
        the ``viser.ViserServer`` (stopped when ``block``).

    Raises:
        SplatgenError: nothing to show at ``path`` (not a run folder, no ``.ply``, unreadable file).
    """
    from .export import load_ply
    from .rundir import find_splats

    path = Path(path)
    ply, note = find_splats(path)  # NotARunError naming what is missing; an interrupted run: its interrupted.ply
    if note:
        print(f"splatgen: {note}", flush=True)
    model = load_ply(ply)
    if len(model) == 0:
        raise SplatgenError(f"{ply} holds zero Gaussians: nothing to show")
    arrays = splat_arrays(model, max_splats)

    server = start_server(host, port)
    try:
        splats = server.scene.add_gaussian_splats("/splats", **arrays)
        meshes = find_meshes(ply.parent) if show_mesh and not path.is_file() else []
        mesh_handles = [
            server.scene.add_glb(f"/meshes/{m.stem}", glb_data=m.read_bytes(), wxyz=GLTF_TO_WORLD_WXYZ, visible=False)
            for m in meshes
        ]
        shown = arrays["centers"].shape[0]
        server.gui.add_markdown(
            f"**{path.name}**  \n{shown:,} of {len(model):,} Gaussians"
            + (f"  \nmesh: {', '.join(m.name for m in meshes)}" if meshes else "")
        )
        _visibility_checkbox(server, "splats", [splats], True)
        if mesh_handles:
            _visibility_checkbox(server, "mesh", mesh_handles, False)
    except BaseException:
        server.stop()
        raise
    url = server_url(server)
    print(f"splatgen: viewing {ply} at {url}" + (" (Ctrl-C to stop)" if block else ""), flush=True)
    if not block:
        return server
    wait_for_ctrl_c(server.stop)
    return server


def _visibility_checkbox(server, label: str, handles: list, initial: bool) -> None:
    box = server.gui.add_checkbox(label, initial_value=initial)

    @box.on_update
    def _(_event) -> None:
        for h in handles:
            h.visible = box.value


# ------------------------------------------------------------------------------------------- live view
class LiveViewer:
    """Shows Gaussians while they optimise (``run.viewer=true``); the trainer calls :meth:`on_step` after every
    step.

    Cost. A step where no update is due costs one ``time.perf_counter()`` and a comparison. An update (the
    representation's Gaussians -> at most ``max_splats`` splats on the training device, 64 bytes per splat
    copied to the CPU, viser's packing into 32; the upload happens in viser's thread) is due when
    ``min_interval_s`` have passed since the last one *and* at least ``cost / max_overhead`` seconds, where
    ``cost`` is what the last update took, so however slow an update is (a NeRF's density as splats, a
    huge model, a loaded machine), it takes at most ``max_overhead`` of the wall time.

    Args:
        host, port: where to serve (loopback by default; the next free port when ``port`` is taken).
        min_interval_s: at most one update per this many seconds.
        max_splats: send at most this many (the most opaque) splats per update.
        max_overhead: the share of wall time updates may take (0.02: 2 %).
        server: an existing ``viser.ViserServer`` to draw into instead of starting one.
        total_steps: the run's steps, shown beside the current step.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        min_interval_s: float = 1.0,
        max_splats: int = 200_000,
        max_overhead: float = 0.02,
        server: Any = None,
        total_steps: Optional[int] = None,
    ):
        if not min_interval_s >= 0:
            raise SplatgenError(f"min_interval_s must be >= 0, got {min_interval_s!r}")
        if not 0 < max_overhead <= 1:
            raise SplatgenError(f"max_overhead must be in (0, 1], got {max_overhead!r}")
        self.server = server if server is not None else start_server(host, port)
        self._own_server = server is None
        self.min_interval_s, self.max_splats, self.max_overhead = float(min_interval_s), int(max_splats), max_overhead
        self.total_steps = total_steps
        self._handle = None
        self._status = self.server.gui.add_markdown("waiting for the first step")
        self._lock = threading.Lock()
        self._next_due = 0.0  # perf_counter time after which an update is due
        self.updates = 0
        self.update_seconds = 0.0
        """Wall time spent in :meth:`update` so far (what the view has cost the caller)."""

    @property
    def url(self) -> str:
        return server_url(self.server)

    def on_step(self, step: int, rep: Any, total: Optional[int] = None) -> bool:
        """The trainer's per-step callback: update the view from ``rep`` (a representation: its
        ``splat_params()``; or a :class:`GaussianModel`) when one is due. Returns whether it updated."""
        start = time.perf_counter()
        if start < self._next_due:
            return False
        params = rep.splat_params() if hasattr(rep, "splat_params") else rep
        total = total or self.total_steps
        self._show(params, f"step {step:,}" + (f" / {total:,}" if total else ""), start)
        return True

    def update(self, model_or_params: Union[GaussianModel, Dict[str, Tensor]], label: str = "",
               force: bool = False) -> bool:
        """Show these Gaussians (throttled as described in the class docstring unless ``force``).
        Returns whether the view was updated."""
        start = time.perf_counter()
        if not force and start < self._next_due:
            return False
        self._show(model_or_params, label, start)
        return True

    def _show(self, model_or_params, label: str, start: float) -> None:
        with self._lock:
            arrays = splat_arrays(model_or_params, self.max_splats)
            n = int(_params(model_or_params)["means"].shape[0])
            if self._handle is None:
                self._handle = self.server.scene.add_gaussian_splats("/live", **arrays)
            else:
                self._handle.set_gaussians(**arrays)
            self._status.content = f"**{label or 'live'}**  \n{arrays['centers'].shape[0]:,} of {n:,} Gaussians"
            end = time.perf_counter()
            cost = end - start
            self.updates += 1
            self.update_seconds += cost
            # The next update waits min_interval_s, and long enough that updates stay max_overhead of the time.
            self._next_due = end + max(self.min_interval_s, cost / self.max_overhead - cost)

    def close(self) -> None:
        """Stop the server (when this viewer started it)."""
        if self._own_server:
            self.server.stop()

    def __enter__(self) -> "LiveViewer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for_ctrl_c(close: Callable[[], None]) -> None:
    """Block until Ctrl-C (KeyboardInterrupt), then ``close()`` (also if anything else ends the wait)."""
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        close()
