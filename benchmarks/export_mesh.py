"""Textured meshes from Gaussians against the procedural world's ground truth, on this machine.

For each generated run (a run folder of a world prompt) and each known-answer model (flat Gaussians lying
exactly on a world object's true surface, :func:`splatgen.world.mesh_metrics.surface_gaussians`), meshes
the Gaussians with each iso-level rule and measures the mesh (:func:`splatgen.world.mesh_metrics.evaluate_mesh`):
Chamfer to the true surface, silhouette IoU over the held-out views, foreground PSNR of the textured mesh,
watertightness, faces and seconds; beside it the Gaussians' own IoU / Chamfer (centres) for reference.
Writes ``mesh.json`` and, per object, ``mesh_<name>.png``: the Gaussians rendered (top row) above the
textured mesh (middle row, default rule) and the ground truth (bottom row), four views.

    python benchmarks/export_mesh.py /tmp/mesh_runs/gpu/* /tmp/mesh_runs/red-mug --out benchmarks/results/export
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

from splatgen.cameras import orbit_cameras  # noqa: E402
from splatgen.export import load_ply  # noqa: E402
from splatgen.export.images import save_image_grid  # noqa: E402
from splatgen.export.mesh import mesh_from_gaussians  # noqa: E402
from splatgen.gaussians import GaussianModel  # noqa: E402
from splatgen.render import render  # noqa: E402
from splatgen.world import parse_prompt  # noqa: E402
from splatgen.world.metrics import evaluate_gaussians  # noqa: E402
from splatgen.world.mesh_metrics import evaluate_mesh, render_mesh, surface_gaussians  # noqa: E402
from splatgen.world.raycast import render_world  # noqa: E402

#: the default rule first (its mesh is the one drawn); "silhouette-tol0.01" is the same rule taking the
#: highest level within 0.01 IoU of the best, "alpha" the fixed level 0.5, "fixed1" DreamGaussian's fixed
#: density threshold 1
RULES = {"silhouette": dict(iso_rule="silhouette"), "silhouette-tol0.01": dict(iso_rule="silhouette", iso_tolerance=0.01),
         "alpha": dict(iso_rule="alpha"), "fixed1": dict(iso=1.0)}


def versions() -> Dict[str, str]:
    out = {}
    for name, mod in [("scikit-image", "skimage"), ("trimesh", "trimesh"), ("xatlas", "xatlas"),
                      ("fast-simplification", "fast_simplification"), ("scipy", "scipy"), ("numpy", "numpy")]:
        try:
            m = __import__(mod)
            out[name] = getattr(m, "__version__", None) or __import__("importlib.metadata").metadata.version(name)
        except Exception:
            out[name] = None
    return out


def picture(model: GaussianModel, mesh, obj, path: Path, size: int = 192) -> None:
    cams = orbit_cameras([15.0, 15.0, 15.0, 40.0], [0.0, 90.0, 180.0, 270.0], 2.25, 45.0, size)
    with torch.no_grad():
        gs = render(model, cams, torch.ones(len(cams), 3)).rgb.clamp(0, 1)
    ms = render_mesh(torch.as_tensor(mesh.vertices), torch.as_tensor(mesh.faces), torch.as_tensor(mesh.uvs),
                     torch.as_tensor(mesh.texture), cams)["rgb"]
    gt = render_world(obj, cams, supersample=2)["rgb"]
    save_image_grid(torch.cat([gs, ms, gt]), path, cols=len(cams))


def measure(name: str, model: GaussianModel, obj, rules: List[str], out: Path, options: Dict[str, Any]) -> Dict[str, Any]:
    row: Dict[str, Any] = {"name": name, "caption": obj.caption, "num_gaussians": len(model)}
    ref = evaluate_gaussians(model, obj)
    row["gaussians"] = {k: ref[k] for k in ("iou", "psnr_fg", "chamfer", "chamfer_acc", "chamfer_comp")}
    for rule in rules:
        load0 = os.getloadavg()[0]
        try:
            mesh = mesh_from_gaussians(model, **RULES[rule], **options)
        except Exception as exc:  # a fixed level may have no surface: record it
            row[rule] = {"error": f"{type(exc).__name__}: {exc}"}
            print(name, rule, row[rule]["error"], flush=True)
            continue
        m = evaluate_mesh(mesh, obj)
        m.update(iso_silhouette_iou=mesh.iso_silhouette_iou, decimation=mesh.decimation,
                 faces_before_decimation=mesh.faces_before_decimation, components_dropped=mesh.components_dropped,
                 timings={k: round(v, 3) for k, v in mesh.timings.items()}, load_avg_1min=load0)
        row[rule] = m
        print(name, rule, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
                           if k in ("iso", "chamfer", "iou", "psnr_fg", "watertight", "faces", "seconds", "decimation")},
              flush=True)
        if rule == rules[0]:
            picture(model, mesh, obj, out / f"mesh_{name}.png")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run folders of world prompts")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--fixtures", nargs="*", default=["a red mug", "a blue chair", "a white snowman", "a green car",
                                                      "a yellow teapot"])
    ap.add_argument("--fixture-gaussians", type=int, default=8000)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--target-faces", type=int, default=20000)
    ap.add_argument("--texture-size", type=int, default=1024)
    args = ap.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    options = dict(resolution=args.resolution, target_faces=args.target_faces, texture_size=args.texture_size)
    rows = []
    for run in args.runs:
        prompt = yaml.safe_load((run / "config.yaml").read_text())["prompt"]
        model = load_ply(run / "splats.ply")
        name = f"run-{run.parent.name}-{run.name}" if run.parent.name == "gpu" else f"run-cpu-{run.name}"
        rows.append({"kind": "generated run", "run": str(run), **measure(name, model, parse_prompt(prompt), args.rules,
                                                                          args.out, options)})
    for prompt in args.fixtures:
        obj = parse_prompt(prompt)
        params = surface_gaussians(obj, args.fixture_gaussians, generator=torch.Generator().manual_seed(0))
        model = GaussianModel.from_tensors(**params)
        name = "truth-" + prompt.split(" ", 1)[1].replace(" ", "-")
        rows.append({"kind": "Gaussians on the true surface", **measure(name, model, obj, args.rules, args.out, options)})
    payload = {**environment(), "versions": versions(), "options": options, "rules": {k: str(v) for k, v in RULES.items()},
               "note": "seconds are wall clock on this machine; load_avg_1min is the machine's load when each mesh "
                       "started (the CPU is shared)", "results": rows}
    write_json(args.out / "mesh.json", payload)
    print("wrote", args.out / "mesh.json")


if __name__ == "__main__":
    main()
