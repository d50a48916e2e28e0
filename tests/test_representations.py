"""The trainer drives either representation: Gaussians and the NeRF baseline share cameras, guidance, SDS,
schedules, logging, checkpoints, evaluation and export; only ``model.type`` differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import splatgen
from splatgen.api import load_result
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
    from splatgen.representation import NerfRepresentation

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
    with pytest.raises(NonFiniteError, match="step 3"):
        splatgen.generate("a red mug", config=["world", "nerf"], out_dir=out,
                          overrides=[*WORLD_TINY, *NERF_TINY, "run.steps=5"])
    out = out.with_name(out.name + ".partial")  # a failed run stays in its working folder
    assert (out / "last_good.ply").is_file() and (out / "checkpoints" / "last_good.pt").is_file()
    saved = torch.load(out / "checkpoints" / "last_good.pt", weights_only=True)
    assert saved["step"] == 2 and saved["kind"] == "nerf"
