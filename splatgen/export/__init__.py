"""Files for the tools people use, chosen by the file's extension: the format table :data:`.formats.FORMATS`
(``.ply``, ``.splat``, ``.spz``, ``.splats.glb`` splats; ``.glb``, ``.obj`` meshes; ``.mp4``, ``.gif`` turntables)
gives each one's writer, default ``up`` and the tools that open it, and :func:`export_file` writes any of them.

``up`` (:mod:`.orientation`) is the axis that points up in the file: ``z`` (splatgen's own frame, front +X),
``y`` (+Y up, front +Z: glTF, three.js, SPZ) or ``-y`` (camera-style, what SuperSplat expects). A run folder's
own ``splats.ply`` stays in splatgen's frame (``z``): it is the run's working file.
"""

from __future__ import annotations

from .formats import DEFAULT_UP, EXTENSIONS, FORMATS, OPTIONS, ExportFormat, export_file, export_format
from .gltf_splats import read_gltf_splats, write_gltf_splats
from .images import save_image_grid
from .orientation import UP_AXES
from .ply import gaussians_to_ply_array, load_ply, save_ply
from .splat import read_splat, write_splat
from .spz import read_spz, write_spz
from .video import render_turntable, write_turntable

__all__ = [
    "DEFAULT_UP", "EXTENSIONS", "FORMATS", "OPTIONS", "UP_AXES", "ExportFormat", "export_file", "export_format",
    "gaussians_to_ply_array", "load_ply", "read_gltf_splats", "read_splat", "read_spz", "render_turntable",
    "save_image_grid", "save_ply", "write_gltf_splats", "write_splat", "write_spz", "write_turntable",
]
