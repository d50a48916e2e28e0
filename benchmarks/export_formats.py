"""Every splat format splatgen writes, for one finished run: file size, write and read time, and how each
file looks in a real viewer (headless Chromium; the viewers of ``.ci/browser-deps.sh``).

    python benchmarks/export_formats.py /tmp/mug --out benchmarks/results/export

Writes ``OUT/export_formats.json`` (device, date, versions, command, per format: bytes, bytes per Gaussian,
median write and read seconds over ``--repeat`` runs, the silhouette IoU and the mean colour difference
against our renderer from one of our cameras, the up axis) and small PNGs: ``ours.png`` (our renderer), ``<format>.png`` (each file in its
viewer, camera up = the file's up axis, i.e. upright), and ``ply_in_threejs_without_flip.png`` (the
``-y`` ``.ply`` in a three.js viewer that applies none of the flips those viewers document: upside down, as
every camera-style INRIA ``.ply`` is there). Times are wall-clock on whatever machine runs this (the JSON
says which); the browser renders through SwiftShader (a CPU), so nothing here measures viewer speed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from common import environment, write_json  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from splatgen.cameras import orbit_cameras  # noqa: E402
from splatgen.export.gltf_splats import read_gltf_splats, write_gltf_splats  # noqa: E402
from splatgen.export.orientation import DEFAULT_UP  # noqa: E402
from splatgen.export.ply import load_ply, save_ply  # noqa: E402
from splatgen.export.splat import read_splat, write_splat  # noqa: E402
from splatgen.export.spz import read_spz, write_spz  # noqa: E402
from tests.test_browser import (  # noqa: E402  (the tests' viewer pages, used as the baseline here)
    Browser, browser_missing, camera_in_frame, colour_difference, iou, our_render, silhouette,
)

FORMATS = {  # name: (file name, writer, reader, viewer shown in, SH degree the viewer evaluates)
    "ply": ("splats.ply", lambda m, p: save_ply(m, p, up=DEFAULT_UP["ply"]), lambda p: load_ply(p).state(), "spark", 3),
    "splat": ("splats.splat", write_splat, read_splat, "gs3d", 0),
    "spz": ("splats.spz", write_spz, read_spz, "spark", 3),
    "glb": ("splats.splats.glb", write_gltf_splats, read_gltf_splats, "babylon", 3),
}
VIEWER_NAMES = {"spark": "Spark 2.2.0 (three.js)", "gs3d": "GaussianSplats3D 0.4.7 (three.js)",
                "babylon": "Babylon.js 9.28.0 (KHR_gaussian_splatting loader)"}


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished run folder (its splats.ply is read) or a .ply")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=192, help="screenshot size in pixels")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # .splat dropping SH is expected here
    load_at_start = round(os.getloadavg()[0], 2)  # other work on the machine slows every time here

    model = load_ply(args.run if args.run.is_file() else args.run / "splats.ply")
    params = model.state()
    n = len(model)
    args.out.mkdir(parents=True, exist_ok=True)
    cams = orbit_cameras([20.0], [30.0], 2.4, 40.0, args.size)  # front-right, a little above
    ours = our_render(model, cams)
    Image.fromarray((ours * 255).round().astype(np.uint8)).save(args.out / "ours.png")
    ours_sil = silhouette(ours)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, (file, write, read, _, _) in FORMATS.items():
            path = folder / file
            write_s = timed(lambda: write(params, path), args.repeat)
            read_s = timed(lambda: read(path), args.repeat)
            size = path.stat().st_size
            results[name] = {"file": file, "up": DEFAULT_UP[name], "bytes": size, "bytes_per_gaussian": round(size / n, 2),
                             "write_s": round(write_s, 4), "read_s": round(read_s, 4)}
            print(f"{name:6s} {size / 1024:8.1f} KiB  write {write_s * 1e3:7.1f} ms  read {read_s * 1e3:7.1f} ms")
        why = browser_missing(["spark", "gs3d", "babylon"])
        if why:
            print(f"no screenshots: {why}")
        else:
            browser = Browser(folder)
            try:
                for name, (file, _, _, viewer, sh) in FORMATS.items():
                    view = camera_in_frame(cams, 0, DEFAULT_UP[name])
                    shot = browser.shot(file, viewer, view, sh_degree=sh, save=args.out / f"{name}.png")
                    score = round(iou(ours_sil, silhouette(shot)), 4)
                    colour = round(colour_difference(ours, shot), 2)
                    results[name].update(viewer=VIEWER_NAMES[viewer], silhouette_iou=score, mean_colour_diff_8bit=colour)
                    print(f"{name:6s} in {VIEWER_NAMES[viewer]}: silhouette IoU {score:.3f}, colour {colour:.1f} levels")
                # the '-y' .ply where three.js puts it with no flip: camera up +Y (three.js's default)
                raw = dict(camera_in_frame(cams, 0, "y"))
                raw_view = dict(camera_in_frame(cams, 0, DEFAULT_UP["ply"]), up=raw["up"])
                browser.shot("splats.ply", "spark", raw_view, sh_degree=3, save=args.out / "ply_in_threejs_without_flip.png")
                # SuperSplat turns every file 180 degrees about Z: emulated in Spark, seen with +Y up
                shot = browser.shot("splats.ply", "spark", camera_in_frame(cams, 0, "y"), sh_degree=3,
                                    save=args.out / "ply_as_supersplat_turns_it.png", turn_z=math.pi)
                results["ply"]["supersplat_emulated_iou"] = round(iou(ours_sil, silhouette(shot)), 4)
            finally:
                browser.close()
    env = environment()
    env.update(versions())
    env["load_average_1m_at_start"] = load_at_start
    env["note"] = ("times are wall-clock medians on the machine named in 'device' (this project's 2-core CPU machine, "
                   "shared: see load_average_1m_at_start); screenshots are rendered by SwiftShader (CPU WebGL)")
    write_json(args.out / "export_formats.json", {
        "run": str(args.run), "gaussians": n, "sh_degree": model.sh_degree, "camera": {
            "elevation": 20.0, "azimuth": 30.0, "radius": 2.4, "fovy": 40.0, "size": args.size},
        "formats": results, "env": env,
    })
    print(f"wrote {args.out / 'export_formats.json'}")


def versions() -> dict:
    """Versions of what produced the files and the screenshots."""
    import importlib.metadata as md
    import json
    import shutil
    import subprocess

    from tests.test_browser import NODE_MODULES

    out = {"chromium": None}
    for dist in ("numpy", "plyfile", "gsply", "pygltflib", "playwright"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    chromium = shutil.which("chromium")
    if chromium:
        out["chromium"] = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    for pkg in ("three", "@sparkjsdev/spark", "@mkkellogg/gaussian-splats-3d", "babylonjs", "babylonjs-loaders"):
        meta = NODE_MODULES / pkg / "package.json"
        out[f"npm:{pkg}"] = json.loads(meta.read_text())["version"] if meta.is_file() else None
    return out


if __name__ == "__main__":
    main()
