"""Which way is up in an exported file, and what every splat exporter does before it writes.

splatgen works in one frame (``docs/DESIGN.md``, "Conventions"): right-handed, **+Z up**, the object's
front facing **+X** (azimuth 0). Splat viewers each assume their own "up", so every exporter takes an
explicit ``up`` and turns the Gaussians into that frame first. The frames (all right-handed, all proper
rotations of splatgen's, so nothing is mirrored):

=======  ==========================  ======  ========  =====================================================
``up``   (x, y, z) in splatgen's     up      front     what reads it that way
         frame lands at
=======  ==========================  ======  ========  =====================================================
``z``    (x, y, z)                   +Z      +X        splatgen itself (run folders, ``load_ply``), Z-up tools
``y``    (y, z, x)                   +Y      +Z        glTF 2.0 (spec: +Y up, an asset's front faces +Z), SPZ
                                                       (spec: RUB axes), three.js (Spark, GaussianSplats3D),
                                                       Babylon.js and PlayCanvas after a glTF import
``-y``   (-y, -z, x)                 -Y      +Z        camera-style (OpenCV/COLMAP "RDF") scenes, the frame
                                                       INRIA-trained ``.ply``/``.splat`` files come in:
                                                       SuperSplat, antimatter15's viewer
=======  ==========================  ======  ========  =====================================================

``-y`` is ``y`` turned 180 degrees about Z. SuperSplat turns every file it loads 180 degrees about Z (it
expects camera-style -Y up), so a ``-y`` file shows in SuperSplat exactly as a ``y`` file shows in glTF and
three.js viewers: upright, front towards +Z, where those viewers' default camera looks from.

Default per format (:data:`DEFAULT_UP`), chosen so each file opens upright in the viewers that read it:

- ``.ply`` export: ``-y``. The INRIA layout's readers (SuperSplat, antimatter15, Unity and Unreal plugins)
  expect camera-style -Y up, because that is how every trained scene comes out of COLMAP; three.js
  viewers show such files after their documented flip (Spark's examples set
  ``splat.quaternion.set(1, 0, 0, 0)``, GaussianSplats3D's use ``cameraUp: [0, -1, ...]``). The run
  folder's own ``splats.ply`` stays ``z`` (``save_ply``'s default): it is splatgen's working file, read
  back exactly by ``load_ply`` and scored against the Z-up ground truth, and its bytes must not change.
- ``.splat``: ``-y``. antimatter15's format is a converted INRIA ``.ply`` (its converter copies x, y, z)
  and is read by the same viewers with the same expectation.
- ``.spz``: ``y``. Niantic's spec stores RUB (OpenGL/three.js) axes: +Y up, +Z towards the viewer.
- ``.splats.glb``: ``y``. glTF's spec: +Y up, the front of an asset faces +Z. Anything else writes a file
  that every glTF viewer shows turned.

Rotating Gaussians (:func:`rotate_gaussians`): positions ``R p``; rotations by quaternion composition
``q_R * q`` (Hamilton, w x y z; the norm of ``q`` is kept, so unnormalised quaternions stay as they were
up to rounding); log scales, opacities and the SH DC term are unchanged; each higher SH band ``l`` (1-3)
is mixed by the ``(2l+1) x (2l+1)`` matrix that makes the rotated colour field equal the old one
(:func:`sh_rotation`), found by evaluating the real SH basis (``splatgen.render.sh``, gsplat's and the
glTF spec's convention) at fixed directions and at their rotations and solving the small least-squares
system per band. For the frames above, degree 1 is a signed permutation (exact in float32); degrees 2
and 3 mix a few coefficients with constants such as sqrt(3)/2 (rounded once to float32). Rotating to ``z``
returns the input tensors untouched.

Every exporter also shares :func:`export_params` (input checks, non-finite rows dropped with a warning, the
turn into the file's frame) and write through :func:`splatgen.fileio.atomic_write` (a temporary file in the target folder, fsynced,
then one rename: no partial file is ever left under the final name, nor a temporary one on error).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Dict, List

import torch
from torch import Tensor

from ..errors import SplatgenError
from ..gaussians import PARAM_NAMES, GaussianModel
from ..render.sh import sh_basis

UP_AXES = ("z", "y", "-y")
"""Allowed values of every exporter's ``up``."""

DEFAULT_UP: Dict[str, str] = {"ply": "-y", "splat": "-y", "spz": "y", "splats.glb": "y", "glb": "y", "obj": "y"}
"""The up axis each format is written with unless told otherwise (see the module docstring for why): the
``default_up`` column of the format table (:data:`.formats.FORMATS`). ``glb`` is glTF's +Y up, for splats
and meshes alike; a mesh ``.obj`` is written in the same frame."""

#: rows: where splatgen's (x, y, z) go; p_file = FRAME_MATRICES[up] @ p_splatgen.
_FRAME_ROWS: Dict[str, List[List[float]]] = {
    "z": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
    "y": [[0, 1, 0], [0, 0, 1], [1, 0, 0]],
    "-y": [[0, -1, 0], [0, 0, -1], [1, 0, 0]],
}


def check_up(up: str) -> str:
    """``up`` itself when it is one of :data:`UP_AXES`, else a :class:`SplatgenError` naming the choices."""
    if up not in UP_AXES:
        raise SplatgenError(f"unknown up axis {up!r}: choose one of {', '.join(repr(u) for u in UP_AXES)}")
    return up


def frame_matrix(up: str) -> Tensor:
    """[3, 3] float64 rotation from splatgen's frame into the frame of ``up``: ``p_file = R @ p``."""
    return torch.tensor(_FRAME_ROWS[check_up(up)], dtype=torch.float64)


# ------------------------------------------------------------------------------------------ rotations
def quat_from_matrix(R: Tensor) -> Tensor:
    """Unit quaternion [4] (w x y z, w >= 0) of a 3x3 rotation matrix (float64, Shepperd's method)."""
    R = R.to(torch.float64)
    t = float(R[0, 0] + R[1, 1] + R[2, 2])
    if t > 0:
        s = 2.0 * math.sqrt(1.0 + t)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(torch.argmax(torch.diagonal(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + float(R[i, i] - R[j, j] - R[k, k]), 0.0))
        v = [0.0, 0.0, 0.0]
        v[i] = 0.25 * s
        v[j] = float(R[j, i] + R[i, j]) / s
        v[k] = float(R[k, i] + R[i, k]) / s
        q = [float(R[k, j] - R[j, k]) / s, *v]
    q = torch.tensor([float(c) for c in q], dtype=torch.float64)
    q = q / q.norm()
    return -q if q[0] < 0 else q


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of quaternions [..., 4] in w x y z order (rotation of ``a`` after ``b``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def _fibonacci_directions(n: int) -> Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    r = torch.sqrt(1.0 - z * z)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def sh_rotation(R: Tensor, degree: int) -> List[Tensor]:
    """Per band ``l = 1..degree`` the float64 matrix ``M_l`` [(2l+1), (2l+1)] that rotates SH coefficients.

    With ``c`` the coefficients of band ``l`` (basis order ``m = -l..l``, as in gsplat and glTF),
    ``M_l @ c`` are the coefficients whose colour at ``R d`` equals the old colour at ``d`` for every
    direction ``d``. Found from the basis itself: ``Y(R d) = A Y(d)`` at 64 fixed directions gives ``A`` by
    least squares (exact up to float64 rounding: the band is closed under rotation), then
    ``M = A^-T`` (``= A`` for this orthonormal basis). Entries within 1e-12 of 0 or +-1 are snapped, so
    axis permutations give exact signed permutations.
    """
    R = R.to(torch.float64)
    dirs = _fibonacci_directions(64)
    B = sh_basis(degree, dirs)  # [64, (degree+1)^2]
    C = sh_basis(degree, dirs @ R.T)
    out = []
    for l in range(1, degree + 1):
        sl = slice(l * l, (l + 1) * (l + 1))
        At = torch.linalg.lstsq(B[:, sl], C[:, sl]).solution  # C = B A^T
        M = torch.linalg.inv(At)  # c' = A^-T c
        for target in (0.0, 1.0, -1.0):
            M = torch.where((M - target).abs() < 1e-12, torch.full_like(M, target), M)
        out.append(M)
    return out


def rotate_gaussians(params: Dict[str, Tensor], R: Tensor) -> Dict[str, Tensor]:
    """Gaussians (gsplat layout, any dtype/device) turned by the rotation ``R`` [3, 3] about the origin.

    Positions ``R p``; quaternions ``q_R * q``; each SH band of ``shN`` mixed by :func:`sh_rotation`;
    scales, opacities and ``sh0`` copied. Computed in float64, returned in the input dtypes. The
    identity returns the input tensors themselves (bit-exact, no copy).
    """
    R = R.to(torch.float64)
    if torch.equal(R, torch.eye(3, dtype=torch.float64)):
        return dict(params)
    means, quats, shN = params["means"], params["quats"], params["shN"]
    out = dict(params)
    out["means"] = (means.to(torch.float64) @ R.T.to(means.device)).to(means.dtype)
    qR = quat_from_matrix(R).to(quats.device)
    out["quats"] = quat_multiply(qR.expand(quats.shape[0], 4), quats.to(torch.float64)).to(quats.dtype)
    n_rest = shN.shape[1]
    if n_rest:
        degree = int(round(math.sqrt(n_rest + 1))) - 1
        assert (degree + 1) ** 2 - 1 == n_rest, f"shN has {n_rest} coefficients: not a full set of SH bands"
        sh64 = shN.to(torch.float64)
        bands = []
        for l, M in enumerate(sh_rotation(R, degree), start=1):
            band = sh64[:, l * l - 1:(l + 1) * (l + 1) - 1, :]  # [N, 2l+1, 3]
            bands.append(torch.einsum("ij,njc->nic", M.to(shN.device), band))
        out["shN"] = torch.cat(bands, dim=1).to(shN.dtype)
    return out


def to_frame(params: Dict[str, Tensor], up: str) -> Dict[str, Tensor]:
    """Gaussians from splatgen's frame into the frame of ``up`` (see the module docstring)."""
    return rotate_gaussians(params, frame_matrix(up))


def from_frame(params: Dict[str, Tensor], up: str) -> Dict[str, Tensor]:
    """Gaussians read from a file in the frame of ``up`` back into splatgen's frame."""
    return rotate_gaussians(params, frame_matrix(up).T)


# ------------------------------------------------------------------------------ what every exporter does
def export_params(model_or_params, path: str | Path, up: str) -> Dict[str, Tensor]:
    """The Gaussians an exporter writes: CPU float32 tensors in gsplat's layout, non-finite rows dropped
    (with a warning naming how many and ``path``), turned into the frame of ``up``.

    Raises:
        SplatgenError: unknown ``up``, missing parameters or wrong shapes, or no Gaussian left to write
            (none given, or every one had a NaN/Inf).
    """
    check_up(up)
    params = model_or_params.state() if isinstance(model_or_params, GaussianModel) else dict(model_or_params)
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise SplatgenError(f"cannot write {path}: the Gaussians lack {missing} (need {list(PARAM_NAMES)})")
    p = {k: torch.as_tensor(params[k]).detach().to("cpu", torch.float32) for k in PARAM_NAMES}
    n = p["means"].shape[0]
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,), "sh0": (n, 1, 3)}
    bad = [f"{k} {list(p[k].shape)}" for k, s in shapes.items() if tuple(p[k].shape) != s]
    if p["shN"].dim() != 3 or p["shN"].shape[0] != n or p["shN"].shape[2] != 3 or p["shN"].shape[1] not in (0, 3, 8, 15):
        bad.append(f"shN {list(p['shN'].shape)}")
    if bad:
        raise SplatgenError(f"cannot write {path}: wrong shapes {', '.join(bad)} for {n} Gaussians "
                            "(gsplat layout: means [N,3], scales [N,3], quats [N,4], opacities [N], sh0 [N,1,3], "
                            "shN [N,K-1,3] with K = 1, 4, 9 or 16)")
    return to_frame(drop_non_finite(p, path), up)


def drop_non_finite(params: Dict[str, Tensor], path: str | Path, reading: bool = False) -> Dict[str, Tensor]:
    """``params`` without the rows that hold a NaN or an Inf (a warning names how many and ``path``).

    Raises:
        SplatgenError: no Gaussian left to write (none given, or every one non-finite).
    """
    n = params["means"].shape[0]
    if n == 0:
        raise SplatgenError(f"cannot write {path}: no Gaussian to write (none was given)")
    finite = torch.ones(n, dtype=torch.bool, device=params["means"].device)
    for v in params.values():
        if v.numel():  # shN [N, 0, 3] holds nothing to check
            finite &= torch.isfinite(v.detach().reshape(n, -1)).all(dim=1)
    if bool(finite.all()):
        return params
    if not bool(finite.any()):
        raise SplatgenError(f"cannot write {path}: no Gaussian to write (all {n} have NaN or Inf parameters)")
    what = "reading" if reading else "writing"
    warnings.warn(f"dropping {int((~finite).sum())} of {n} Gaussians with NaN/Inf parameters ({what} {path})",
                  UserWarning, stacklevel=3)
    return {k: v.detach()[finite] for k, v in params.items()}
