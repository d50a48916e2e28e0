"""Our files in real splat viewers: headless Chromium (WebGL through SwiftShader) opens a local page that
loads a ``.splat``/``.ply``/``.spz`` in three.js viewers (Spark, GaussianSplats3D), a ``.splats.glb`` in
Babylon.js (its ``KHR_gaussian_splatting`` loader) or the textured mesh ``.glb`` in three.js' ``GLTFLoader``, from
a camera matching one of ours, and the screenshot's silhouette must match our own renderer's from the same camera.

The camera is built exactly as ours (``look_at_viewmats``: a roll-free look-at with world +Z up), moved into
the file's frame (:mod:`splatgen.export.orientation`): position ``R c``, up ``R e_z``, same vertical field of
view. So a file written in the wrong frame, a mirrored axis, a wrong quaternion order or scale encoding
all change the silhouette, and the test fails.

Needs (skips with the reason otherwise): Debian's ``chromium``, the PyPI ``playwright`` package (its
driver only: it launches ``/usr/bin/chromium``, no browser download), and the npm packages that
``.ci/browser-deps.sh`` installs into ``$SPLATGEN_WEB_DEPS`` (default ``~/.cache/splatgen-web``).

The fixture is built directly, not trained: Gaussians on the surface of the procedural world's red mug
(handle on its right, +Y) plus a yellow ball above the rim at its front (+X), so that upside-down,
mirrored and front/back mistakes all move pixels. Degree-1 SH add a view-dependent tint.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import pytest
import torch

from splatgen.cameras import Cameras, orbit_cameras
from splatgen.export.orientation import DEFAULT_UP, frame_matrix
from splatgen.gaussians import GaussianModel, rgb_to_sh0

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WEB_DEPS = Path(os.environ.get("SPLATGEN_WEB_DEPS", Path.home() / ".cache" / "splatgen-web")).expanduser()
NODE_MODULES = WEB_DEPS / "node_modules"
#: files each viewer needs, relative to node_modules
VIEWER_FILES = {
    "spark": ["three/build/three.module.js", "three/examples/jsm/postprocessing/Pass.js",
              "@sparkjsdev/spark/dist/spark.module.js"],
    "gs3d": ["three/build/three.module.js", "@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js"],
    "babylon": ["babylonjs/babylon.js", "babylonjs-loaders/babylonjs.loaders.min.js"],
    "gltf": ["three/build/three.module.js", "three/examples/jsm/loaders/GLTFLoader.js"],
    "gltf-validator": ["gltf-validator/index.js"],
}
CHROMIUM_ARGS = [
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--no-sandbox",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic",
]
#: a pixel belongs to the silhouette when its brightest channel exceeds this (black background)
SILHOUETTE_THRESHOLD = 40 / 255

THREE_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<style>html,body{margin:0;background:#000;overflow:hidden}canvas{display:block}</style>
<script type="importmap">{"imports": {
  "three": "./node_modules/three/build/three.module.js",
  "three/addons/": "./node_modules/three/examples/jsm/",
  "@sparkjsdev/spark": "./node_modules/@sparkjsdev/spark/dist/spark.module.js",
  "@mkkellogg/gaussian-splats-3d": "./node_modules/@mkkellogg/gaussian-splats-3d/build/gaussian-splats-3d.module.js"}}
</script></head><body><script type="module">
try {
  const cfg = await (await fetch(new URLSearchParams(location.search).get("cfg"))).json();
  const THREE = await import("three");
  const renderer = new THREE.WebGLRenderer({antialias: false, preserveDrawingBuffer: true});
  renderer.setPixelRatio(1);
  renderer.setSize(cfg.width, cfg.height);
  renderer.setClearColor(0x000000, 1);
  document.body.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(cfg.fovy, cfg.width / cfg.height, 0.01, 100);
  camera.position.fromArray(cfg.position);
  camera.up.fromArray(cfg.up);
  camera.lookAt(new THREE.Vector3().fromArray(cfg.target));
  camera.updateMatrixWorld();
  if (cfg.viewer === "spark") {
    const {SparkRenderer, SplatMesh} = await import("@sparkjsdev/spark");
    scene.add(new SparkRenderer({renderer}));
    const mesh = new SplatMesh({url: cfg.url});
    await mesh.initialized;
    mesh.rotation.z = cfg.turn_z || 0;
    scene.add(mesh);
  } else if (cfg.viewer === "gltf") {
    // three.js' own glTF loader, as any three.js app loads a .glb; the materials it builds are reported, then
    // drawn unlit (the texture as stored, like our reference render: lighting is each viewer's own business)
    const {GLTFLoader} = await import("three/addons/loaders/GLTFLoader.js");
    const gltf = await new GLTFLoader().loadAsync(cfg.url);
    const info = [];
    gltf.scene.traverse((o) => {
      if (!o.isMesh) return;
      const m = o.material;
      info.push({map: !!m.map, metalness: m.metalness, srgb: !!m.map && m.map.colorSpace === THREE.SRGBColorSpace,
                 double_sided: m.side === THREE.DoubleSide, triangles: o.geometry.index.count / 3});
      o.material = new THREE.MeshBasicMaterial({map: m.map, side: m.side});
    });
    window.__info = info;
    scene.add(gltf.scene);
  } else {
    const GS3D = await import("@mkkellogg/gaussian-splats-3d");
    const viewer = new GS3D.DropInViewer({sharedMemoryForWorkers: false, gpuAcceleratedSort: false,
                                          sphericalHarmonicsDegree: cfg.sh_degree});
    await viewer.addSplatScene(cfg.url, {showLoadingUI: false, progressiveLoad: false});
    viewer.rotation.z = cfg.turn_z || 0;
    scene.add(viewer);
  }
  let frames = 0;
  renderer.setAnimationLoop(() => {
    renderer.render(scene, camera);
    if (++frames === cfg.frames) window.__ready = true;
  });
} catch (e) { window.__error = String((e && e.stack) || e); }
</script></body></html>
"""

BABYLON_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<style>html,body{margin:0;background:#000;overflow:hidden}canvas{display:block}</style>
<script src="./node_modules/babylonjs/babylon.js"></script>
<script src="./node_modules/babylonjs-loaders/babylonjs.loaders.min.js"></script>
</head><body><script>
(async () => {
  try {
    const cfg = await (await fetch(new URLSearchParams(location.search).get("cfg"))).json();
    const canvas = document.createElement("canvas");
    canvas.width = cfg.width; canvas.height = cfg.height;
    canvas.style.width = cfg.width + "px"; canvas.style.height = cfg.height + "px";
    document.body.appendChild(canvas);
    const engine = new BABYLON.Engine(canvas, false, {preserveDrawingBuffer: true, antialias: false}, false);
    const scene = new BABYLON.Scene(engine);
    scene.useRightHandedSystem = true;  // glTF's own handedness: the loader adds no mirroring root node
    scene.clearColor = new BABYLON.Color4(0, 0, 0, 1);
    const camera = new BABYLON.UniversalCamera("camera", BABYLON.Vector3.FromArray(cfg.position), scene);
    camera.upVector = BABYLON.Vector3.FromArray(cfg.up);
    camera.setTarget(BABYLON.Vector3.FromArray(cfg.target));
    camera.fov = cfg.fovy * Math.PI / 180;
    camera.minZ = 0.01;
    camera.maxZ = 100;
    await BABYLON.SceneLoader.ImportMeshAsync("", "./", cfg.url, scene);
    let frames = 0;
    engine.runRenderLoop(() => {
      scene.render();
      if (++frames === cfg.frames) window.__ready = true;
    });
  } catch (e) { window.__error = String((e && e.stack) || e); }
})();
</script></body></html>
"""


# ------------------------------------------------------------------------------------------ the fixture
def marked_mug(n_mug: int = 2500, n_ball: int = 300, seed: int = 0) -> GaussianModel:
    """The world's red mug as small opaque Gaussians on its surface, a yellow ball above its front rim,
    and a small random degree-1 SH tint (built in well under a second; no training)."""
    from splatgen.world import make_object
    from splatgen.world.raycast import sample_surface

    g = torch.Generator().manual_seed(seed)
    mug = sample_surface(make_object("mug", "red", seed=seed), n_mug, g)
    top = float(mug[:, 2].max())
    ball = torch.nn.functional.normalize(torch.randn(n_ball, 3, generator=g), dim=-1) * 0.09
    ball = ball + torch.tensor([0.18, 0.0, top + 0.16])
    means = torch.cat([mug, ball])
    n = means.shape[0]
    red, yellow = torch.tensor([0.8, 0.15, 0.12]), torch.tensor([0.95, 0.85, 0.1])
    rgb = torch.cat([red.repeat(n_mug, 1), yellow.repeat(n_ball, 1)])
    return GaussianModel({
        "means": means,
        "scales": torch.full((n, 3), math.log(0.02)) + 0.3 * torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "opacities": torch.full((n,), 3.0),
        "sh0": rgb_to_sh0(rgb)[:, None, :],
        "shN": 0.08 * torch.randn(n, 3, 3, generator=g),
    }, sh_degree=1)


def browser_camera(width: int = 192) -> Cameras:
    """One of our cameras: elevation 25, azimuth 35 (front-right of the mug, a little above)."""
    return orbit_cameras([25.0], [35.0], 2.4, 40.0, width)




# ------------------------------------------------------------------------------------------ the browser
def browser_missing(viewers: List[str]) -> Optional[str]:
    """Why the browser tests cannot run here, or None."""
    if CHROMIUM is None:
        return "no chromium on PATH (install it with .ci/browser-deps.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the PyPI package 'playwright' is not installed (its driver launches /usr/bin/chromium)"
    missing = [f for v in viewers for f in VIEWER_FILES[v] if not (NODE_MODULES / f).is_file()]
    if missing:
        return f"npm packages missing under {NODE_MODULES} ({missing[0]}, ...): run .ci/browser-deps.sh"
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def camera_in_frame(cameras: Cameras, index: int, up: str) -> Dict[str, list]:
    """Our camera ``index`` as a viewer's look-at camera in the frame of ``up``: position, target, up, fovy."""
    R = frame_matrix(up)
    centre = cameras.positions[index].double()
    return {
        "position": (R @ centre).tolist(),
        "target": [0.0, 0.0, 0.0],
        "up": (R @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).tolist(),
        "fovy": float(cameras.fovy[index]),
        "width": cameras.width,
        "height": cameras.height,
    }


class Browser:
    """Headless Chromium pointed at a served folder holding the viewer pages and ``node_modules``.

    ``shot(file, viewer, view)`` returns the screenshot [H, W, 3] uint8 of ``file`` (a name inside the
    folder) in ``viewer`` (``spark``, ``gs3d``, ``babylon``) from ``view`` (:func:`camera_in_frame`).
    """

    def __init__(self, folder: Path, frames: int = 30, timeout_s: float = 60.0):
        from playwright.sync_api import sync_playwright

        self.folder = folder
        (folder / "three.html").write_text(THREE_PAGE)
        (folder / "babylon.html").write_text(BABYLON_PAGE)
        link = folder / "node_modules"
        if not link.exists():
            link.symlink_to(NODE_MODULES, target_is_directory=True)
        self.frames, self.timeout_ms = frames, timeout_s * 1000
        self._server = serve(folder)
        self.url = self._server.__enter__()
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.console: List[str] = []

    def shot(self, file: str, viewer: str, view: Dict, sh_degree: int = 0, save: Optional[Path] = None,
             turn_z: float = 0.0) -> np.ndarray:
        """``turn_z``: turn the splats about the viewer's Z axis by this many radians first (three.js
        viewers only; pi emulates what SuperSplat does to every file it opens)."""
        from PIL import Image

        cfg = dict(view, url=f"./{file}", viewer=viewer, frames=self.frames, sh_degree=sh_degree, turn_z=turn_z)
        name = f"cfg-{viewer}-{file}.json"
        (self.folder / name).write_text(json.dumps(cfg))
        page = self._browser.new_page(viewport={"width": view["width"], "height": view["height"]}, device_scale_factor=1)
        page.on("console", lambda m: self.console.append(f"{viewer}/{file}: {m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"{viewer}/{file}: pageerror: {e}"))
        try:
            page.goto(f"{self.url}/{'babylon' if viewer == 'babylon' else 'three'}.html?cfg={name}")
            page.wait_for_function("window.__ready === true || window.__error !== undefined", timeout=self.timeout_ms)
            error = page.evaluate("window.__error")
            if error:
                raise AssertionError(f"{viewer} failed on {file}: {error}\n" + "\n".join(self.console[-20:]))
            self.info = page.evaluate("window.__info")  # what the page reports about what it loaded, if anything
            png = page.screenshot(clip={"x": 0, "y": 0, "width": view["width"], "height": view["height"]})
        finally:
            page.close()
        path = save if save is not None else self.folder / f"shot-{viewer}-{file}.png"
        path.write_bytes(png)
        return np.asarray(Image.open(path).convert("RGB"))

    def close(self) -> None:
        self._browser.close()
        self._pw.stop()
        self._server.__exit__(None, None, None)


def silhouette(rgb: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels brighter than the black background (:data:`SILHOUETTE_THRESHOLD`)."""
    x = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else np.asarray(rgb, dtype=np.float32)
    return x.max(axis=-1) > SILHOUETTE_THRESHOLD


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def colour_difference(ours: np.ndarray, shot: np.ndarray) -> float:
    """Mean absolute difference, in 8-bit levels, over the pixels both silhouettes cover."""
    ours8 = np.clip(np.round(ours * 255.0), 0, 255) if ours.dtype != np.uint8 else ours.astype(np.float64)
    both = silhouette(ours) & silhouette(shot)
    return float(np.abs(ours8 - shot.astype(np.float64))[both].mean())


def our_render(model: GaussianModel, cameras: Cameras, index: int = 0) -> np.ndarray:
    """Our renderer's view [H, W, 3] in [0, 1] over black (PyTorch backend)."""
    from splatgen.render import render

    with torch.no_grad():
        out = render(model, cameras[index], torch.zeros(1, 3), backend="torch")
    return out.rgb[0].clamp(0, 1).numpy()


# ------------------------------------------------------------------------------------------ the tests
#: (file name, viewer, up the file is written with, SH degree the viewer evaluates)
CASES = [
    ("mug.splat", "spark", DEFAULT_UP["splat"]),
    ("mug.ply", "spark", DEFAULT_UP["ply"]),
    ("mug.spz", "spark", DEFAULT_UP["spz"]),
    ("mug.splat", "gs3d", DEFAULT_UP["splat"]),
    ("mug.ply", "gs3d", DEFAULT_UP["ply"]),
    ("mug.splats.glb", "babylon", DEFAULT_UP["glb"]),
]
#: Lower bound on the IoU of a viewer's silhouette with ours. Measured on this fixture and camera (192 px,
#: Chromium 156 + SwiftShader): Spark 0.985 (.splat, .ply), 0.988 (.spz); GaussianSplats3D 0.969 (.splat),
#: 0.968 (.ply); Babylon.js 0.984 (.glb). The rest is each viewer's own splat cut-off (Mahalanobis radius
#: and alpha floor differ from gsplat's 3 sigma and 1/255) and 8-bit colour, which move edges by about a
#: pixel. The same file seen in the wrong frame (upside down) measures 0.547 (test_wrong_frame_is_caught);
#: shifting our own silhouette by 1 / 2 / 4 pixels gives about 0.975 / 0.95 / 0.9, so the bound also
#: catches a viewer that puts the object 4 pixels off (a wrong field of view or principal point).
MIN_IOU = 0.9
#: Upper bound on the mean colour difference (8-bit levels) where both silhouettes cover a pixel. Measured
#: 0.9-5.8 (8-bit colours, each viewer's own blending and SH evaluation; the .splat has no SH tint); a
#: wrong colour encoding (e.g. SPZ's 0.15 colour scale taken as 0.282) is off by tens of levels.
MAX_COLOUR_DIFF = 12.0


def write_all(model: GaussianModel, folder: Path) -> None:
    from splatgen.export.gltf_splats import write_gltf_splats
    from splatgen.export.ply import save_ply
    from splatgen.export.splat import write_splat
    from splatgen.export.spz import write_spz

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .splat drops the SH tint, by design
        write_splat(model, folder / "mug.splat")
    save_ply(model, folder / "mug.ply", up=DEFAULT_UP["ply"])
    write_spz(model, folder / "mug.spz")
    write_gltf_splats(model, folder / "mug.splats.glb")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = browser_missing(["spark", "gs3d", "babylon", "gltf"])
    if why:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("browser")
    model = marked_mug()
    write_all(model, folder)
    b = Browser(folder)
    b.model = model
    b.ours_rgb = our_render(model, browser_camera())
    b.ours = silhouette(b.ours_rgb)
    yield b
    b.close()


@pytest.mark.parametrize("file,viewer,up", CASES, ids=[f"{v}-{f}" for f, v, _ in CASES])
def test_viewer_silhouette_matches_ours(browser, file, viewer, up):
    ours = browser.ours
    shot = browser.shot(file, viewer, camera_in_frame(browser_camera(), 0, up), sh_degree=1)
    assert ours.sum() > 0.05 * ours.size, "the fixture does not fill the view"
    score = iou(ours, silhouette(shot))
    assert score > MIN_IOU, f"{viewer} shows {file} with silhouette IoU {score:.3f} against ours (bound {MIN_IOU})"
    colour = colour_difference(browser.ours_rgb, shot)
    assert colour < MAX_COLOUR_DIFF, f"{viewer} shows {file} with colours {colour:.1f} levels off ours on average"


def test_wrong_frame_is_caught(browser):
    """The same .splat seen with the camera set up for the other frame ('y' instead of its '-y'): the
    mug is upside down in that view and the IoU collapses, so the bound above does discriminate."""
    shot = browser.shot("mug.splat", "spark", camera_in_frame(browser_camera(), 0, "y"))
    score = iou(browser.ours, silhouette(shot))
    assert score < 0.7, f"IoU {score:.3f} for an upside-down view"


def test_glb_passes_the_khronos_gltf_validator(tmp_path):
    """Khronos' glTF-Validator (npm ``gltf-validator``) on our .glb: no error, warning or info except
    what its missing support for KHR_gaussian_splatting causes (it does not know the extension yet, so
    it reports the extension unsupported and calls each of the extension's attribute semantics invalid).
    Everything of core glTF (GLB framing, buffers, views, alignment, accessors, POSITION min/max) passes."""
    import subprocess

    from splatgen.export.gltf_splats import EXTENSION, write_gltf_splats

    node = shutil.which("node")
    validator = NODE_MODULES / VIEWER_FILES["gltf-validator"][0]
    if node is None or not validator.is_file():
        pytest.skip("node or the npm package gltf-validator is missing: run .ci/browser-deps.sh")
    model = marked_mug(n_mug=200, n_ball=20)
    write_gltf_splats(model, tmp_path / "m.splats.glb")
    script = ("const v = require(process.argv[1]); const fs = require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])), {maxIssues: 1000})"
              ".then(r => console.log(JSON.stringify(r)));")
    out = subprocess.run([node, "-e", script, str(validator), str(tmp_path / "m.splats.glb")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    report = json.loads(out)
    unexplained = [m for m in report["issues"]["messages"]
                   if not (m["code"] == "UNSUPPORTED_EXTENSION" and EXTENSION in m["message"])
                   and not (m["code"] == "MESH_PRIMITIVE_INVALID_ATTRIBUTE" and f"/attributes/{EXTENSION}:" in m["pointer"])]
    assert not unexplained, unexplained
    assert report["info"]["drawCallCount"] == 1 and report["info"]["totalVertexCount"] == 220


#: Bounds for the textured mesh in three.js against our own unlit render of the same mesh (render_mesh). Measured
#: on this fixture and camera (192 px, Chromium 156 + SwiftShader, three 0.180): IoU 0.988, colours 0.63 levels
#: off (our render is anti-aliased, the page is not). Broken files measured: the camera of the wrong frame IoU
#: 0.62 ('z') / 0.55 ('-y'); the texture's v flipped 14.3 levels; the winding inverted (the inside of the far
#: wall shows) 3.4 levels. The mug is mostly one red, so colour errors are small in levels: the bound is tight.
MIN_MESH_IOU = 0.95
MAX_MESH_COLOUR_DIFF = 2.0


def test_textured_mesh_glb_in_threejs_matches_our_render(browser):
    """The mesh ``.glb`` (``splatgen export RUN out.glb``) as three.js' GLTFLoader loads it: a non-metallic
    material with an sRGB texture, one-sided; drawn from our camera moved into glTF's frame (+Y up, front +Z),
    its silhouette and colours match our own unlit render of the mesh. A wrong axis, a flipped ``v``, a
    texture in the wrong colour space or inverted winding (the far side seen from inside) all fail it."""
    from splatgen.export.mesh import export_mesh
    from splatgen.world.mesh_metrics import render_mesh

    result = export_mesh(browser.model, browser.folder / "mug.glb", resolution=64, texture_size=512,
                         target_faces=8000, iso_views=8, iso_image_size=64)
    cams = browser_camera()
    ours = render_mesh(torch.from_numpy(result.vertices), torch.from_numpy(result.faces),
                       torch.from_numpy(result.uvs), result.texture, cams, background=(0.0, 0.0, 0.0))
    ours_rgb = ours["rgb"][0].clamp(0, 1).numpy()
    shot = browser.shot("mug.glb", "gltf", camera_in_frame(cams, 0, "y"))
    info = browser.info
    assert info and len(info) == 1, info
    assert info[0]["map"] and info[0]["srgb"] and info[0]["metalness"] == 0 and not info[0]["double_sided"], info
    assert info[0]["triangles"] == result.num_faces
    score = iou(silhouette(ours_rgb), silhouette(shot))
    colour = colour_difference(ours_rgb, shot)
    msg = f"three.js shows mug.glb with silhouette IoU {score:.3f} and colours {colour:.1f} levels off our render"
    assert score > MIN_MESH_IOU, msg
    assert colour < MAX_MESH_COLOUR_DIFF, msg
    # the same file from the camera of the wrong frame (its +Z taken for up): the bound discriminates
    wrong = browser.shot("mug.glb", "gltf", camera_in_frame(cams, 0, "z"))
    assert iou(silhouette(ours_rgb), silhouette(wrong)) < 0.7
