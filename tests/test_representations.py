"""The trainer drives either representation: Gaussians and the NeRF baseline share cameras, guidance, SDS,
schedules, logging, checkpoints, evaluation and export; only ``model.type`` differs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import splatgen
from splatgen.api import load_result
from splatgen.cameras import evenly_spaced_cameras
from splatgen.config import load_config
from splatgen.errors import ConfigError
from splatgen.export import load_ply
from splatgen.world.metrics import evaluate_run

#: the oracle prior at 24 px: no weights, CPU-fast, with a known answer
WORLD_TINY = [
    "run.log_every=1", "run.preview_views=2", "run.preview_resolution=16", "render.resolution=24",
    "camera.batch_size=2", "guidance.world_views=24", "guidance.world_resolution=24", "model.num_points=200",
]
NERF_TINY = [
    "nerf.num_levels=4", "nerf.log2_hashmap_size=12", "nerf.desired_resolution=64", "nerf.grid_resolution=16",
    "nerf.num_steps=16", "nerf.upsample_steps=8", "nerf.export_resolution=24", "nerf.update_every=2",
]


def test_nerf_generation_writes_a_run_that_evaluates_and_reloads(tmp_path):
    out = tmp_path / "nerf"
    res = splatgen.generate("a red mug", config=["world", "nerf"], out_dir=out,
                            overrides=[*WORLD_TINY, *NERF_TINY, "run.steps=6", "run.eval_every=3"])
    assert res.rep.kind == "nerf" and res.config.model.type == "nerf"
    # The exported density reads back as a 3DGS .ply whose points lie inside the field's bound.
    cloud = load_ply(out / "nerf.ply")
    assert len(cloud) > 0 and float(cloud.means.abs().max()) <= res.config.nerf.bound + 1e-4
    assert not (out / "splats.ply").exists()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "event" not in r] == list(range(1, 7))
    assert all("num_occupied" in r for r in rows if "event" not in r)
    # Periodic evaluation: at steps 3 and 6, with training seconds that grow and exclude the evaluation.
    evals = [r for r in rows if r.get("event") == "eval"]
    assert [e["step"] for e in evals] == [3, 6] == [e["step"] for e in res.evals]
    assert 0 < evals[0]["train_seconds"] < evals[1]["train_seconds"] <= res.seconds + 1e-6
    assert all(0.0 <= e["iou"] <= 1.0 for e in evals)
    # The final metrics come from the NeRF's own renders (checkpoints/final.pt), not from the point cloud.
    m = json.loads((out / "metrics.json").read_text())
    assert m["representation"] == "nerf" and 0.0 <= m["iou"] <= 1.0
    again = evaluate_run(out, device="cpu")
    assert again["iou"] == pytest.approx(m["iou"], abs=1e-6)
    # Reloading the run gives the same renders.
    back = load_result(out)
    a = res.render(n_views=2, resolution=16)
    b = back.render(n_views=2, resolution=16)
    assert torch.allclose(a, b, atol=1e-5)


def test_gaussian_and_nerf_runs_differ_only_in_the_representation(tmp_path):
    """Same seed, same prior: the cameras, backgrounds and timesteps come from the trainer's generator and the
    representation draws from its own, so both runs see the same timesteps at every step."""
    common = [*WORLD_TINY, *NERF_TINY, "run.steps=4", "camera.batch_size=1", "schedule.timestep=uniform",
              "run.evaluate=false", "run.preview_views=0"]
    g = splatgen.generate("a blue chair", config="world", overrides=[*common, "densify.enabled=false"])
    n = splatgen.generate("a blue chair", config=["world", "nerf"], overrides=common)
    assert g.rep.kind == "gaussians" and n.rep.kind == "nerf"
    assert len(g.history) == len(n.history) == 4
    assert [r["t"] for r in g.history] == [r["t"] for r in n.history]
    assert len({r["t"] for r in g.history}) > 1  # uniform t: the comparison is not vacuous


def test_eval_every_on_a_prompt_outside_the_world_is_skipped_with_a_warning(caplog, tmp_path):
    from splatgen.guidance.tiny import make_tiny_pixel

    tiny = make_tiny_pixel(tmp_path / "px")
    with caplog.at_level("WARNING", logger="splatgen"):
        res = splatgen.generate("a DSLR photo of a corgi", overrides=[
            "guidance.type=pixel", f"guidance.model={tiny}", "run.steps=2", "run.eval_every=1", "run.evaluate=false",
            "run.preview_views=0", "model.num_points=50", "render.resolution=16", "camera.batch_size=1"])
    assert res.evals == []
    assert any("eval_every" in r.getMessage() and "procedural world" in r.getMessage() for r in caplog.records)


def test_nerf_nan_keeps_the_last_good_state(tmp_path, monkeypatch):
    from splatgen.errors import NonFiniteError
    from splatgen.representation.nerf import NerfRepresentation

    calls = {"n": 0}
    real = NerfRepresentation.optimizer_step

    def poisoned(self):
        real(self)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                next(self.module.parameters()).fill_(float("nan"))

    monkeypatch.setattr(NerfRepresentation, "optimizer_step", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match="the NeRF's parameters became NaN/Inf at step 3"):
        splatgen.generate("a red mug", config=["world", "nerf"], out_dir=out,
                          overrides=[*WORLD_TINY, *NERF_TINY, "run.steps=5"])
    out = out.with_name(out.name + ".partial")  # a failed run stays in its working folder
    assert (out / "last_good.ply").is_file() and (out / "checkpoints" / "last_good.pt").is_file()
    saved = torch.load(out / "checkpoints" / "last_good.pt", weights_only=True)
    assert saved["step"] == 2 and saved["kind"] == "nerf"


def test_the_nerf_trains_with_the_optimiser_and_regulariser_its_tests_test(monkeypatch):
    """NerfRepresentation builds neither of its own: the run's optimiser is NeRFModel.make_optimizer's and the
    loss it adds is NeRFModel.regularization's (tests/test_nerf.py tests both)."""
    from splatgen.nerf import NeRFModel
    from splatgen.representation.nerf import NerfRepresentation

    made, regs = [], []
    real_optimizer, real_regularization = NeRFModel.make_optimizer, NeRFModel.regularization

    def make_optimizer(self):
        made.append(real_optimizer(self))
        return made[-1]

    def regularization(self, out):
        regs.append(real_regularization(self, out))
        return regs[-1]

    monkeypatch.setattr(NeRFModel, "make_optimizer", make_optimizer)
    monkeypatch.setattr(NeRFModel, "regularization", regularization)
    cfg = load_config(["world", "nerf"], [*WORLD_TINY, *NERF_TINY, "run.steps=4"])
    rep = NerfRepresentation(cfg, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert made == [rep.optimizer]
    rep.begin_step(3)
    out = rep.render_train(evenly_spaced_cameras(2, 16), torch.ones(2, 3), 3)  # past the albedo warm-up: shaded
    assert len(regs) == 1 and out.reg_loss is regs[0]


def test_the_kind_table_is_the_one_place_that_knows_the_kinds(tmp_path):
    """``model.type`` -> class; each class names its files and loads its run, whatever it is."""
    from splatgen.config import MODEL_TYPES
    from splatgen.representation.kinds import REPRESENTATIONS, representation_class
    from splatgen.rundir import load_run, splats_name

    assert tuple(REPRESENTATIONS) == MODEL_TYPES
    assert all(cls.kind == kind and cls.ply_name and cls.model_file for kind, cls in REPRESENTATIONS.items())
    with pytest.raises(ConfigError, match=r"model.type='mesh' is not allowed; choose one of \['gaussians', 'nerf'\]"):
        representation_class("mesh")
    for kind in MODEL_TYPES:
        out = tmp_path / kind
        res = splatgen.generate("a red mug", config=["world", *(["nerf"] if kind == "nerf" else [])], out_dir=out,
                                overrides=[*WORLD_TINY, *NERF_TINY, "run.steps=2", "run.evaluate=false",
                                           "run.preview_views=0"])
        cls = representation_class(kind)
        assert (out / cls.model_file).is_file() and splats_name(res.config) == cls.ply_name
        _, back = load_run(out)
        assert type(back) is cls and back.summary() == res.rep.summary()


def test_a_nerf_run_is_its_seed(tmp_path):
    """Two NeRF runs of one seed write the same bytes, whatever torch's global generator holds: the initial
    weights are drawn from the run's seed (on a fork, leaving the global generator as it was)."""
    from splatgen.representation.nerf import NerfRepresentation

    common = [*WORLD_TINY, *NERF_TINY, "run.steps=2", "run.evaluate=false", "run.preview_views=0"]
    for name, seed, global_seed in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        torch.manual_seed(global_seed)
        splatgen.generate("a red mug", config=["world", "nerf"], out_dir=tmp_path / name,
                          overrides=[*common, f"run.seed={seed}"])
    ply = {name: (tmp_path / name / "nerf.ply").read_bytes() for name in "abc"}
    assert ply["a"] == ply["b"] != ply["c"]
    state = torch.get_rng_state()
    NerfRepresentation(load_config(["world", "nerf"], NERF_TINY), torch.device("cpu"), torch.Generator())
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", ["gaussians", "nerf"])
def test_each_kind_estimates_its_memory_and_a_run_that_cannot_fit_is_refused_up_front(kind, monkeypatch):
    """The memory check asks the kind (no kind strings in devices.py): its bound grows with the render size, and
    a device with less free than that refuses the run in check_input, naming what holds the bytes."""
    from splatgen import api, devices
    from splatgen.errors import DeviceError
    from splatgen.representation.kinds import representation_class

    files = ["world"] + (["nerf"] if kind == "nerf" else [])
    small, large = (load_config(files, [f"render.resolution={r}"]) for r in (32, 128))
    cls = representation_class(kind)
    (need_small, what), (need_large, _) = cls.estimate_memory(small), cls.estimate_memory(large)
    assert 0 < need_small < need_large
    assert ("Gaussians up to" if kind == "gaussians" else "ray samples") in what
    monkeypatch.setattr(devices, "available_memory", lambda device: need_large - 1)
    with pytest.raises(DeviceError, match=f"{what.split()[-1] if kind == 'gaussians' else 'ray samples'}.*GiB is free"):
        api.check_input("a red mug", files, ["render.resolution=128", "run.device=cpu"])
    api.check_input("a red mug", files, ["render.resolution=32", "run.device=cpu"])  # fits: no error


def test_alpha_entropy_pulls_faint_pixels_to_empty_and_dense_ones_to_opaque():
    """The regulariser's gradient: negative-going (towards 0) below one half, towards 1 above, zero at one half."""
    from splatgen.representation.gaussian import alpha_entropy

    alpha = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], requires_grad=True)
    alpha_entropy(alpha).backward()
    g = alpha.grad
    # minimising: a step along -grad; below 0.5 the step lowers alpha, above it raises it
    assert (g[:2] > 0).all() and (g[3:] < 0).all() and abs(g[2]) < 1e-5
    assert torch.allclose(g, torch.log((1 - alpha.detach()) / alpha.detach()), atol=1e-5)
    # summed, not averaged: twice the pixels, twice the loss
    assert torch.isclose(alpha_entropy(torch.full((8,), 0.3)), 2 * alpha_entropy(torch.full((4,), 0.3)))


def test_alpha_entropy_reaches_the_gaussians_with_its_ramp_and_is_absent_when_off():
    from splatgen.representation.gaussian import GaussianRepresentation

    cams, bg = evenly_spaced_cameras(2, 16), torch.ones(2, 3)
    off = load_config(["world"], [*WORLD_TINY, "run.steps=10"])
    rep = GaussianRepresentation(off, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert rep.render_train(cams, bg, 5).reg_loss is None

    on = load_config(["world"], [*WORLD_TINY, "run.steps=10", "model.alpha_entropy=0.5", "model.alpha_entropy_ramp=0.5"])
    rep = GaussianRepresentation(on, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert rep.render_train(cams, bg, 0).reg_loss is None  # the ramp starts at 0: no term, no backward pass
    half, full, later = (rep.render_train(cams, bg, s) for s in (2, 5, 9))
    from splatgen.representation.gaussian import alpha_entropy

    assert torch.isclose(half.reg_loss, 0.5 * 0.4 * alpha_entropy(half.alpha))
    assert torch.isclose(full.reg_loss, 0.5 * alpha_entropy(full.alpha))
    assert torch.isclose(later.reg_loss, 0.5 * alpha_entropy(later.alpha))
    later.reg_loss.backward()
    assert rep.model.params["opacities"].grad is not None and rep.model.params["opacities"].grad.abs().sum() > 0


@pytest.mark.parametrize("override, allowed", [("model.alpha_entropy=-0.1", ">= 0"),
                                               ("model.alpha_entropy_ramp=1.5", "[0, 1]")])
def test_alpha_entropy_settings_are_checked(override, allowed):
    with pytest.raises(ConfigError, match=re.escape(allowed)):
        load_config(["world"], [override])
