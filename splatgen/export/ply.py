"""The standard 3DGS ``.ply`` (INRIA layout), read by SuperSplat, antimatter15's viewer, gsplat and Unity.

Binary little-endian, one ``vertex`` element, all float32, in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1} opacity scale_0 scale_1 scale_2
    rot_0 rot_1 rot_2 rot_3

``f_dc`` are the SH DC coefficients, ``f_rest`` the higher bands **channel-major** (all R coefficients, then
all G, then all B), ``opacity`` a logit, ``scale_*`` log scales, ``rot_*`` a quaternion w x y z, normals zero.
INRIA's own loader asserts 45 ``f_rest`` values (degree 3): ``pad_sh_to_degree3=True`` writes zeros for the
missing bands. Non-finite rows are dropped (with a warning): one NaN makes some viewers drop every splat.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ..errors import SplatgenError
from ..gaussians import GaussianModel, num_sh_bases


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


def save_ply(model_or_params, path: str | Path, pad_sh_to_degree3: bool = False) -> int:
    """Write the Gaussians to ``path``. Returns the number of splats written (non-finite rows dropped)."""
    params = model_or_params.state() if isinstance(model_or_params, GaussianModel) else model_or_params
    finite = torch.ones(params["means"].shape[0], dtype=torch.bool)
    for v in params.values():
        finite &= torch.isfinite(v.detach().cpu().reshape(v.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        warnings.warn(f"dropping {int((~finite).sum())} Gaussians with non-finite parameters from {path}")
        params = {k: v.detach().cpu()[finite] for k, v in params.items()}
    arr = gaussians_to_ply_array(params, pad_sh_to_degree3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    PlyData([PlyElement.describe(arr, "vertex")], text=False, byte_order="<").write(str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves a half-written file under the final name
    return int(arr.shape[0])


def load_ply(path: str | Path, device: torch.device | str = "cpu") -> GaussianModel:
    """Read a 3DGS ``.ply`` (any SH degree 0-3) back into a :class:`GaussianModel`, bit-exact."""
    path = Path(path)
    if not path.is_file():
        raise SplatgenError(f"no .ply file at {path}")
    try:
        vertex = PlyData.read(str(path))["vertex"]
    except Exception as exc:  # plyfile raises several types for malformed files
        raise SplatgenError(f"{path} is not a readable PLY file ({type(exc).__name__}: {exc})") from None
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
    rest = col(*_rest_names(k - 1)) if k > 1 else torch.zeros(n, 0)
    params = {
        "means": col("x", "y", "z"),
        "sh0": col("f_dc_0", "f_dc_1", "f_dc_2").reshape(n, 1, 3),
        "shN": rest.reshape(n, 3, k - 1).permute(0, 2, 1).contiguous(),
        "opacities": col("opacity").reshape(n),
        "scales": col("scale_0", "scale_1", "scale_2"),
        "quats": col("rot_0", "rot_1", "rot_2", "rot_3"),
    }
    # Files padded to degree 3 with zero bands load as degree 3; that renders identically.
    return GaussianModel.from_tensors(sh_degree=degree, **{kk: v.to(device) for kk, v in params.items()})
