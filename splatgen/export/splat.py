"""antimatter15's ``.splat``: 32 bytes per Gaussian, no header, view-independent colour.

Each record, little-endian (the layout of antimatter15/splat's ``convert.py`` and ``main.js``)::

    offset  0  position     3 x float32   x y z
    offset 12  scale        3 x float32   linear standard deviations exp(s)
    offset 24  colour       4 x uint8     R G B = (0.5 + C0 * f_dc) * 255, A = sigmoid(opacity) * 255
    offset 28  rotation     4 x uint8     q / |q| * 128 + 128, in w x y z order

Records are sorted by ``-exp(s0 + s1 + s2) * sigmoid(opacity)`` (big, opaque splats first), as the reference
converter does; viewers sort per frame anyway. Bytes are rounded to nearest and clipped to [0, 255] (the
reference viewer's ``Uint8ClampedArray`` semantics), so colour and opacity are within half a step (1/510) of
the exact value, and each component of the unit quaternion within 1/256 (1/128 for a component of 1, whose
256 is clipped to 255).

What the format cannot hold: higher SH bands (dropped, with a warning when they are not zero), colours
outside [0, 1] (clipped), opacities finer than 1/255 (below 1/510 they become 0), a quaternion's norm. Written in the frame
of ``up`` (default ``-y``, :mod:`.orientation`); :func:`read_splat` needs the same ``up`` to turn the file
back into splatgen's frame, since the format has nowhere to record it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import Tensor

from ..errors import SplatgenError
from ..fileio import atomic_write_bytes
from ..gaussians import SH_C0
from .orientation import DEFAULT_UP, check_up, export_params, from_frame

RECORD_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
"""One ``.splat`` record (32 bytes)."""
assert RECORD_DTYPE.itemsize == 32


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def splat_records(params: Dict[str, Tensor]) -> np.ndarray:
    """The sorted ``.splat`` records [N] (:data:`RECORD_DTYPE`) of finite CPU Gaussians, in their frame."""
    means = params["means"].double().numpy()
    log_scales = params["scales"].double().numpy()
    opacity = torch.sigmoid(params["opacities"].double()).numpy()
    rgb = 0.5 + SH_C0 * params["sh0"].double().reshape(-1, 3).numpy()
    q = params["quats"].double().numpy()
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))  # gsplat: |q|=0 -> identity
    order = np.argsort(-np.exp(log_scales.sum(axis=1)) * opacity, kind="stable")
    rec = np.empty(means.shape[0], dtype=RECORD_DTYPE)
    rec["position"] = means[order]
    rec["scale"] = np.exp(log_scales[order])
    rec["rgba"][:, :3] = _to_u8(rgb[order] * 255.0)
    rec["rgba"][:, 3] = _to_u8(opacity[order] * 255.0)
    rec["rot"] = _to_u8(q[order] * 128.0 + 128.0)
    return rec


def write_splat(model_or_params, path: str | Path, *, up: str = DEFAULT_UP["splat"]) -> int:
    """Write Gaussians (a :class:`~splatgen.gaussians.GaussianModel` or its ``state()`` dict) as ``.splat``.

    Returns the number of splats written (non-finite rows dropped with a warning). Atomic: a temporary
    file in the same folder, then one rename.

    Raises:
        SplatgenError: unknown ``up``, malformed parameters, or no finite Gaussian to write.
    """
    params = export_params(model_or_params, path, up)
    if params["shN"].numel() and bool((params["shN"] != 0).any()):
        warnings.warn(f"{path}: .splat holds one colour per splat; the {params['shN'].shape[1]} higher SH "
                      "coefficients per splat (view-dependent colour) are dropped")
    rec = splat_records(params)
    atomic_write_bytes(path, rec.tobytes())
    return int(rec.shape[0])


def read_splat(path: str | Path, *, up: str = DEFAULT_UP["splat"]) -> Dict[str, Tensor]:
    """Read a ``.splat`` written in the frame of ``up`` into gsplat-layout tensors in splatgen's frame.

    Returns ``means, scales (log), quats (w x y z, unit up to the byte rounding), opacities (logit),
    sh0 [N,1,3], shN [N,0,3]``. Opacity bytes 0 and 255 read as 0.5/255 and 254.5/255 (finite logits).

    Raises:
        SplatgenError: no such file, or its size is not a multiple of 32 bytes.
    """
    check_up(up)
    path = Path(path)
    if not path.is_file():
        raise SplatgenError(f"no .splat file at {path}")
    data = path.read_bytes()
    if len(data) % RECORD_DTYPE.itemsize:
        raise SplatgenError(f"{path} is not a .splat file: {len(data)} bytes is not a multiple of 32")
    rec = np.frombuffer(data, dtype=RECORD_DTYPE)
    rgba = rec["rgba"].astype(np.float64)
    alpha = np.clip(rgba[:, 3], 0.5, 254.5) / 255.0
    n = rec.shape[0]
    params = {
        "means": torch.from_numpy(rec["position"].astype(np.float32)),
        "scales": torch.from_numpy(np.log(rec["scale"].astype(np.float64)).astype(np.float32)),
        "quats": torch.from_numpy(((rec["rot"].astype(np.float64) - 128.0) / 128.0).astype(np.float32)),
        "opacities": torch.from_numpy(np.log(alpha / (1.0 - alpha)).astype(np.float32)),
        "sh0": torch.from_numpy(((rgba[:, :3] / 255.0 - 0.5) / SH_C0).astype(np.float32)).reshape(n, 1, 3),
        "shN": torch.zeros(n, 0, 3),
    }
    return from_frame(params, up)
