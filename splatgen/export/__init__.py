"""Files for the tools people use, chosen by the file's extension (:func:`export_format`):

| extension | what | module | default ``up`` |
| --- | --- | --- | --- |
| ``.ply`` | standard 3DGS splats (INRIA layout; SuperSplat, three.js viewers, gsplat) | :mod:`.ply` | ``-y`` |
| ``.splat`` | antimatter15's 32-byte records (web viewers) | :mod:`.splat` | ``-y`` |
| ``.spz`` | Niantic's compressed splats, v3 | :mod:`.spz` | ``y`` |
| ``.splats.glb`` | glTF 2.0 with ``KHR_gaussian_splatting`` (Babylon.js, PlayCanvas, Cesium) | :mod:`.gltf_splats` | ``y`` |
| ``.glb``, ``.obj`` | a closed, textured triangle mesh (Blender, game engines, any glTF viewer) | :mod:`.mesh` | ``y`` |
| ``.mp4``, ``.gif`` | a turntable video | :mod:`.video` | (n/a) |

``up`` (:mod:`.orientation`) is the axis that points up in the file: ``z`` (splatgen's own frame, front +X),
``y`` (+Y up, front +Z: glTF, three.js, SPZ) or ``-y`` (camera-style, what SuperSplat expects). A run folder's
own ``splats.ply`` stays in splatgen's frame (``z``): it is the run's working file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import SplatgenError
from .gltf_splats import read_gltf_splats, write_gltf_splats
from .images import save_image_grid
from .orientation import DEFAULT_UP, UP_AXES
from .ply import gaussians_to_ply_array, load_ply, save_ply
from .splat import read_splat, write_splat
from .spz import read_spz, write_spz
from .video import render_turntable, write_turntable

#: every extension ``splatgen export`` writes, longest first (``.splats.glb`` before ``.glb``)
EXTENSIONS = (".splats.glb", ".ply", ".splat", ".spz", ".glb", ".obj", ".mp4", ".gif")
SPLAT_FORMATS = ("ply", "splat", "spz", "splats.glb")
MESH_FORMATS = ("glb", "obj")
VIDEO_FORMATS = ("mp4", "gif")


def export_format(path: str | Path) -> str:
    """The format a file name asks for (``"ply"``, ``"splats.glb"``, ``"glb"``, ``"mp4"``...).

    Raises:
        SplatgenError: an extension splatgen does not write (the message lists those it does).
    """
    name = Path(path).name.lower()
    for ext in EXTENSIONS:
        if name.endswith(ext) and len(name) > len(ext):
            return ext[1:]
    raise SplatgenError(f"cannot export to {path}: unknown extension {Path(path).suffix or '(none)'!r}; "
                        f"allowed: {', '.join(EXTENSIONS)}")


def export_splats(model_or_params, path: str | Path, up: Optional[str] = None, pad_sh_to_degree3: bool = False) -> int:
    """Write Gaussians (a :class:`~splatgen.gaussians.GaussianModel` or gsplat-layout tensors) as splats in the
    format of ``path``'s extension (one of :data:`SPLAT_FORMATS`), in the frame ``up`` (default: the format's,
    :data:`~.orientation.DEFAULT_UP`). Returns the number of splats written."""
    fmt = export_format(path)
    if fmt not in SPLAT_FORMATS:
        raise SplatgenError(f"{path}: {fmt} is not a splat format ({', '.join(SPLAT_FORMATS)})")
    up = up or DEFAULT_UP["glb" if fmt == "splats.glb" else fmt]
    if fmt == "ply":
        return save_ply(model_or_params, path, pad_sh_to_degree3, up=up)
    if pad_sh_to_degree3:
        raise SplatgenError("--pad-sh3 applies to .ply only")
    writer = {"splat": write_splat, "spz": write_spz, "splats.glb": write_gltf_splats}[fmt]
    return writer(model_or_params, path, up=up)


__all__ = [
    "DEFAULT_UP", "EXTENSIONS", "MESH_FORMATS", "SPLAT_FORMATS", "UP_AXES", "VIDEO_FORMATS", "export_format",
    "export_splats", "gaussians_to_ply_array", "load_ply", "read_gltf_splats", "read_splat", "read_spz",
    "render_turntable", "save_image_grid", "save_ply", "write_gltf_splats", "write_splat", "write_spz",
    "write_turntable",
]
