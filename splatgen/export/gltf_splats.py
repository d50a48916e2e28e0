"""glTF 2.0 binary (``.splats.glb``) with the Khronos ``KHR_gaussian_splatting`` extension.

Follows the extension's specification (KhronosGroup/glTF, ``extensions/2.0/Khronos/KHR_gaussian_splatting``)
and the core glTF 2.0 rules it builds on:

- one node with one mesh with one primitive, ``mode`` 0 (POINTS), no material, no node transform;
  ``extensionsUsed: ["KHR_gaussian_splatting"]`` and *not* ``extensionsRequired``, so a viewer without
  the extension falls back to a coloured point cloud, as the spec intends;
- the primitive's extension object: ``kernel: "ellipse"`` and ``colorSpace: "srgb_rec709_display"``
  (both required; 3DGS colours are display-referred sRGB values, which is what splatgen's renderer
  composites), plus the defaults spelled out, ``projection: "perspective"``,
  ``sortingMethod: "cameraDistance"``;
- attributes, each its own tightly packed float32 accessor and buffer view (target ARRAY_BUFFER, 4-byte
  aligned):

  ========================================== ====== ===========================================================
  semantic                                    type   value
  ========================================== ====== ===========================================================
  ``POSITION``                                VEC3   the mean (``min``/``max`` given, as glTF requires)
  ``KHR_gaussian_splatting:ROTATION``         VEC4   unit quaternion, x y z w (glTF order)
  ``KHR_gaussian_splatting:SCALE``            VEC3   linear scale exp(s), >= 0
  ``KHR_gaussian_splatting:OPACITY``          SCALAR sigmoid(opacity), in [0, 1]
  ``KHR_gaussian_splatting:SH_DEGREE_0_COEF_0`` VEC3 the SH DC coefficient (RGB)
  ``KHR_gaussian_splatting:SH_DEGREE_l_COEF_n`` VEC3 band l = 1..3, n = 0..2l for m = -l..l (all of a band)
  ``COLOR_0``                                 VEC4   fallback: clamp(0.5 + C0 f_dc, 0, 1) decoded from sRGB to
                                                     linear (glTF's COLOR_0 is linear), alpha = opacity
  ========================================== ====== ===========================================================

The SH basis and its constants are the spec's Appendix A (real SH with the Condon-Shortley phase), the
same as gsplat's, so coefficients are copied unchanged; they are evaluated with world directions, so
they are rotated with the Gaussians into glTF's frame (:mod:`.orientation`). glTF is +Y up with the front
of an asset facing +Z: the default ``up="y"`` writes exactly that. Another ``up`` is allowed (and recorded
in ``asset.extras.splatgen_up`` for :func:`read_gltf_splats`) but every glTF viewer will show it turned.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import SplatgenError
from ..fileio import atomic_write_bytes
from ..gaussians import SH_C0
from .orientation import DEFAULT_UP, check_up, export_params, from_frame

EXTENSION = "KHR_gaussian_splatting"
GLB_MAGIC, GLB_VERSION = 0x46546C67, 2  # "glTF"
CHUNK_JSON, CHUNK_BIN = 0x4E4F534A, 0x004E4942  # "JSON", "BIN\0"
FLOAT, ARRAY_BUFFER, POINTS = 5126, 34962, 0
_TYPES = {1: "SCALAR", 3: "VEC3", 4: "VEC4"}


def sh_semantic(degree: int, coef: int) -> str:
    """Attribute name of SH band ``degree`` coefficient ``coef`` (``coef = l + m``)."""
    return f"{EXTENSION}:SH_DEGREE_{degree}_COEF_{coef}"


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def gltf_attributes(params: Dict[str, Tensor]) -> List[Tuple[str, np.ndarray]]:
    """(semantic, float32 array [N] or [N, C]) per attribute of finite CPU Gaussians, in their frame."""
    n = params["means"].shape[0]
    q = params["quats"].double().numpy()
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))  # |q|=0 -> identity
    opacity = torch.sigmoid(params["opacities"].double()).numpy()
    sh0 = params["sh0"].double().reshape(n, 3).numpy()
    color = np.concatenate([_srgb_to_linear(np.clip(0.5 + SH_C0 * sh0, 0.0, 1.0)), opacity[:, None]], axis=1)
    attrs = [
        ("POSITION", params["means"].double().numpy()),
        (f"{EXTENSION}:ROTATION", q[:, [1, 2, 3, 0]]),  # w x y z -> x y z w
        (f"{EXTENSION}:SCALE", np.exp(params["scales"].double().numpy())),
        (f"{EXTENSION}:OPACITY", opacity),
        (sh_semantic(0, 0), sh0),
    ]
    shN = params["shN"].double().numpy()
    for k in range(shN.shape[1]):  # shN index k is basis k + 1 = l^2 + l + m
        l = int(np.floor(np.sqrt(k + 1)))
        attrs.append((sh_semantic(l, k + 1 - l * l), shN[:, k, :]))
    attrs.append(("COLOR_0", color))
    return [(name, np.ascontiguousarray(a, dtype="<f4")) for name, a in attrs]


def glb_bytes(params: Dict[str, Tensor], up: str = "y") -> bytes:
    """The ``.glb`` file of finite CPU Gaussians (already in the frame of ``up``)."""
    n = params["means"].shape[0]
    blobs, views, accessors, attributes = [], [], [], {}
    offset = 0
    for i, (name, arr) in enumerate(gltf_attributes(params)):
        data = arr.tobytes()
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": ARRAY_BUFFER})
        acc = {"bufferView": i, "componentType": FLOAT, "count": n, "type": _TYPES[1 if arr.ndim == 1 else arr.shape[1]]}
        if name == "POSITION":
            acc["min"] = [float(v) for v in arr.min(axis=0)]
            acc["max"] = [float(v) for v in arr.max(axis=0)]
        accessors.append(acc)
        attributes[name] = i
        blobs.append(data)
        offset += len(data)  # float32 data: every view starts 4-byte aligned
    doc = {
        "asset": {"version": "2.0", "generator": "splatgen"},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "splats"}],
        "meshes": [{"name": "splats", "primitives": [{
            "attributes": attributes,
            "mode": POINTS,
            "extensions": {EXTENSION: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
                                       "projection": "perspective", "sortingMethod": "cameraDistance"}},
        }]}],
        "buffers": [{"byteLength": offset}],
        "bufferViews": views,
        "accessors": accessors,
    }
    if up != "y":
        doc["asset"]["extras"] = {"splatgen_up": up}
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    binary = b"".join(blobs)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join([struct.pack("<III", GLB_MAGIC, GLB_VERSION, total),
                     struct.pack("<II", len(js), CHUNK_JSON), js,
                     struct.pack("<II", len(binary), CHUNK_BIN), binary])


def write_gltf_splats(model_or_params, path: str | Path, *, up: str = DEFAULT_UP["glb"]) -> int:
    """Write Gaussians (a :class:`~splatgen.gaussians.GaussianModel` or its ``state()`` dict) as a ``.glb``
    with ``KHR_gaussian_splatting``. Returns the number of splats written (non-finite rows dropped with a
    warning). Atomic: a temporary file in the same folder, then one rename.

    Raises:
        SplatgenError: unknown ``up``, malformed parameters, or no finite Gaussian to write.
    """
    params = export_params(model_or_params, path, up)
    data = glb_bytes(params, up)
    atomic_write_bytes(path, data)
    return int(params["means"].shape[0])


def read_gltf_splats(path: str | Path) -> Dict[str, Tensor]:
    """Read a ``.glb`` written by :func:`write_gltf_splats` (or any single-buffer GLB whose first primitive
    carries ``KHR_gaussian_splatting`` with float accessors) into gsplat-layout tensors in splatgen's frame:
    ``means, scales (log), quats (w x y z), opacities (logit), sh0 [N,1,3], shN [N,K-1,3]``.

    Raises:
        SplatgenError: no such file, not a GLB, or no Gaussian-splatting primitive with float attributes.
    """
    path = Path(path)
    if not path.is_file():
        raise SplatgenError(f"no .glb file at {path}")
    blob = path.read_bytes()
    if len(blob) < 20 or struct.unpack_from("<I", blob)[0] != GLB_MAGIC:
        raise SplatgenError(f"{path} is not a binary glTF (.glb) file")
    js_len, js_type = struct.unpack_from("<II", blob, 12)
    if js_type != CHUNK_JSON:
        raise SplatgenError(f"{path} is not a valid .glb: its first chunk is not JSON")
    doc = json.loads(blob[20:20 + js_len])
    at = 20 + js_len
    binary = blob[at + 8:at + 8 + struct.unpack_from("<I", blob, at)[0]] if at + 8 <= len(blob) else b""
    try:
        prim = next(p for m in doc["meshes"] for p in m["primitives"] if EXTENSION in p.get("extensions", {}))
    except (KeyError, StopIteration):
        raise SplatgenError(f"{path} has no mesh primitive with {EXTENSION}") from None

    def read(name: str, width: int) -> np.ndarray:
        if name not in prim["attributes"]:
            raise SplatgenError(f"{path}: the {EXTENSION} primitive has no {name} attribute")
        acc = doc["accessors"][prim["attributes"][name]]
        view = doc["bufferViews"][acc["bufferView"]]
        if acc["componentType"] != FLOAT or view.get("byteStride", 4 * width) != 4 * width:
            raise SplatgenError(f"{path}: {name} is not tightly packed float32; splatgen reads only those")
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        arr = np.frombuffer(binary, dtype="<f4", count=acc["count"] * width, offset=start)
        return arr.reshape(acc["count"], width) if width > 1 else arr

    means = read("POSITION", 3)
    n = means.shape[0]
    degree = 0
    while degree < 3 and sh_semantic(degree + 1, 0) in prim["attributes"]:
        degree += 1
    rest = [read(sh_semantic(l, c), 3) for l in range(1, degree + 1) for c in range(2 * l + 1)]
    opacity = np.clip(read(f"{EXTENSION}:OPACITY", 1).astype(np.float64), 1e-7, 1 - 1e-7)
    f32 = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731  (a writable copy)
    params = {
        "means": f32(means),
        "scales": f32(np.log(read(f"{EXTENSION}:SCALE", 3).astype(np.float64))),
        "quats": f32(read(f"{EXTENSION}:ROTATION", 4)[:, [3, 0, 1, 2]]),
        "opacities": f32(np.log(opacity / (1.0 - opacity))),
        "sh0": f32(read(sh_semantic(0, 0), 3)).reshape(n, 1, 3),
        "shN": f32(np.stack(rest, axis=1)) if rest else torch.zeros(n, 0, 3),
    }
    up = doc.get("asset", {}).get("extras", {}).get("splatgen_up", "y")
    return from_frame(params, check_up(up))
