"""Turntable videos: the .mp4 decodes back as H.264/yuv420p with the asked frames, fps and size; frame 0 is the
front view; depth and alpha frames; .gif; NeRF-like models; elevation, radius, turns and camera paths put the
camera where they say; bad input gives one clear error and no file."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from splatgen.cameras import orbit_cameras
from splatgen.errors import SplatgenError
from splatgen.export import save_ply
from splatgen.export.video import render_turntable, turbo, write_turntable
from splatgen.gaussians import GaussianModel, rgb_to_sh0
from splatgen.render import render

try:
    import imageio_ffmpeg
except ImportError:  # the .mp4 tests skip; everything else runs (and test_viewer.py imports marker_model)
    imageio_ffmpeg = None
needs_ffmpeg = pytest.mark.skipif(imageio_ffmpeg is None, reason="imageio-ffmpeg is not installed (pip install imageio-ffmpeg)")

RES = 64  # small frames keep the PyTorch renderer fast; H.264 works on 16x16 macroblocks, so 64 is 4x4 of them
#: decoded .mp4 frames against the rendered ones. Measured for this model at 64 px, CRF 18 (libx264 of
#: imageio-ffmpeg 0.8.1): 30.2-32.3 dB; at CRF 0 still only 31.5-34.4 dB, so most of the loss is yuv420p's
#: half-resolution colour on the saturated edges, not compression. 3 dB of margin for other x264 builds; the
#: neighbouring view (45 degrees on) scores 16 dB, far below.
MIN_PSNR_DB = 27.0


def marker_model(n: int = 600, seed: int = 0) -> GaussianModel:
    """A red ball with a blue blob on its front (+X), a green one on its left (+Y) and a yellow post on top (+Z):
    every view of it is different, and the front view has blue in the middle."""
    g = torch.Generator().manual_seed(seed)
    means, colours, scales = [], [], []

    def blob(k, centre, radius, rgb, scale):
        d = torch.nn.functional.normalize(torch.randn(k, 3, generator=g), dim=-1)
        means.append(torch.tensor(centre) + d * radius * torch.rand(k, 1, generator=g) ** (1 / 3))
        colours.append(torch.tensor(rgb).expand(k, 3))
        scales.append(torch.full((k, 3), math.log(scale)))

    blob(int(n * 0.7), (0.0, 0.0, 0.0), 0.45, (0.8, 0.1, 0.1), 0.05)
    blob(int(n * 0.1), (0.45, 0.0, 0.0), 0.15, (0.1, 0.2, 0.9), 0.04)
    blob(int(n * 0.1), (0.0, 0.45, 0.0), 0.15, (0.1, 0.8, 0.2), 0.04)
    blob(n - int(n * 0.7) - 2 * int(n * 0.1), (0.0, 0.0, 0.6), 0.1, (0.9, 0.8, 0.1), 0.03)
    m = torch.cat(means)
    quats = torch.zeros(len(m), 4)
    quats[:, 0] = 1.0
    return GaussianModel(dict(means=m, scales=torch.cat(scales), quats=quats, opacities=torch.full((len(m),), 3.0),
                              sh0=rgb_to_sh0(torch.cat(colours))[:, None, :], shN=torch.zeros(len(m), 0, 3)),
                         sh_degree=0)


@pytest.fixture(scope="module")
def model():
    return marker_model()


@pytest.fixture(scope="module")
def frames(model):
    return render_turntable(model, frames=8, resolution=RES)


def read_video(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    decoded = np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])
    return meta, decoded


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def front_view(model, res=RES, azimuth=0.0, elevation=15.0, radius=2.25, fovy=45.0) -> np.ndarray:
    """Our renderer's view from one orbit camera, as a turntable frame (uint8)."""
    cams = orbit_cameras([elevation], [azimuth], radius, fovy, res)
    with torch.no_grad():
        rgb = render(model, cams, torch.ones(1, 3), backend="torch").rgb[0]
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------- frames
def test_frames_are_one_turn_starting_at_the_front(model, frames):
    assert frames.shape == (8, RES, RES, 3) and frames.dtype == np.uint8
    # Frame 0 is exactly our renderer's front view (azimuth 0, elevation 15, the previews' camera) ...
    np.testing.assert_array_equal(frames[0], front_view(model))
    # ... which has the blue front blob in the middle; frame 4 (azimuth 180) shows the red back instead.
    centre = frames[:, RES // 2 - 3:RES // 2 + 3, RES // 2 - 3:RES // 2 + 3].reshape(8, -1, 3).mean(1)
    assert centre[0, 2] > 150 and centre[0, 0] < 100, centre[0]
    assert centre[4, 0] > 150 and centre[4, 2] < 100, centre[4]
    # Frame 2 (azimuth 90, the camera on +Y) has the green blob in the middle: the turn goes +X -> +Y.
    assert centre[2, 1] > 150, centre[2]
    # The yellow post is above the middle in every frame: world +Z is up in the image.
    f = frames.astype(int)
    yellow = (f[..., 0] > 180) & (f[..., 1] > 150) & (f[..., 2] < 100)
    rows = np.arange(RES)[None, :, None]
    assert all(y.any() and (rows[0] * y).sum() / y.sum() < RES / 4 for y in yellow[:, :, :, None][..., 0]), \
        [float((np.arange(RES)[:, None] * y).sum() / max(y.sum(), 1)) for y in yellow]


def test_depth_and_alpha_frames(model):
    alpha = render_turntable(model, frames=2, resolution=RES, kind="alpha")
    assert (alpha[..., 0] == alpha[..., 1]).all() and (alpha[..., 0] == alpha[..., 2]).all()  # grey
    assert alpha[0, 0, 0, 0] == 0 and alpha[0, RES // 2, RES // 2, 0] == 255  # empty corner, opaque middle
    depth = render_turntable(model, frames=2, resolution=RES, kind="depth")
    assert tuple(depth[0, 0, 0]) == (255, 255, 255)  # background where nothing is
    # Turbo: the front blob, nearest to the camera, is red; the ball's rim, near the centre's depth, is bluer.
    mid = depth[0, RES // 2, RES // 2].astype(int)
    assert mid[0] > 150 and mid[0] > mid[2], mid
    grey = render_turntable(model, frames=1, resolution=RES, kind="depth", colormap="grey", background="black")
    assert grey[0, 0, 0].tolist() == [0, 0, 0] and grey[0, RES // 2, RES // 2, 0] > 128
    # One range for the whole video: a fixed depth_range changes colours, not geometry.
    fixed = render_turntable(model, frames=1, resolution=RES, kind="depth", depth_range=(0.5, 5.0))
    assert (fixed[0] != depth[0]).any() and (fixed[0, 0, 0] == 255).all()


# ------------------------------------------------------------------------------------- where the camera goes
def test_elevation_radius_and_turns_move_the_camera(model, frames):
    # Elevation and radius are the orbit's: frame 0 is our renderer's view from there, and differs from the default.
    high = render_turntable(model, frames=2, resolution=RES, elevation=-30.0, radius=3.5)
    np.testing.assert_array_equal(high[0], front_view(model, elevation=-30.0, radius=3.5))
    assert (high[0] != frames[0]).any()
    # Two turns in 8 frames: 90 degrees a frame, back at the front at frame 4 (the very same image), and frame 2
    # is the one-turn video's frame 4 (azimuth 180).
    twice = render_turntable(model, frames=8, resolution=RES, turns=2)
    np.testing.assert_array_equal(twice[4], twice[0])
    np.testing.assert_array_equal(twice[0], frames[0])
    np.testing.assert_array_equal(twice[2], frames[4])
    np.testing.assert_array_equal(twice[5], frames[2])
    assert (twice[1] != twice[0]).any()
    # Half a turn: frame F would be the back, so the last of 4 frames is 135 degrees round.
    np.testing.assert_array_equal(render_turntable(model, frames=4, resolution=RES, turns=0.5)[3],
                                  front_view(model, azimuth=135.0))


def test_a_camera_path_renders_its_cameras(tmp_path, model):
    path = [{"elevation": 40, "azimuth": -60, "radius": 3.0}, {"elevation": 0.0, "azimuth": 200, "radius": 1.8, "fovy": 60}]
    (tmp_path / "cams.json").write_text(json.dumps(path))
    video = render_turntable(model, resolution=RES, camera_path=tmp_path / "cams.json")
    assert video.shape == (2, RES, RES, 3)
    np.testing.assert_array_equal(video[0], front_view(model, azimuth=-60, elevation=40, radius=3.0))
    np.testing.assert_array_equal(video[1], front_view(model, azimuth=200, elevation=0, radius=1.8, fovy=60))
    # The list itself works as the file does; `fovy` fills in for cameras without one.
    wide = render_turntable(model, resolution=RES, camera_path=path, fovy=70.0)
    np.testing.assert_array_equal(wide[0], front_view(model, azimuth=-60, elevation=40, radius=3.0, fovy=70))
    np.testing.assert_array_equal(wide[1], video[1])


def test_a_camera_path_along_the_orbit_is_the_turntable(model):
    # Depth frames included: their one depth range comes from views spread along the path, here the orbit's own.
    orbit = [{"elevation": 15, "azimuth": 45 * i, "radius": 2.25} for i in range(8)]
    for kind in ("rgb", "depth"):
        np.testing.assert_array_equal(render_turntable(model, resolution=32, kind=kind, camera_path=orbit),
                                      render_turntable(model, frames=8, resolution=32, kind=kind))


def test_turbo_matches_matplotlib():
    cm = pytest.importorskip("matplotlib").colormaps["turbo"]
    ref = cm(np.arange(256))[:, :3]
    # 33 table entries, linearly interpolated: within 0.0088 of the 256-entry table (2.2 levels of 255).
    assert np.abs(turbo(torch.arange(256) / 255.0).numpy() - ref).max() < 0.01


# ---------------------------------------------------------------------------------------------- files
@needs_ffmpeg
def test_mp4_decodes_as_h264_yuv420p_with_the_frames_fps_and_size(tmp_path, model, frames):
    info = write_turntable(model, tmp_path / "turn.mp4", fps=24, frames=8, resolution=RES)
    assert (info.frames, info.width, info.height, info.fps) == (8, RES, RES, 24.0)
    meta, decoded = read_video(tmp_path / "turn.mp4")
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p"), meta
    assert meta["fps"] == 24 and tuple(meta["size"]) == (RES, RES)
    assert decoded.shape == (8, RES, RES, 3)
    data = (tmp_path / "turn.mp4").read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: browsers can play it before it has loaded
    # Frame 0 is the front view, to H.264's loss; every decoded frame is closest to its own rendered frame.
    assert psnr(decoded[0], front_view(model)) > MIN_PSNR_DB
    for i in range(8):
        scores = [psnr(decoded[i], f) for f in frames]
        assert int(np.argmax(scores)) == i and scores[i] > MIN_PSNR_DB, (i, scores)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turn.mp4"]  # no temporary file left


@needs_ffmpeg
def test_mp4_from_frames_and_odd_sizes_are_padded_to_even(tmp_path, frames):
    odd = frames[:3, :RES - 1, :RES - 3]
    info = write_turntable(odd, tmp_path / "odd.mp4", fps=30)
    assert (info.width, info.height) == (RES - 2, RES)  # yuv420p needs even sizes: one edge pixel added
    meta, decoded = read_video(tmp_path / "odd.mp4")
    assert len(decoded) == 3 and tuple(meta["size"]) == (RES - 2, RES)
    assert psnr(decoded[0][: RES - 1, : RES - 3], odd[0]) > MIN_PSNR_DB
    # Float frames in [0, 1] (torch or numpy) are accepted as well.
    write_turntable(torch.from_numpy(frames[:2]).float() / 255, tmp_path / "float.mp4")
    assert len(read_video(tmp_path / "float.mp4")[1]) == 2


def test_gif_has_every_frame(tmp_path, model):
    from PIL import Image

    info = write_turntable(model, tmp_path / "turn.gif", fps=20, frames=6, resolution=32)
    with Image.open(tmp_path / "turn.gif") as im:
        assert im.n_frames == 6 == info.frames and im.size == (32, 32)
        assert im.info["duration"] == 50 and im.info["loop"] == 0


@needs_ffmpeg
def test_nerf_like_models_are_filmed_through_render_eval(tmp_path):
    class Orb:
        """render_eval only, as splatgen.representation.Representation promises: a disc, nearest in its middle."""

        device = torch.device("cpu")

        def render_eval(self, cams, bg):
            B, H, W = len(cams), cams.height, cams.width
            yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
            alpha = ((xx**2 + yy**2) < 0.25).float()[None, :, :, None].expand(B, H, W, 1)
            rgb = alpha * torch.tensor([0.0, 0.0, 1.0]) + (1 - alpha) * bg[:, None, None, :]
            return rgb, alpha, alpha * (1.5 + xx**2 + yy**2)[None, :, :, None]

    frames = render_turntable(Orb(), frames=3, resolution=16)
    assert tuple(frames[0, 8, 8]) == (0, 0, 255) and tuple(frames[0, 0, 0]) == (255, 255, 255)
    # The depth range comes from a quick low-resolution pass over the visible surface: the disc's middle
    # (depth 1.5, the nearest) is turbo's red end, its rim (1.75) the blue end.
    depth = render_turntable(Orb(), frames=1, resolution=16, kind="depth").astype(int)
    assert depth[0, 8, 8, 0] > 100 and depth[0, 8, 8, 0] > 2 * depth[0, 8, 8, 2], depth[0, 8, 8]
    assert depth[0, 8, 4, 2] > 2 * depth[0, 8, 4, 0], depth[0, 8, 4]
    write_turntable(Orb(), tmp_path / "orb.mp4", frames=3, resolution=16)
    assert len(read_video(tmp_path / "orb.mp4")[1]) == 3


def test_a_real_nerf_representation_and_a_ply_path(tmp_path, model):
    from splatgen.config import load_config
    from splatgen.representation.nerf import NerfRepresentation

    cfg = load_config(["world", "nerf"], ["nerf.num_levels=4", "nerf.log2_hashmap_size=12", "nerf.grid_resolution=16",
                                          "nerf.num_steps=8", "nerf.upsample_steps=4"])
    rep = NerfRepresentation(cfg, torch.device("cpu"), torch.Generator().manual_seed(0))
    for kind in ("rgb", "depth", "alpha"):
        assert render_turntable(rep, frames=2, resolution=16, kind=kind).shape == (2, 16, 16, 3)
    save_ply(model, tmp_path / "m.ply")
    np.testing.assert_array_equal(render_turntable(tmp_path / "m.ply", frames=1, resolution=RES)[0], front_view(model))


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, message", [
    (dict(frames=0), "frames must be an integer >= 1"),
    (dict(frames=2.5), "frames must be an integer >= 1"),
    (dict(kind="normals"), "kind='normals' is not a turntable kind"),
    (dict(resolution=1), "resolution must be an integer >= 2"),
    (dict(colormap="jet", kind="depth"), "colormap='jet' is not known"),
    (dict(background="pink"), "background='pink'"),
    (dict(fps=0), "fps must be a number > 0"),
    (dict(crf=60), "crf must be in [0, 51]"),
])
def test_bad_arguments_raise_one_clear_error_and_write_nothing(tmp_path, model, args, message):
    with pytest.raises(SplatgenError, match=__import__("re").escape(message)):
        write_turntable(model, tmp_path / "out" / "turn.mp4", **args)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())



@pytest.mark.parametrize("args, message", [
    (dict(radius=-1.0), "radius must be > 0, got -1.0"),
    (dict(elevation=95), "elevation must be in [-90, 90] degrees, got 95"),
    (dict(turns=0), "turns must be a number > 0, got 0"),
    (dict(turns=float("nan")), "turns must be a number > 0, got nan"),
    (dict(camera_path=[]), "camera path: must be a non-empty list of cameras"),
    (dict(camera_path={"elevation": 0}), "camera path: must be a non-empty list of cameras"),
    (dict(camera_path=[{"elevation": 0, "azimuth": 0, "radius": 2}, {"elevation": 0, "radius": 2}]),
     "camera path: camera [1] has no 'azimuth'; every camera needs ['elevation', 'azimuth', 'radius']"),
    (dict(camera_path=[{"elevation": 0, "azimuth": 0, "distance": 2}]),
     "camera path: camera [0] has the unknown key 'distance'; a camera has ['elevation', 'azimuth', 'radius', 'fovy']"),
    (dict(camera_path=[{"elevation": 0, "azimuth": 0, "radius": -2}]), "camera path: camera [0]: radius must be > 0, got -2"),
    (dict(camera_path=[{"elevation": 0, "azimuth": "0", "radius": 2}]), "camera path: camera [0]: azimuth='0' is not a finite number"),
    (dict(camera_path=[{"elevation": 0, "azimuth": 0, "radius": 2, "fovy": 180}]), "camera [0]: fovy must be in (0, 180)"),
    (dict(camera_path=[[0, 0, 2]]), "camera path: camera [0] is a list, not an object such as"),
    (dict(camera_path=[{"elevation": 0, "azimuth": 0, "radius": 2}], frames=8, turns=2),
     "a camera path gives every frame's camera; leave out what shapes the orbit (frames=8, turns=2)"),
])
def test_bad_orbits_and_camera_paths_raise_one_clear_error_and_write_nothing(tmp_path, model, args, message):
    with pytest.raises(SplatgenError, match=re.escape(message)):
        write_turntable(model, tmp_path / "out" / "turn.mp4", **args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    (b'[{"elevation": 0, "azimuth": 0}]', "cams.json: camera [0] has no 'radius'"),
    (b'[{"elevation": 0, "azimuth": 0, "radius": 2},]', "cams.json: not valid JSON (Expecting value at line 1 column 46)"),
    (b"\xff\xfe[]", "cams.json: not UTF-8 text"),
    (b'{"cameras": []}', "cams.json: must be a non-empty list of cameras"),
])
def test_bad_camera_path_files_are_named(tmp_path, model, text, message):
    (tmp_path / "cams.json").write_bytes(text)
    with pytest.raises(SplatgenError, match=re.escape(message)):
        render_turntable(model, camera_path=tmp_path / "cams.json")
    with pytest.raises(SplatgenError, match=re.escape(f"camera path {tmp_path / 'nothing.json'}: no such file")):
        render_turntable(model, camera_path=tmp_path / "nothing.json")


def test_bad_models_and_paths(tmp_path, model):
    empty = GaussianModel.from_tensors(**{k: v[:0] for k, v in model.params.items()})
    with pytest.raises(SplatgenError, match="zero Gaussians"):
        write_turntable(empty, tmp_path / "a.mp4")
    with pytest.raises(SplatgenError, match="zero Gaussians"):
        render_turntable({k: v[:0] for k, v in model.params.items()})
    with pytest.raises(SplatgenError, match="use one of"):
        write_turntable(model, tmp_path / "a.avi")
    with pytest.raises(SplatgenError, match="cannot film a object"):
        render_turntable(object())
    with pytest.raises(SplatgenError, match="is a folder"):
        render_turntable(tmp_path)
    with pytest.raises(SplatgenError, match="no .ply file"):
        render_turntable(tmp_path / "missing.ply")
    with pytest.raises(SplatgenError, match=r"frames must be \[F >= 1, H, W, 3\]"):
        write_turntable(np.zeros((0, 8, 8, 3), np.uint8), tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_a_failure_while_encoding_leaves_no_file_and_keeps_an_older_one(tmp_path, model):
    class Breaks:
        device = torch.device("cpu")
        calls = 0

        def render_eval(self, cams, bg):
            Breaks.calls += 1
            if Breaks.calls > 1:
                raise RuntimeError("renderer died mid-video")
            B = len(cams)
            return bg[:, None, None, :].expand(B, cams.height, cams.width, 3), torch.zeros(B, 16, 16, 1), torch.zeros(B, 16, 16, 1)

    (tmp_path / "turn.mp4").write_bytes(b"an older video")
    for suffix in (".mp4", ".gif"):
        Breaks.calls = 0
        with pytest.raises(RuntimeError, match="mid-video"):
            write_turntable(Breaks(), tmp_path / f"turn{suffix}", frames=4, resolution=16, batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turn.mp4"]
    assert (tmp_path / "turn.mp4").read_bytes() == b"an older video"


def test_cli_turntable_of_a_run(tmp_path, capsys):
    import splatgen
    from splatgen.cli import main

    splatgen.generate("a red mug", config="world", out_dir=tmp_path / "run", overrides=[
        "run.steps=2", "model.num_points=200", "render.resolution=24", "run.preview_views=0", "run.evaluate=false"])
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "t.mp4"), "--frames", "4", "--resolution", "32",
                 "--kind", "depth"]) == 0
    assert "4 frames, 32x32" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "u.mp4"), "--frames", "0"]) == 2
    assert "splatgen: error:" in capsys.readouterr().err and not (tmp_path / "u.mp4").exists()


@needs_ffmpeg
def test_cli_orbit_and_camera_path_options(tmp_path, capsys, model):
    from splatgen.cli import main

    save_ply(model, tmp_path / "m.ply")
    assert main(["export", str(tmp_path / "m.ply"), str(tmp_path / "t.mp4"), "--frames", "4", "--resolution", str(RES),
                 "--elevation", "-20", "--radius", "3", "--turns", "2"]) == 0
    assert f"4 frames, {RES}x{RES}" in capsys.readouterr().out
    decoded = read_video(tmp_path / "t.mp4")[1]
    # Two turns in 4 frames: frames 0 and 2 are the front from the asked elevation and radius, not the default's.
    for i in (0, 2):
        assert psnr(decoded[i], front_view(model, elevation=-20, radius=3)) > MIN_PSNR_DB
        assert psnr(decoded[i], front_view(model)) < MIN_PSNR_DB - 5
    (tmp_path / "cams.json").write_text(json.dumps([{"elevation": 10, "azimuth": a, "radius": 2.5} for a in (0, 90, 180)]))
    assert main(["export", str(tmp_path / "m.ply"), str(tmp_path / "p.gif"), "--resolution", "32",
                 "--cameras", str(tmp_path / "cams.json")]) == 0
    assert "3 frames, 32x32" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--radius", "-1"], "splatgen: error: radius must be > 0, got -1.0"),
    (["--elevation", "91"], "splatgen: error: elevation must be in [-90, 90] degrees, got 91.0"),
    (["--turns", "0"], "splatgen: error: turns must be a number > 0, got 0.0"),
    (["--cameras", "{dir}/bad.json"], "splatgen: error: camera path {dir}/bad.json: camera [1] has no 'radius'"),
    (["--cameras", "{dir}/none.json"], "splatgen: error: camera path {dir}/none.json: no such file"),
    (["--cameras", "{dir}/bad.json", "--frames", "4", "--turns", "2"],
     "splatgen: error: --cameras gives every frame's camera; leave out --frames, --turns (they shape the orbit)"),
])
def test_cli_bad_orbits_and_camera_paths_give_one_line_and_exit_2(tmp_path, capsys, model, args, message):
    from splatgen.cli import main

    save_ply(model, tmp_path / "m.ply")
    (tmp_path / "bad.json").write_text('[{"elevation": 10, "azimuth": 0, "radius": 2.5}, {"elevation": 10, "azimuth": 0}]')
    argv = ["export", str(tmp_path / "m.ply"), str(tmp_path / "t.mp4"), "--resolution", "16", "--frames", "2"]
    if "--cameras" in args:
        argv.remove("--frames"), argv.remove("2")
    capsys.readouterr()
    assert main(argv + [a.format(dir=tmp_path) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message.format(dir=tmp_path)) and captured.err.count("\n") == 1, captured.err
    assert captured.err.endswith("\n") and captured.out == ""
    assert not (tmp_path / "t.mp4").exists()
