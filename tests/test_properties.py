"""Property-based tests (hypothesis): the config loader and the .ply reader never fail with anything but one
clear error, whatever they are given."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from splatgen.config import Config, load_config
from splatgen.errors import ConfigError, SplatgenError
from splatgen.export import load_ply

KEYS = ["run.steps", "run.seed", "run.device", "render.resolution", "guidance.guidance_scale", "camera.elevation_range",
        "render.resolution_milestones", "optim.lr_means", "model.type", "densify.max_gaussians", "run.progress",
        "nerf.bound", "schedule.timestep", "run.nope", "nosection.key", "run", ""]
VALUES = st.one_of(
    st.text(max_size=20), st.integers(-10**12, 10**12).map(str), st.floats(allow_nan=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "[1,2]", "[[0.5, 64]]", "[nan, 1]", "null", "true", "{a: 1}", "'",
                     "[", "]", "${oc.env:HOME}", "${run.steps}", "1e400", "0x10"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                          st.text(max_size=30)), max_size=4))
@example(["[="])  # found by Hypothesis: OmegaConf's key parser raised IndexError
@example(["run.steps[0]=1", "a b=1"])
def test_any_override_gives_a_valid_config_or_a_config_error(overrides):
    try:
        cfg = load_config(["world"], overrides)
    except ConfigError:
        return
    assert isinstance(cfg, Config)
    for section in ("run", "render", "optim", "guidance", "camera", "densify", "schedule", "model", "nerf"):
        for value in vars(getattr(cfg, section)).values():
            for v in (value if isinstance(value, list) else [value]):
                for x in (v if isinstance(v, list) else [v]):
                    if isinstance(x, float):
                        assert math.isfinite(x)


def _ply_header(n: int, props) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {p}" for p in props] + ["end_header"]
    return ("\n".join(lines) + "\n").encode()


PROPS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
         "rot_0", "rot_1", "rot_2", "rot_3"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=400),
    st.builds(lambda n, body: _ply_header(n, PROPS) + body, st.integers(0, 5), st.binary(max_size=400)),
    st.builds(lambda vals: _ply_header(len(vals) // len(PROPS), PROPS) + np.asarray(
        vals[: len(vals) // len(PROPS) * len(PROPS)], dtype="<f4").tobytes(),
        st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=4 * len(PROPS))),
))
def test_any_bytes_give_finite_gaussians_or_a_clear_error(tmp_path_factory, data):
    path = Path(tmp_path_factory.mktemp("ply")) / "x.ply"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped non-finite rows are warned about; only errors matter here
            model = load_ply(path)
    except SplatgenError:
        return
    assert len(model) > 0 and model.is_finite()
