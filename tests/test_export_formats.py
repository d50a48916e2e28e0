"""The compact splat formats (.splat, .spz, .splats.glb), the .ply's ``up``, and the frames they are written in.

Each format is read back by a reader that shares no code with our writer (plyfile for .ply, a numpy parser
written here for .splat, gsply for .spz, pygltflib for .glb) and compared, in the file's frame, with the
Gaussians turned into that frame; tolerances are derived from each format's quantisation (comments at
each). Orientation: a point on +Z lands on the format's up axis and the front (+X) where the frame table
says; rotating SH with the Gaussians renders the same image as rotating the camera. Bad input: one clear
SplatgenError, no file (and no temporary file) left behind.
"""

from __future__ import annotations

import gzip
import struct
import warnings

import numpy as np
import pytest
import torch

from splatgen.cameras import orbit_cameras
from splatgen.errors import SplatgenError
from splatgen.export.gltf_splats import EXTENSION, read_gltf_splats, write_gltf_splats
from splatgen.export.orientation import (
    DEFAULT_UP, UP_AXES, frame_matrix, from_frame, rotate_gaussians, sh_rotation, to_frame,
)
from splatgen.export.ply import load_ply, save_ply
from splatgen.export.splat import read_splat, write_splat
from splatgen.export.spz import read_spz, write_spz
from splatgen.gaussians import SH_C0, GaussianModel
from splatgen.render import render

WRITERS = {"splat": write_splat, "spz": write_spz, "glb": write_gltf_splats,
           "ply": lambda m, p, up=DEFAULT_UP["ply"]: save_ply(m, p, up=up)}
SUFFIX = {"splat": ".splat", "spz": ".spz", "glb": ".splats.glb", "ply": ".ply"}


def gaussians(n=300, degree=3, seed=0):
    """Random Gaussians inside each format's representable range: |x| < 1.5, log scales in [-6, 0.5],
    opacity logits in [-4, 4], colours in [0.05, 0.95], SH coefficients in [-0.6, 0.6]."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    K = (degree + 1) ** 2
    rgb = 0.05 + 0.9 * u(n, 3)
    return {
        "means": 3.0 * u(n, 3) - 1.5,
        "scales": -6.0 + 6.5 * u(n, 3),
        "quats": torch.randn(n, 4, generator=g) * (0.5 + u(n, 1)),  # not normalised
        "opacities": 8.0 * u(n) - 4.0,
        "sh0": ((rgb - 0.5) / SH_C0)[:, None, :],
        "shN": 1.2 * u(n, K - 1, 3) - 0.6,
    }


def unit_quats(q):
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def same_rotation_error(a, b):
    """Max over rows of the componentwise distance between unit quaternions, up to the sign of q."""
    a, b = unit_quats(a), unit_quats(b)
    s = np.sign((a * b).sum(axis=1, keepdims=True))
    return float(np.abs(a - s * b).max())


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def in_frame(p, up):
    return {k: v.numpy().astype(np.float64) for k, v in to_frame({k: v.clone() for k, v in p.items()}, up).items()}


# ------------------------------------------------------------------------------------------ .ply
@pytest.mark.parametrize("up", UP_AXES)
def test_ply_up_through_plyfile(tmp_path, up):
    from plyfile import PlyData

    p = gaussians(degree=2)
    save_ply(p, tmp_path / "a.ply", up=up)
    ply = PlyData.read(str(tmp_path / "a.ply"))
    v = ply["vertex"]
    ref = in_frame(p, up)
    # float32 throughout: positions and quaternions are the float64 rotation rounded once to float32.
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    assert np.allclose(xyz, ref["means"], atol=1e-6, rtol=0)
    rot = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    assert np.allclose(rot, ref["quats"], atol=1e-6, rtol=0)
    rest = np.stack([v[f"f_rest_{i}"] for i in range(24)], 1).reshape(-1, 3, 8).transpose(0, 2, 1)
    assert np.allclose(rest, ref["shN"], atol=1e-6, rtol=0)
    assert ply.comments == ([] if up == "z" else [f"splatgen up={up}"])
    back = load_ply(tmp_path / "a.ply")  # turned back into splatgen's frame by the header comment
    for k, t in p.items():
        assert torch.allclose(back.params[k].detach(), t, atol=1e-6, rtol=0), k


# ------------------------------------------------------------------------------------------ .splat
def parse_splat(path):
    """An independent .splat reader: 32-byte records, little-endian, as antimatter15's main.js reads them."""
    raw = np.fromfile(path, dtype=np.uint8)
    assert raw.size % 32 == 0
    rec = raw.reshape(-1, 32)
    f = rec[:, :24].copy().view("<f4")
    return {"xyz": f[:, :3], "scale": f[:, 3:6], "rgba": rec[:, 24:28] / 255.0,
            "q": (rec[:, 28:32].astype(np.float64) - 128.0) / 128.0}


@pytest.mark.parametrize("up", UP_AXES)
def test_splat_round_trip(tmp_path, up):
    p = gaussians(degree=0)
    assert write_splat(p, tmp_path / "a.splat", up=up) == 300
    s = parse_splat(tmp_path / "a.splat")
    ref = in_frame(p, up)
    weight = np.exp(ref["scales"].sum(1)) * sigmoid(ref["opacities"])
    order = np.argsort(-weight, kind="stable")
    assert np.all(np.diff(np.exp(np.log(s["scale"].astype(np.float64)).sum(1)) * s["rgba"][:, 3]) <= 1e-2)  # sorted
    # positions and linear scales are float32 copies: exact up to float32 rounding of exp.
    assert np.array_equal(s["xyz"], ref["means"][order].astype(np.float32))
    assert np.allclose(s["scale"], np.exp(ref["scales"][order]), rtol=2e-7, atol=0)
    # colour and alpha: rounded to the nearest of 256 levels -> within half a level, 0.5/255.
    rgb = 0.5 + SH_C0 * ref["sh0"][order, 0]
    assert np.abs(s["rgba"][:, :3] - rgb).max() <= 0.5 / 255 + 1e-9
    assert np.abs(s["rgba"][:, 3] - sigmoid(ref["opacities"][order])).max() <= 0.5 / 255 + 1e-9
    # quaternion components q/|q| * 128 + 128 rounded: within 0.5/128; +1 clips to 255, i.e. 1/128 off.
    assert np.abs(s["q"] - unit_quats(ref["quats"][order])).max() <= 1 / 128 + 1e-9
    # our own reader turns it back into splatgen's frame (rows in the file's sorted order)
    back = read_splat(tmp_path / "a.splat", up=up)
    assert torch.allclose(back["means"], p["means"][order], atol=1e-6)
    assert same_rotation_error(back["quats"], p["quats"][order]) < 2 / 128


def test_splat_drops_sh_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="higher SH"):
        write_splat(gaussians(degree=1), tmp_path / "a.splat")


# ------------------------------------------------------------------------------------------ .spz
@pytest.mark.parametrize("up", UP_AXES)
def test_spz_round_trip_through_gsply(tmp_path, up):
    gsply = pytest.importorskip("gsply", reason="gsply is the independent SPZ reader (pip install gsply)")
    p = gaussians(degree=3)
    assert write_spz(p, tmp_path / "a.spz", up=up) == 300
    raw = gzip.decompress((tmp_path / "a.spz").read_bytes())
    assert struct.unpack_from("<IIIBBBB", raw) == (0x5053474E, 3, 300, 3, 12, 0, 0)
    d = gsply.read_spz(str(tmp_path / "a.spz"))
    ref = in_frame(p, up)
    # positions: 24-bit fixed point with 12 fractional bits, rounded -> within half a step, 0.5 / 4096.
    assert np.abs(np.asarray(d.means) - ref["means"]).max() <= 0.5 / 4096 + 1e-6
    # log scales: (s + 10) * 16 rounded -> within 1/32.
    assert np.abs(np.asarray(d.scales) - ref["scales"]).max() <= 1 / 32 + 1e-6
    # alpha: sigmoid * 255 rounded -> sigmoid within 0.5/255.
    assert np.abs(sigmoid(d.opacities) - sigmoid(ref["opacities"])).max() <= 0.5 / 255 + 1e-6
    # colour: the DC coefficient * 0.15 * 255 + 127.5 rounded -> f_dc within 0.5 / (0.15 * 255).
    assert np.abs(np.asarray(d.sh0).reshape(-1, 3) - ref["sh0"][:, 0]).max() <= 0.5 / (0.15 * 255) + 1e-6
    # rotation, smallest three: the three small components (|c| <= sqrt(1/2)) on 9 bits -> within
    # sqrt(1/2)/511/2 = 6.9e-4 each; the largest, sqrt(1 - sum c^2) >= 1/2, inherits at most
    # sum |c| * err / largest <= 3 * 0.71 * 6.9e-4 / 0.5 = 2.9e-3.
    assert same_rotation_error(d.quats, ref["quats"]) <= 2.9e-3
    # SH: round(c * 128) then to the nearest bucket of 8 (degree 1) or 16 (degrees 2, 3) steps of 1/128:
    # within (0.5 + 4) / 128 and (0.5 + 8) / 128.
    shN = np.asarray(d.shN)
    assert np.abs(shN[:, :3] - ref["shN"][:, :3]).max() <= 4.5 / 128 + 1e-6
    assert np.abs(shN[:, 3:] - ref["shN"][:, 3:]).max() <= 8.5 / 128 + 1e-6
    # our reader agrees with gsply, and turns the file back into splatgen's frame
    ours = read_spz(tmp_path / "a.spz", up="z")
    assert np.abs(ours["means"].numpy() - np.asarray(d.means)).max() < 1e-6
    assert same_rotation_error(ours["quats"], d.quats) < 1e-5
    back = read_spz(tmp_path / "a.spz", up=up)
    assert torch.allclose(back["means"], p["means"], atol=0.5 / 4096 + 1e-6)


def test_spz_bytes_are_deterministic_and_v3_only(tmp_path):
    p = gaussians(degree=1)
    write_spz(p, tmp_path / "a.spz")
    write_spz(p, tmp_path / "b.spz")
    assert (tmp_path / "a.spz").read_bytes() == (tmp_path / "b.spz").read_bytes()
    (tmp_path / "v4.spz").write_bytes(struct.pack("<II", 0x5053474E, 4) + bytes(24))
    with pytest.raises(SplatgenError, match="version 4"):
        read_spz(tmp_path / "v4.spz")


def test_spz_refuses_positions_beyond_fixed_point(tmp_path):
    p = gaussians(n=4, degree=0)
    p["means"][0, 0] = 3000.0
    with pytest.raises(SplatgenError, match="24-bit fixed point"):
        write_spz(p, tmp_path / "far.spz")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ .glb
@pytest.mark.parametrize("degree", [0, 3])
def test_glb_through_pygltflib(tmp_path, degree):
    pygltflib = pytest.importorskip("pygltflib", reason="pygltflib is the independent glTF reader")
    p = gaussians(degree=degree)
    assert write_gltf_splats(p, tmp_path / "a.splats.glb") == 300
    gltf = pygltflib.GLTF2().load(str(tmp_path / "a.splats.glb"))
    blob = gltf.binary_blob()
    assert gltf.asset.version == "2.0"
    assert gltf.extensionsUsed == [EXTENSION] and not gltf.extensionsRequired
    (prim,) = gltf.meshes[gltf.nodes[gltf.scenes[gltf.scene].nodes[0]].mesh].primitives
    assert prim.mode == pygltflib.POINTS and prim.material is None
    ext = prim.extensions[EXTENSION]
    assert ext["kernel"] == "ellipse" and ext["colorSpace"] == "srgb_rec709_display"
    attrs = {k: v for k, v in vars(prim.attributes).items() if v is not None}  # pygltflib keeps unknown semantics too
    expected = {"POSITION": "VEC3", "COLOR_0": "VEC4", f"{EXTENSION}:ROTATION": "VEC4", f"{EXTENSION}:SCALE": "VEC3",
                f"{EXTENSION}:OPACITY": "SCALAR", f"{EXTENSION}:SH_DEGREE_0_COEF_0": "VEC3"}
    expected.update({f"{EXTENSION}:SH_DEGREE_{l}_COEF_{c}": "VEC3" for l in range(1, degree + 1) for c in range(2 * l + 1)})
    assert set(attrs) == set(expected)

    def read(name):
        acc = gltf.accessors[attrs[name]]
        view = gltf.bufferViews[acc.bufferView]
        assert acc.type == expected[name] and acc.componentType == pygltflib.FLOAT and acc.count == 300
        assert view.target == pygltflib.ARRAY_BUFFER and view.byteOffset % 4 == 0 and not acc.normalized
        width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
        a = np.frombuffer(blob, "<f4", acc.count * width, view.byteOffset + (acc.byteOffset or 0))
        return acc, a.reshape(acc.count, width).astype(np.float64)

    ref = in_frame(p, "y")
    acc, pos = read("POSITION")
    assert np.allclose(pos, ref["means"], atol=1e-6)
    assert acc.min == pos.min(0).tolist() and acc.max == pos.max(0).tolist()  # required on POSITION
    _, rot = read(f"{EXTENSION}:ROTATION")
    assert np.allclose(np.linalg.norm(rot, axis=1), 1.0, atol=1e-6)  # unit, as the spec requires
    assert same_rotation_error(rot[:, [3, 0, 1, 2]], ref["quats"]) < 1e-6  # stored x y z w
    _, scale = read(f"{EXTENSION}:SCALE")
    assert np.allclose(scale, np.exp(ref["scales"]), rtol=1e-6) and scale.min() >= 0
    _, opacity = read(f"{EXTENSION}:OPACITY")
    assert np.allclose(opacity[:, 0], sigmoid(ref["opacities"]), atol=1e-7)
    _, dc = read(f"{EXTENSION}:SH_DEGREE_0_COEF_0")
    assert np.allclose(dc, ref["sh0"][:, 0], atol=1e-6)
    for l in range(1, degree + 1):
        for c in range(2 * l + 1):
            _, coef = read(f"{EXTENSION}:SH_DEGREE_{l}_COEF_{c}")
            assert np.allclose(coef, ref["shN"][:, l * l + c - 1], atol=1e-6)  # basis l^2 + l + m, c = l + m
    _, color = read("COLOR_0")
    srgb = np.clip(0.5 + SH_C0 * ref["sh0"][:, 0], 0, 1)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    assert np.allclose(color[:, :3], linear, atol=1e-6) and np.allclose(color[:, 3], opacity[:, 0])
    back = read_gltf_splats(tmp_path / "a.splats.glb")
    assert torch.allclose(back["means"], p["means"], atol=1e-6)
    assert torch.allclose(back["shN"], p["shN"], atol=1e-6)


# ------------------------------------------------------------------------------------------ orientation
def marker_gaussians():
    """Two Gaussians: one on +Z (the top), one on +X (the front)."""
    p = gaussians(n=2, degree=0)
    p["means"] = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    return p


#: where the top (+Z) and the front (+X) land in each frame (the table in splatgen.export.orientation)
LANDS = {"z": ((0, 0, 1), (1, 0, 0)), "y": ((0, 1, 0), (0, 0, 1)), "-y": ((0, -1, 0), (0, 0, 1))}


@pytest.mark.parametrize("fmt", ["ply", "splat", "spz", "glb"])
def test_defaults_put_top_on_up_and_front_where_documented(tmp_path, fmt):
    import pygltflib
    from plyfile import PlyData

    path = tmp_path / f"m{SUFFIX[fmt]}"
    WRITERS[fmt](marker_gaussians(), path)
    if fmt == "ply":
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    elif fmt == "splat":
        xyz = parse_splat(path)["xyz"]  # sorted by size * opacity: match rows by position
    elif fmt == "spz":
        xyz = np.asarray(pytest.importorskip("gsply").read_spz(str(path)).means)
    else:
        g = pygltflib.GLTF2().load(str(path))
        acc = g.accessors[g.meshes[0].primitives[0].attributes.POSITION]
        xyz = np.frombuffer(g.binary_blob(), "<f4", 6, g.bufferViews[acc.bufferView].byteOffset).reshape(2, 3)
    top, front = LANDS[DEFAULT_UP[fmt]]
    found = {tuple(np.round(r, 3) + 0.0) for r in xyz}
    assert found == {tuple(float(c) for c in top), tuple(float(c) for c in front)}


def test_frames_are_proper_rotations():
    for up in UP_AXES:
        R = frame_matrix(up)
        assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64)) and torch.det(R) == 1.0
        top, front = LANDS[up]
        assert (R @ torch.tensor([0.0, 0, 1], dtype=torch.float64)).tolist() == list(top)
        assert (R @ torch.tensor([1.0, 0, 0], dtype=torch.float64)).tolist() == list(front)
    # '-y' is 'y' turned 180 degrees about Z: what SuperSplat undoes on load
    assert torch.equal(torch.diag(torch.tensor([-1.0, -1, 1], dtype=torch.float64)) @ frame_matrix("y"), frame_matrix("-y"))


def random_rotation(seed):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.det(Q))


def rotated_camera(cams, R):
    """The same camera in a frame turned by R: world-to-camera  V @ [[R^T, 0], [0, 1]]."""
    from dataclasses import replace

    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = R.T
    return replace(cams, viewmats=(cams.viewmats.double() @ T).float())


@pytest.mark.parametrize("rotation", ["z", "y", "-y", "random"])
def test_sh_rotation_renders_like_a_rotated_camera(rotation):
    """Our renderer sees the same picture of rotated Gaussians from the correspondingly rotated camera:
    positions, quaternions and every SH band (degree 3, large coefficients so the bands matter) rotate
    consistently. Tolerance: the same scene rendered in float32 from rotated float32 positions and
    view matrices (each rounded once from float64), colours up to 2.5 here: measured max 1.9e-4 (z: 0),
    bound 1e-3. Leaving the SH unrotated is off by more than 0.05 (checked too, so the test can fail)."""
    p = gaussians(n=80, degree=3, seed=3)
    p["means"] *= 0.4
    p["shN"] *= 2.0
    p["opacities"] = p["opacities"].clamp(min=-1.0)
    R = random_rotation(5) if rotation == "random" else frame_matrix(rotation)
    model = GaussianModel.from_tensors(**p)
    cams = orbit_cameras([20.0, -10.0], [30.0, 200.0], 2.0, 45.0, 32)
    turned = rotate_gaussians(p, R)
    bg = torch.full((2, 3), 0.3)
    with torch.no_grad():
        a = render(model, cams, bg, backend="torch").rgb
        b = render(GaussianModel.from_tensors(**turned), rotated_camera(cams, R), bg, backend="torch").rgb
        stale_sh = GaussianModel.from_tensors(**dict(turned, shN=p["shN"]))
        stale = render(stale_sh, rotated_camera(cams, R), bg, backend="torch").rgb
    assert (a - b).abs().max() < 1e-3
    if rotation != "z":
        assert (a - stale).abs().max() > 0.05


def test_sh_rotation_matrices_are_orthogonal_and_exact_for_axis_frames():
    for up in UP_AXES:
        for l, M in enumerate(sh_rotation(frame_matrix(up), 3), start=1):
            assert torch.allclose(M @ M.T, torch.eye(2 * l + 1, dtype=torch.float64), atol=1e-12)
        M1 = sh_rotation(frame_matrix(up), 1)[0]
        assert set(M1.abs().flatten().tolist()) <= {0.0, 1.0}  # degree 1 of an axis frame: a signed permutation
    p = gaussians(degree=3)
    assert rotate_gaussians(p, torch.eye(3, dtype=torch.float64))["shN"] is p["shN"]  # identity: untouched
    back = from_frame(to_frame(p, "-y"), "-y")
    for k in p:
        assert torch.allclose(back[k], p[k], atol=1e-6), k


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("fmt", ["ply", "splat", "spz", "glb"])
def test_bad_input_one_clear_error_and_no_file(tmp_path, fmt):
    path = tmp_path / f"bad{SUFFIX[fmt]}"
    empty = {k: v[:0] for k, v in gaussians(n=3, degree=1).items()}
    nan = gaussians(n=3, degree=1)
    nan["means"][:] = float("nan")
    with pytest.raises(SplatgenError, match="no Gaussian to write \\(none was given\\)"):
        WRITERS[fmt](empty, path)
    with pytest.raises(SplatgenError, match="all 3 have NaN or Inf"):
        WRITERS[fmt](nan, path)
    with pytest.raises(SplatgenError, match="unknown up axis 'x'"):
        WRITERS[fmt](gaussians(n=3), path, up="x")
    if fmt != "ply":  # the compact writers check shapes; save_ply's input comes from splatgen itself
        bad_shape = gaussians(n=3)
        bad_shape["quats"] = bad_shape["quats"][:, :3]
        with pytest.raises(SplatgenError, match="wrong shapes quats"):
            WRITERS[fmt](bad_shape, path)
    assert not list(tmp_path.iterdir())  # neither the file nor a temporary one


def test_non_finite_rows_dropped_with_a_warning(tmp_path):
    p = gaussians(n=5, degree=1)
    p["opacities"][1] = float("inf")
    for fmt in ("ply", "splat", "spz", "glb"):
        with pytest.warns(UserWarning, match="dropping 1 of"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*higher SH")
            assert WRITERS[fmt](p, tmp_path / f"f{SUFFIX[fmt]}") == 4


@pytest.mark.parametrize("fmt", ["ply", "splat", "spz", "glb"])
def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_else(fmt, tmp_path, monkeypatch):
    import errno

    import splatgen.fileio as fileio

    target = tmp_path / f"keep{SUFFIX[fmt]}"
    target.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full_disk)
    with pytest.raises(SplatgenError, match="No space left"):
        WRITERS[fmt](gaussians(20, degree=0), target)
    assert [f.name for f in tmp_path.iterdir()] == [target.name] and target.read_bytes() == b"old"


def test_readers_refuse_foreign_files(tmp_path):
    (tmp_path / "x.splat").write_bytes(b"123")
    (tmp_path / "x.spz").write_bytes(b"not gzip")
    (tmp_path / "x.glb").write_bytes(b"not a glb at all, really")
    with pytest.raises(SplatgenError, match="not a multiple of 32"):
        read_splat(tmp_path / "x.splat")
    with pytest.raises(SplatgenError, match="not a gzip"):
        read_spz(tmp_path / "x.spz")
    with pytest.raises(SplatgenError, match="not a binary glTF"):
        read_gltf_splats(tmp_path / "x.glb")
    with pytest.raises(SplatgenError, match="no .spz file"):
        read_spz(tmp_path / "missing.spz")
