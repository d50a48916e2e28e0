"""The export formats, one row per file extension: :data:`FORMATS`.

Each row says what the file holds, the axis that points up in it unless ``up`` says otherwise (from
:data:`.orientation.DEFAULT_UP`, whose module says why each format gets its axis), which tools open it upright,
the options it takes and the function that writes it. Everything that lists formats reads this table:
``splatgen export`` (its dispatch and its ``--help``), ``GenerationResult.export`` and ``save_ply``
(:mod:`splatgen.api`), and the README's format table (checked against it by ``tests/test_export_api.py``).
Adding a format is a row here, its writer module and its entry in ``DEFAULT_UP``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import SplatgenError
from ..gaussians import GaussianModel
from .gltf_splats import write_gltf_splats
from .mesh import export_mesh
from .orientation import DEFAULT_UP
from .ply import save_ply
from .splat import write_splat
from .spz import write_spz
from .video import write_turntable

#: every option a format may take and its default, the same for ``splatgen export`` (``--mesh-resolution``...)
#: and ``GenerationResult.export(mesh_resolution=...)``
OPTIONS: Dict[str, Any] = {
    "pad_sh3": False,  # .ply: pad SH to degree 3 (45 f_rest values, INRIA's loader)
    "mesh_resolution": 128, "iso": None, "faces": 20000, "texture_size": 1024,  # meshes
    "kind": "rgb", "frames": 120, "fps": 30.0, "resolution": None, "progress": None,  # turntable videos:
    "elevation": 15.0, "radius": 2.25, "turns": 1.0,  # the orbit,
    "camera_path": None,  # or one camera per frame (a JSON file or a list: video.read_camera_path)
}
_MESH_OPTIONS = ("mesh_resolution", "iso", "faces", "texture_size")
_VIDEO_OPTIONS = ("kind", "frames", "fps", "resolution", "progress", "elevation", "radius", "turns", "camera_path")


def _gaussians(source) -> Any:
    """What the splat and mesh writers take: a representation's splats (a NeRF: its density as splats), a
    GaussianModel's tensors, or gsplat-layout tensors as given."""
    if hasattr(source, "splat_params"):
        return source.splat_params()
    return source.state() if isinstance(source, GaussianModel) else source


def _write_ply(source, path: Path, up: str, pad_sh3: bool) -> str:
    return f"{path} ({save_ply(_gaussians(source), path, pad_sh3, up=up)} Gaussians)"


def _splats_writer(write: Callable[..., int]) -> Callable[..., str]:
    """A table writer for a splat format without options: ``write(params, path, up=...)`` returns the count."""
    return lambda source, path, up: f"{path} ({write(_gaussians(source), path, up=up)} Gaussians)"


def _write_mesh(source, path: Path, up: str, mesh_resolution: int, iso: Optional[float], faces: int,
                texture_size: int) -> str:
    res = export_mesh(_gaussians(source), path, up=up, resolution=mesh_resolution, iso=iso, target_faces=faces,
                      texture_size=texture_size)
    extra = " (+ .mtl and .png beside it)" if path.suffix.lower() == ".obj" else ""
    # the file splits its vertices along UV seams (one per texture coordinate): closed only once welded
    return (f"{path}{extra} ({res.num_faces} faces, iso {res.iso:.3g}, "
            f"{'' if res.watertight else 'not '}watertight with its UV seams welded)")


def _write_video(source, path: Path, up: None, **options: Any) -> str:
    fps = options.pop("fps")
    return str(write_turntable(source, path, fps=fps, **options))


@dataclass(frozen=True)
class ExportFormat:
    """One file format splatgen writes."""

    extension: str
    """The file name's ending, with its dot (``.splats.glb`` is one extension)."""
    kind: str
    """``"splats"``, ``"mesh"`` (both written from the Gaussians) or ``"video"`` (filmed from the representation,
    so a NeRF run is filmed as a NeRF)."""
    holds: str
    """What the file holds, in one line."""
    default_up: Optional[str]
    """The up axis (:data:`.orientation.UP_AXES`) written unless ``up`` is given; None: no frame (a video)."""
    opens: str
    """The tools that show it upright with the default ``up``."""
    write: Callable[..., str]
    """``write(source, path, up, **options)``: writes the file, returns what was written for a "wrote" line."""
    options: Tuple[str, ...] = ()
    """The :data:`OPTIONS` it takes."""

    @property
    def name(self) -> str:
        return self.extension[1:]


FORMATS: Tuple[ExportFormat, ...] = (
    ExportFormat(".ply", "splats", "3DGS splats, INRIA's layout", DEFAULT_UP["ply"],
                 "SuperSplat, antimatter15's viewer; Spark and GaussianSplats3D with `--up=y`", _write_ply,
                 ("pad_sh3",)),
    ExportFormat(".splat", "splats", "splats as antimatter15's 32-byte records, half the .ply", DEFAULT_UP["splat"],
                 "SuperSplat, antimatter15's viewer; Spark and GaussianSplats3D with `--up=y`",
                 _splats_writer(write_splat)),
    ExportFormat(".spz", "splats", "Niantic's compressed splats (SPZ v3), a quarter of the .ply", DEFAULT_UP["spz"],
                 "Spark (the format's +Y-up axes)", _splats_writer(write_spz)),
    ExportFormat(".splats.glb", "splats", "glTF 2.0 splats (`KHR_gaussian_splatting`)", DEFAULT_UP["splats.glb"],
                 "Babylon.js, PlayCanvas, Cesium (glTF's +Y up)", _splats_writer(write_gltf_splats)),
    ExportFormat(".glb", "mesh", "a closed, textured mesh, front facing +Z", DEFAULT_UP["glb"],
                 "Blender, Unity, Unreal, three.js, any glTF viewer", _write_mesh, _MESH_OPTIONS),
    ExportFormat(".obj", "mesh", "the same mesh as OBJ, with a .mtl and a .png beside it", DEFAULT_UP["obj"],
                 "Blender, any OBJ tool", _write_mesh, _MESH_OPTIONS),
    ExportFormat(".mp4", "video",
                 f"a turntable video (H.264), {OPTIONS['frames']} frames at {OPTIONS['fps']:g} fps from the front",
                 None, "any player and browser", _write_video, _VIDEO_OPTIONS),
    ExportFormat(".gif", "video", "the turntable as a GIF", None, "any browser", _write_video, _VIDEO_OPTIONS),
)

#: each format by its name (the extension without its first dot: ``"ply"``, ``"splats.glb"``)
BY_NAME: Dict[str, ExportFormat] = {f.name: f for f in FORMATS}

#: every extension splatgen writes
EXTENSIONS: Tuple[str, ...] = tuple(f.extension for f in FORMATS)


def export_format(path: str | Path) -> ExportFormat:
    """The format a file name asks for, by its extension.

    Raises:
        SplatgenError: an extension splatgen does not write (the message lists those it does).
    """
    name = Path(path).name.lower()
    for f in sorted(FORMATS, key=lambda f: len(f.extension), reverse=True):  # .splats.glb before .glb
        if name.endswith(f.extension) and len(name) > len(f.extension):
            return f
    raise SplatgenError(f"cannot export to {path}: unknown extension {Path(path).suffix or '(none)'!r}; "
                        f"allowed: {', '.join(EXTENSIONS)}")


def export_file(source, path: str | Path, up: Optional[str] = None, **options: Any) -> str:
    """Write ``source`` as the file ``path`` names, with the format's default ``up`` and :data:`OPTIONS` unless
    given: what ``splatgen export`` and ``GenerationResult.export`` both do. Returns what was written
    (``"mug.ply (3712 Gaussians)"``).

    ``source`` is a representation (a run's Gaussians or NeRF), a
    :class:`~splatgen.gaussians.GaussianModel` or gsplat-layout tensors (a video also takes what
    :func:`.video.render_turntable` films).

    Raises:
        SplatgenError: an unknown extension, an option the format does not take (the message lists those it
            does), ``up`` for a video, or any error of the writer.
    """
    fmt = export_format(path)
    wrong = sorted(set(options) - set(fmt.options))
    if wrong:
        raise SplatgenError(f"{fmt.extension} takes no option {', '.join(wrong)}; its options: "
                            f"{', '.join(o for o in fmt.options if o != 'progress') or 'none'}")
    if up is not None and fmt.kind == "video":
        raise SplatgenError(f"up does not apply to {fmt.extension}: a turntable is filmed upright in splatgen's frame")
    return fmt.write(source, Path(path), up or fmt.default_up, **{**{o: OPTIONS[o] for o in fmt.options}, **options})
