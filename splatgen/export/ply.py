"""The standard 3DGS ``.ply`` (INRIA layout), read by SuperSplat, antimatter15's viewer, gsplat and Unity.

Binary little-endian, one ``vertex`` element, all float32, in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1} opacity scale_0 scale_1 scale_2
    rot_0 rot_1 rot_2 rot_3

``f_dc`` are the SH DC coefficients, ``f_rest`` the higher bands **channel-major** (all R coefficients, then
all G, then all B), ``opacity`` a logit, ``scale_*`` log scales, ``rot_*`` a quaternion w x y z, normals zero.
INRIA's own loader asserts 45 ``f_rest`` values (degree 3): ``pad_sh_to_degree3=True`` writes zeros for the
missing bands. Non-finite rows are dropped, when writing and when reading (with a warning): one NaN makes
some viewers drop every splat.

``up`` (:mod:`.orientation`) chooses the file's frame. ``save_ply``'s default is ``"z"``, splatgen's own
frame: the run folder's ``splats.ply`` is splatgen's working file (``load_ply`` reads it back bit-exact and
the evaluator scores it against the Z-up ground truth), so its bytes stay as they were. A file for viewers
is written with ``up=DEFAULT_UP["ply"]`` (``"-y"``: SuperSplat, antimatter15) by ``splatgen export``. A file
written in another frame than ``z`` says so in one header line, ``comment splatgen up=<axis>`` (PLY
readers skip comments), and ``load_ply`` turns it back into splatgen's frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ..errors import SplatgenError
from ..fileio import atomic_write
from ..gaussians import GaussianModel, num_sh_bases
from .orientation import check_up, drop_non_finite, from_frame, to_frame

UP_COMMENT = "splatgen up="
"""Start of the header comment that records a file's frame when it is not splatgen's own (``z``)."""


def _rest_names(n_rest: int) -> list[str]:
    return [f"f_rest_{i}" for i in range(3 * n_rest)]


def gaussians_to_ply_array(params: Dict[str, torch.Tensor], pad_sh_to_degree3: bool = False) -> np.ndarray:
    """A structured numpy array in the INRIA vertex layout from gsplat-layout tensors."""
    means = params["means"].detach().float().cpu()
    n = means.shape[0]
    sh0 = params["sh0"].detach().float().cpu().reshape(n, 3)
    shN = params["shN"].detach().float().cpu()  # [N, K-1, 3]
    if pad_sh_to_degree3 and shN.shape[1] < num_sh_bases(3) - 1:
        shN = torch.cat([shN, torch.zeros(n, num_sh_bases(3) - 1 - shN.shape[1], 3)], dim=1)
    rest = shN.permute(0, 2, 1).reshape(n, -1)  # channel-major
    cols = [
        means,
        torch.zeros(n, 3),
        sh0,
        rest,
        params["opacities"].detach().float().cpu().reshape(n, 1),
        params["scales"].detach().float().cpu().reshape(n, 3),
        params["quats"].detach().float().cpu().reshape(n, 4),
    ]
    data = torch.cat(cols, dim=1).numpy().astype("<f4")
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *_rest_names(shN.shape[1]),
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert data.shape[1] == len(names)
    arr = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        arr[name] = data[:, i]
    return arr


def save_ply(model_or_params, path: str | Path, pad_sh_to_degree3: bool = False, *, up: str = "z") -> int:
    """Write the Gaussians to ``path``. Returns the number of splats written (non-finite rows dropped).

    ``up`` is the file's frame (:data:`.orientation.UP_AXES`; default ``"z"``, splatgen's own, bytes as
    before). The write is atomic: a temporary file in the same folder, then one rename.

    Raises:
        SplatgenError: ``up`` is not one of ``"z"``, ``"y"``, ``"-y"``, or no Gaussian to write (none
            given, or all non-finite).
    """
    check_up(up)
    params = model_or_params.state() if isinstance(model_or_params, GaussianModel) else model_or_params
    params = drop_non_finite({k: v.detach().cpu() for k, v in params.items()}, path)
    if up != "z":
        params = to_frame(params, up)
    arr = gaussians_to_ply_array(params, pad_sh_to_degree3)
    comments = [] if up == "z" else [f"{UP_COMMENT}{up}"]
    ply = PlyData([PlyElement.describe(arr, "vertex")], text=False, byte_order="<", comments=comments)
    atomic_write(path, ply.write)
    return int(arr.shape[0])


def load_ply(path: str | Path, device: torch.device | str = "cpu") -> GaussianModel:
    """Read a 3DGS ``.ply`` (any SH degree 0-3) back into a :class:`GaussianModel`, bit-exact.

    A file whose header says ``comment splatgen up=<axis>`` (written with ``up`` other than ``"z"``) is
    turned back into splatgen's frame (exact for positions, to float rounding for rotations and SH).
    """
    path = Path(path)
    if not path.is_file():
        raise SplatgenError(f"no .ply file at {path}")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"]
    except Exception as exc:  # plyfile raises several types for malformed files
        raise SplatgenError(f"{path} is not a readable PLY file ({type(exc).__name__}: {exc})") from None
    ups = [c[len(UP_COMMENT):].strip() for c in ply.comments if c.startswith(UP_COMMENT)]
    names = [p.name for p in vertex.properties]
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [r for r in required if r not in names]
    if missing:
        raise SplatgenError(f"{path} is not a 3DGS splat file: missing properties {missing}")
    n_rest_values = sum(1 for nm in names if nm.startswith("f_rest_"))
    k = n_rest_values // 3 + 1
    degree = int(round(math.sqrt(k))) - 1
    if n_rest_values % 3 or num_sh_bases(degree) != k:
        raise SplatgenError(f"{path}: {n_rest_values} f_rest values do not form SH bands of degree 0-3")
    col = lambda *ns: torch.from_numpy(np.stack([np.asarray(vertex[nm], dtype=np.float32) for nm in ns], axis=1))  # noqa: E731
    n = len(vertex.data)
    if n == 0:
        raise SplatgenError(f"{path} holds no Gaussians (0 vertices)")
    rest = col(*_rest_names(k - 1)) if k > 1 else torch.zeros(n, 0)
    params = {
        "means": col("x", "y", "z"),
        "sh0": col("f_dc_0", "f_dc_1", "f_dc_2").reshape(n, 1, 3),
        "shN": rest.reshape(n, 3, k - 1).permute(0, 2, 1).contiguous(),
        "opacities": col("opacity").reshape(n),
        "scales": col("scale_0", "scale_1", "scale_2"),
        "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
    }
    # Rows with NaN/Inf are dropped (warned), as save_ply drops them: one would poison every render and metric.
    try:
        params = drop_non_finite(params, path, reading=True)
    except SplatgenError:
        raise SplatgenError(f"{path} holds no usable Gaussian: all {n} have NaN or Inf parameters") from None
    if ups and ups[0] != "z":
        try:
            params = from_frame(params, check_up(ups[0]))
        except SplatgenError as exc:
            raise SplatgenError(f"{path}: header comment '{UP_COMMENT}{ups[0]}': {exc}") from None
    # Files padded to degree 3 with zero bands load as degree 3; that renders identically.
    return GaussianModel.from_tensors(sh_degree=degree, **{kk: v.to(device) for kk, v in params.items()})
