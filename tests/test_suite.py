"""The benchmark suite itself (benchmarks/suite): each track at smoke size on CPU, and the report built from
their outputs. These check that the suite runs and writes well-formed results, not the speed."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite"
sys.path.insert(0, str(SUITE))
sys.path.insert(0, str(SUITE.parent))

import quality  # noqa: E402
import speed  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite")
    quality.main(["--small", "--out", str(out / "quality.jsonl"), "--priors", "world", "--methods", "gaussians-tpsds",
                  "nerf-sds", "--prompts", "a red mug", "--seeds", "0", "--workers", "1"])
    speed.main(["--small", "--out", str(out / "speed.json"), "--nerf-resolutions", "16"])
    return out


def test_quality_track_rows(results):
    lines = [json.loads(l) for l in (results / "quality.jsonl").read_text().splitlines()]
    meta, rows = lines[0]["meta"], lines[1:]
    assert meta["track"] == "quality" and meta["jobs"] == 2 and meta["small"] is True
    assert not [r for r in rows if "error" in r], [r["error"] for r in rows if "error" in r]
    assert {r["method"] for r in rows} == {"gaussians-tpsds", "nerf-sds"}
    for method in ("gaussians-tpsds", "nerf-sds"):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["step"])
        # --small: 8 steps, 2 evaluations (steps 4 and 8), seconds growing.
        assert [r["step"] for r in mine] == [4, 8]
        assert mine[0]["train_seconds"] < mine[1]["train_seconds"]
        for r in mine:
            assert r["prompt"] == "a red mug" and r["kind"] == "mug" and r["prior"] == "world"
            assert 0.0 <= r["iou"] <= 1.0 and r["janus"] is not None and r["num_elements"] > 0
    # No stray per-worker files left behind.
    assert sorted(p.name for p in results.glob("quality*")) == ["quality.jsonl"]


def test_speed_track(results):
    data = json.loads((results / "speed.json").read_text())
    names = [e["name"] for e in data["entries"]]
    assert names == ["gaussians-32-1view", "gaussians-32-4view", "nerf-16-1view"]
    for e in data["entries"]:
        assert not e["oom"] and e["ms_per_step"] > 0
        assert set(e["stage_ms"]) == {"render", "vae", "unet", "sds", "optimizer", "densify"}
    curves = {r["name"] for r in data["memory_curve"]}
    assert curves == {"gaussians-32-4view", "nerf-16-1view"}
    full = {f["name"]: f for f in data["full_generation"]}
    assert full["gaussians-sd21-default"]["extrapolated"] is False
    assert full["nerf-default"]["extrapolated"] is True and full["nerf-default"]["steps"] == 10000
    assert full["nerf-default"]["seconds"] > full["nerf-default"]["setup_seconds"]
    # Albedo warm-up and shaded steps cost differently: each phase is timed and priced on its own.
    phases = full["nerf-default"]["phases"]
    assert [p["from_step"] for p in phases] == [0, 2000] and sum(p["steps"] for p in phases) == 10000


def test_leak_slope_detects_growth_and_flatness():
    flat = [{"step": s, "allocated_gib": 1.0, "num_elements": 5} for s in range(10, 100, 10)]
    assert speed.leak_slope(flat) == pytest.approx(0.0)
    leaking = [{"step": s, "allocated_gib": 1.0 + s / 1024 / 100, "num_elements": 5} for s in range(10, 100, 10)]
    assert speed.leak_slope(leaking) == pytest.approx(1.0, rel=1e-6)  # 1 MiB per 100 steps
    # A count that never settles (a NeRF's occupied cells): the second half of the curve is used.
    churn = [{"step": s, "allocated_gib": 1.0 + s / 1024 / 50, "num_elements": s} for s in range(10, 110, 10)]
    assert speed.leak_slope(churn) == pytest.approx(2.0, rel=1e-6)


def test_report_on_the_suites_own_outputs(results):
    import report

    report.main([str(results)])
    summary = (results / "summary.md").read_text()
    assert "Gaussians" in summary or "gaussians" in summary
    with open(results / "final_metrics.csv") as f:
        methods = {r["method"] for r in csv.DictReader(f)}
    assert methods == {"gaussians-tpsds", "nerf-sds"}
    for png in ("quality_vs_seconds.png", "quality_vs_steps.png", "speed.png"):
        assert (results / png).stat().st_size > 1000


def test_quality_track_skips_runs_finished_in_earlier_files(results, tmp_path, capsys):
    """--skip-done carries a table over several calls: the run that reached its last step in an earlier file is
    not run again; a run cut short there (no row at its last step) is."""
    rows = [json.loads(l) for l in (results / "quality.jsonl").read_text().splitlines()][1:]
    earlier = tmp_path / "earlier.jsonl"
    cut = [r for r in rows if r["method"] == "nerf-sds" and r["step"] < r["steps_total"]]
    finished = [r for r in rows if r["method"] == "gaussians-tpsds"]
    assert cut and finished
    earlier.write_text("".join(json.dumps(r) + "\n" for r in finished + cut) + '{"cut short by a ki')
    assert quality.finished_runs([earlier]) == {("world", "gaussians-tpsds", "a red mug", 0)}
    out = tmp_path / "more.jsonl"
    quality.main(["--small", "--out", str(out), "--priors", "world", "--methods", "gaussians-tpsds", "nerf-sds",
                  "--prompts", "a red mug", "--seeds", "0", "--workers", "1", "--skip-done", str(earlier)])
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert lines[0]["meta"]["jobs"] == 1
    assert {r["method"] for r in lines[1:]} == {"nerf-sds"}


def test_quality_track_runs_each_prior_at_the_steps_its_config_gives_a_user():
    """Without --gaussian-steps a Gaussian method runs its prior config's run.steps (the bundled default's 200, the
    world config's 300); --gaussian-steps and a method's own run.steps override it, --small cuts it to 8."""
    import argparse

    args = argparse.Namespace(gaussian_steps=None, nerf_steps=3000, small=False)
    default_steps = quality.prior_default_steps("bundled")
    assert default_steps == 200 and quality.method_steps("gaussians-tpsds", args, "bundled") == default_steps
    assert quality.method_steps("gaussians-tpsds", args, "world") == quality.prior_default_steps("world") == 300
    assert quality.method_steps("nerf-sds", args, "bundled") == 3000
    quality.METHODS["eq-test"] = ([], ["run.steps=95"])
    try:
        assert quality.method_steps("eq-test", args, "bundled") == 95
    finally:
        del quality.METHODS["eq-test"]
    assert quality.method_steps("gaussians-tpsds", argparse.Namespace(gaussian_steps=180, nerf_steps=3000, small=False)) == 180
    assert quality.method_steps("gaussians-tpsds", argparse.Namespace(gaussian_steps=None, nerf_steps=8, small=True)) == 8
