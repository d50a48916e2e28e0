"""The INRIA 3DGS .ply: layout, exact round trip, SH padding, non-finite rows, bad files."""

import numpy as np
import pytest
import torch
from plyfile import PlyData

from splatgen.errors import SplatgenError
from splatgen.export import load_ply, save_ply
from splatgen.gaussians import GaussianModel


def random_model(n=37, degree=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = (degree + 1) ** 2
    return GaussianModel({
        "means": torch.randn(n, 3, generator=g), "scales": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g),
        "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.randn(n, K - 1, 3, generator=g),
    }, sh_degree=degree)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip_exact(tmp_path, degree):
    m = random_model(degree=degree)
    save_ply(m, tmp_path / "a.ply")
    back = load_ply(tmp_path / "a.ply")
    assert back.sh_degree == degree
    for k, v in m.params.items():
        assert torch.equal(back.params[k].detach(), v.detach()), k


def test_inria_layout(tmp_path):
    m = random_model(degree=1)
    save_ply(m, tmp_path / "a.ply")
    ply = PlyData.read(str(tmp_path / "a.ply"))
    v = ply["vertex"]
    names = [p.name for p in v.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:18] == [f"f_rest_{i}" for i in range(9)]
    assert names[18:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert all(p.val_dtype in ("f4", "float32") for p in v.properties)
    assert not ply.text and ply.byte_order == "<"
    # f_rest is channel-major: the first 3 values are the R channel of the 3 degree-1 coefficients.
    shN = m.params["shN"].detach()
    assert np.allclose(v["f_rest_0"], shN[:, 0, 0].numpy()) and np.allclose(v["f_rest_1"], shN[:, 1, 0].numpy())
    assert np.allclose(v["f_rest_3"], shN[:, 0, 1].numpy())
    assert np.all(v["nx"] == 0)


def test_pad_to_degree3(tmp_path):
    m = random_model(degree=0)
    save_ply(m, tmp_path / "p.ply", pad_sh_to_degree3=True)
    names = [p.name for p in PlyData.read(str(tmp_path / "p.ply"))["vertex"].properties]
    assert sum(n.startswith("f_rest_") for n in names) == 45
    back = load_ply(tmp_path / "p.ply")
    assert back.sh_degree == 3 and torch.all(back.params["shN"] == 0)
    assert torch.equal(back.params["sh0"].detach(), m.params["sh0"].detach())


def test_non_finite_rows_dropped(tmp_path):
    m = random_model(n=10)
    with torch.no_grad():
        m.params["opacities"][3] = float("nan")
        m.params["means"][7, 1] = float("inf")
    with pytest.warns(UserWarning, match="dropping 2"):
        n = save_ply(m, tmp_path / "f.ply")
    assert n == 8
    back = load_ply(tmp_path / "f.ply")
    assert back.is_finite() and len(back) == 8


def test_bad_files(tmp_path):
    with pytest.raises(SplatgenError, match="no .ply"):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply")
    with pytest.raises(SplatgenError, match="not a readable PLY"):
        load_ply(tmp_path / "junk.ply")
