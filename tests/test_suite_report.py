"""The benchmark suite's report generator on synthetic results whose answers are known analytically."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_report():
    spec = importlib.util.spec_from_file_location("suite_report", ROOT / "benchmarks" / "suite" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["suite_report"] = mod
    spec.loader.exec_module(mod)
    return mod


report = _load_report()


def run_rows(method, points, prior="world", prompt="a red mug", kind="mug", seed=0, metric="iou", **extra):
    """Checkpoints of one run from (step, train_seconds, value) triples."""
    last = max(s for s, _, _ in points)
    rows = []
    for step, sec, val in points:
        r = {"method": method, "prior": prior, "prompt": prompt, "kind": kind, "seed": seed, "step": step,
             "steps_total": last, "train_seconds": sec, "iou": None, "psnr_fg": 12.0, "chamfer": 0.05,
             "janus": None, "r_precision": None, "num_elements": 1000 + step}
        r[metric] = val
        r.update(extra)
        rows.append(r)
    return rows


def linear_run(method, t_end, v_end, n=11, steps_per_s=10.0, **kw):
    """IoU rising linearly 0 -> v_end over t_end seconds, n checkpoints."""
    ts = np.linspace(0.0, t_end, n)
    return run_rows(method, [(int(round(t * steps_per_s)), float(t), float(v_end * t / t_end)) for t in ts], **kw)


def fast_vs_nerf(prior="world", g_seconds=10.0):
    """Gaussians: IoU 0 -> 0.8 linearly over ``g_seconds`` (checkpoints not on the answer); NeRF: 0 -> 0.6 over
    100 s. NeRF final = 0.6, reached by the Gaussians at 0.75 * g_seconds."""
    rows = []
    for seed in (0, 1, 2):
        rows += linear_run("gaussians-tpsds", g_seconds, 0.8, n=5, seed=seed, prior=prior)
        rows += linear_run("nerf-sds", 100.0, 0.6, n=6, seed=seed, prior=prior, steps_per_s=1.0)
    return rows


# ------------------------------------------------------------------------------------ time to quality / ratios


def test_time_to_quality_interpolates_between_checkpoints():
    # checkpoints (0 s, 0.0), (2 s, 0.5), (6 s, 0.7): 0.6 is reached half way between 2 s and 6 s -> 4 s
    rows = run_rows("gaussians-tpsds", [(0, 0.0, 0.0), (20, 2.0, 0.5), (60, 6.0, 0.7)])
    res = report.time_to_quality(rows, "iou", levels=(0.6, 0.25), x="train_seconds")
    by_level = {r["level"]: r for r in res}
    assert by_level[0.6]["median"] == pytest.approx(4.0)
    assert by_level[0.25]["median"] == pytest.approx(1.0)
    steps = report.time_to_quality(rows, "iou", levels=(0.6,), x="step")
    assert steps[0]["median"] == pytest.approx(40.0)
    # lower-is-better metrics cross downwards
    ch = run_rows("gaussians-tpsds", [(0, 0.0, 0.2), (10, 1.0, 0.1), (20, 2.0, 0.0)], metric="chamfer")
    assert report.time_to_quality(ch, "chamfer", levels=(0.05,))[0]["median"] == pytest.approx(1.5)


def test_gaussians_vs_nerf_ratio_is_analytic():
    rows = fast_vs_nerf()
    rat = report.ratios(rows, "iou")
    (g,) = rat["gaussians_vs_nerf"]
    assert g["method"] == "gaussians-tpsds" and g["nerf_methods"] == ["nerf-sds"]
    assert g["level_value"] == pytest.approx(0.6)
    assert g["gaussians_seconds"] == pytest.approx(7.5)  # 0.6 / 0.8 * 10 s
    assert g["nerf_seconds"] == pytest.approx(100.0)  # median total train_seconds of the NeRF runs
    assert g["ratio"] == pytest.approx(0.075)
    # the "nerf_final" level of time_to_quality is the same level
    ttq = [r for r in report.time_to_quality(rows, "iou") if r["level"] == report.NERF_FINAL]
    assert {r["method"]: r["median"] for r in ttq}["gaussians-tpsds"] == pytest.approx(7.5)


def test_unreached_levels_give_null_and_fraction():
    # three runs: only one reaches 0.7 -> more than half never reach -> median null, fraction 1/3
    rows = (linear_run("gaussians-tpsds", 10.0, 0.8, seed=0) + linear_run("gaussians-tpsds", 10.0, 0.6, seed=1)
            + linear_run("gaussians-tpsds", 10.0, 0.5, seed=2))
    res = {r["level"]: r for r in report.time_to_quality(rows, "iou", levels=(0.7, 0.55))}
    assert res[0.7]["median"] is None
    assert res[0.7]["fraction_reached"] == pytest.approx(1 / 3) and res[0.7]["n_reached"] == 1
    assert res[0.7]["times"].count(math.inf) == 2
    # 0.55: reached by two of three (at 6.875 s and 9.1667 s), median = the larger one
    assert res[0.55]["fraction_reached"] == pytest.approx(2 / 3)
    assert res[0.55]["median"] == pytest.approx(0.55 / 0.6 * 10.0)


def test_curves_hold_last_value_and_exclude_before_first_checkpoint():
    a = run_rows("gaussians-tpsds", [(0, 0.0, 0.0), (100, 10.0, 1.0)], seed=0)
    b = run_rows("gaussians-tpsds", [(50, 5.0, 0.2), (80, 8.0, 0.5)], seed=1)
    c = report.curves(a + b, "iou", x="step", grid=[20, 50, 65, 100, 150])[("world", "gaussians-tpsds")]
    assert list(c.n) == [1, 2, 2, 2, 2]
    assert c.mean[0] == pytest.approx(0.2)  # only run a: b starts at step 50
    assert c.std[0] == pytest.approx(0.0)
    assert c.mean[2] == pytest.approx((0.65 + 0.35) / 2)  # both interpolated
    assert c.mean[3] == pytest.approx((1.0 + 0.5) / 2)  # b holds 0.5 past its last checkpoint (80)
    assert c.mean[4] == pytest.approx((1.0 + 0.5) / 2)  # both hold
    assert c.std[3] == pytest.approx(0.25)  # population std of {1.0, 0.5}
    only_b = report.curves(b, "iou", x="train_seconds", grid=[1.0, 5.0, 9.0])[("world", "gaussians-tpsds")]
    assert only_b.n[0] == 0 and np.isnan(only_b.mean[0])
    assert only_b.mean[1] == pytest.approx(0.2) and only_b.mean[2] == pytest.approx(0.5)


def tpsds_vs_uniform(t_slope=0.8 / 100, u_slope=0.8 / 200, prior="world"):
    rows = []
    for seed in (0, 1):
        for method, slope in (("gaussians-tpsds", t_slope), ("gaussians-uniform", u_slope)):
            pts = [(s, s / 10.0, min(1.0, slope * s)) for s in range(0, 301, 40)]
            rows += run_rows(method, pts, seed=seed, prior=prior)
    return rows


def test_tpsds_vs_uniform_step_ratio():
    rat = report.ratios(tpsds_vs_uniform(), "iou", levels=(0.6, 0.7))
    by = {r["level"]: r for r in rat["tpsds_vs_uniform"]}
    assert by[0.6]["tpsds_steps"] == pytest.approx(75.0) and by[0.6]["uniform_steps"] == pytest.approx(150.0)
    assert by[0.6]["ratio"] == pytest.approx(0.5) and by[0.6]["tpsds_fewer"] is True
    assert by[0.7]["ratio"] == pytest.approx(87.5 / 175.0)
    assert rat["gaussians_vs_nerf"] == []  # no NeRF rows
    slow = report.ratios(tpsds_vs_uniform(t_slope=0.8 / 200, u_slope=0.8 / 100), "iou", levels=(0.6,))
    assert slow["tpsds_vs_uniform"][0]["ratio"] == pytest.approx(2.0)
    assert slow["tpsds_vs_uniform"][0]["tpsds_fewer"] is False


def test_a_level_both_reach_by_the_first_evaluation_is_a_tie_left_out_of_the_verdict():
    rows = []
    for seed in (0, 1):
        # Both start above 0.5 at their first checkpoint (step 30); TP-SDS reaches 0.8 sooner.
        rows += run_rows("gaussians-tpsds", [(30, 1.0, 0.55), (60, 2.0, 0.8)], seed=seed)
        rows += run_rows("gaussians-uniform", [(30, 1.0, 0.52), (60, 2.0, 0.7), (90, 3.0, 0.8)], seed=seed)
    rat = report.ratios(rows, "iou", levels=(0.5, 0.8))
    by = {r["level"]: r for r in rat["tpsds_vs_uniform"]}
    assert by[0.5]["tie_at_first_eval"] is True and by[0.5]["tpsds_fewer"] is None
    assert by[0.8]["tie_at_first_eval"] is False and by[0.8]["tpsds_fewer"] is True
    status = [t for t in report.targets(rows, None, "iou", (0.5, 0.8)) if t["target"].startswith("TP-SDS")]
    assert [t["status"] for t in status] == ["met"]


def test_final_metrics_and_kinds():
    rows = (linear_run("gaussians-tpsds", 10.0, 0.8, seed=0, kind="mug")
            + linear_run("gaussians-tpsds", 10.0, 0.6, seed=1, kind="mug")
            + linear_run("gaussians-tpsds", 20.0, 0.4, seed=0, prompt="a blue chair", kind="chair"))
    (fm,) = report.final_metrics(rows)
    assert fm["n_runs"] == 3
    assert fm["iou_mean"] == pytest.approx(0.6) and fm["iou_std"] == pytest.approx(np.std([0.8, 0.6, 0.4]))
    assert fm["train_seconds_mean"] == pytest.approx(40 / 3) and fm["steps_mean"] == pytest.approx(400 / 3)
    assert fm["janus_n"] == 0 and fm["janus_mean"] is None
    kinds = {r["kind"]: r for r in report.final_by_kind(rows)}
    assert kinds["mug"]["mean"] == pytest.approx(0.7) and kinds["mug"]["n"] == 2
    assert kinds["chair"]["mean"] == pytest.approx(0.4)


def test_speed_targets_from_data_including_out_of_memory():
    speed = {"entries": [
        {"name": "gaussians-512-1view", "representation": "gaussians", "resolution": 512, "views": 1,
         "ms_per_step": 45.0, "peak_gib": 7.99},
        {"name": "gaussians-512-4view", "representation": "gaussians", "oom": True, "note": "out of memory: ..."},
        {"name": "gaussians-256-1view", "representation": "gaussians", "resolution": 256, "views": 1,
         "ms_per_step": 500.0, "peak_gib": 30.0},  # not 512: not a target entry
    ], "targets": {"ms_per_step_1_view": 45.0, "ms_per_step_4_views": 120.0, "peak_gib": 8.0}}
    got = {(t["target"].split(":")[0], t["scope"]): t["status"] for t in report.targets([], speed)}
    assert got[("SD-shaped step at 512x512, 1 view", "gaussians-512-1view")] == "met"  # 45 <= 45
    assert got[("SD-shaped step at 512x512, 4 views", "gaussians-512-4view")] == "not met"  # OOM
    assert got[("peak memory at 512x512 < 8 GiB", "gaussians-512-1view")] == "met"
    assert got[("peak memory at 512x512 < 8 GiB", "gaussians-512-4view")] == "not met"
    assert not any("256" in scope for _, scope in got)
    speed["targets"]["ms_per_step_1_view"] = 40.0  # the file's own targets win over the defaults
    got = {(t["target"].split(":")[0], t["scope"]): t["status"] for t in report.targets([], speed)}
    assert got[("SD-shaped step at 512x512, 1 view", "gaussians-512-1view")] == "not met"


def test_fmt_never_prints_nan():
    assert report.fmt(float("nan")) == report.DASH and report.fmt(None) == report.DASH
    assert report.fmt(math.inf) == report.DASH and report.fmt("NaN") == report.DASH
    assert report.fmt(0.123456) == "0.123" and report.fmt(12.345) == "12.3" and report.fmt(1234.5) == "1234"


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture(autouse=True)
def _no_slow_environment(monkeypatch):
    """environment() imports diffusers/transformers (seconds): stub it; write_json stays the real one."""
    common = report._common()
    monkeypatch.setattr(common, "environment", lambda: {"device": "test", "date": "today"})


def write_results(d: Path, rows, speed=None, meta=True):
    lines = []
    if meta:
        lines.append(json.dumps({"meta": {"environment": {"device": "NVIDIA H100 80GB HBM3", "date": "2026-11-21",
                                                          "torch": "2.11"},
                                          "command": "python benchmarks/suite/run_quality.py --out RESULTS"}}))
    lines += [json.dumps(r) for r in rows]
    (d / "quality.jsonl").write_text("\n".join(lines) + "\n")
    if speed is not None:
        (d / "speed.json").write_text(json.dumps(speed))


def speed_payload(ms1=40.0, ms4=130.0, peak=3.5):
    return {
        "environment": {"device": "NVIDIA H100 80GB HBM3", "date": "2026-11-21"},
        "command": "python benchmarks/suite/run_speed.py --out RESULTS",
        "entries": [
            {"name": "gaussians-512-1view", "representation": "gaussians", "resolution": 512, "views": 1,
             "ms_per_step": ms1, "stage_ms": {"render": 5.0, "vae": 15.0, "unet": 18.0}, "peak_gib": peak,
             "num_elements": 200000, "note": "a | b"},
            {"name": "gaussians-512-4view", "representation": "gaussians", "resolution": 512, "views": 4,
             "ms_per_step": ms4, "stage_ms": {"render": 9.0, "vae": 50.0, "unet": 60.0, "densify": 1.0},
             "peak_gib": peak, "num_elements": 200000},
            {"name": "nerf-512-1view", "representation": "nerf", "resolution": 512, "views": 1,
             "ms_per_step": 400.0, "stage_ms": {"render": 300.0}, "peak_gib": 20.0, "num_elements": 1000},
        ],
        "full_generation": [{"name": "gaussians-sd21-default", "representation": "gaussians", "steps": 1200,
                             "seconds": 120.5, "extrapolated": True, "note": "from ms/step"}],
        "memory_curve": [{"name": "gaussians-512-4view", "step": s, "allocated_gib": 2 + s / 1000,
                          "reserved_gib": 3 + s / 1000, "num_elements": 1000 + s} for s in range(0, 500, 100)],
    }


def read_csv(path: Path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def md_tables(text: str):
    """Tables of a Markdown text: lists of consecutive lines starting with '|'."""
    tables, cur = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def target_status(summary: str, target_start: str, scope: str) -> str:
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith(target_start) and cells[1] == scope:
            return cells[3].strip("*")
    raise AssertionError(f"no target row {target_start!r} / {scope!r}")


def check_markdown(summary: str):
    tables = md_tables(summary)
    assert tables
    for t in tables:
        n = t[0].count("|")
        assert all(line.count("|") == n for line in t), t
        assert re.fullmatch(r"\|( --- \|)+", t[1])
        for line in t:  # no NaN / inf / None strings in any cell ("—" instead)
            assert not re.search(r"\b(nan|inf|infinity|none|null)\b", line, flags=re.IGNORECASE), line
    assert not re.search(r"\bnan\b", summary, flags=re.IGNORECASE)


def test_cli_writes_everything(tmp_path):
    rows = fast_vs_nerf("world") + tpsds_vs_uniform(prior="bundled")
    write_results(tmp_path, rows, speed_payload())
    report.main([str(tmp_path), "--levels", "0.5", "0.6", "0.7"])
    for name in ("final_metrics.csv", "final_iou_by_kind.csv", "time_to_quality.csv", "curves.csv", "speed.csv",
                 "speed_full_generation.csv", "speed_memory_curve.csv", "quality_vs_seconds.png",
                 "quality_vs_steps.png", "speed.png", "summary.md", "report.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    header, body = read_csv(tmp_path / "curves.csv")
    assert header == ["prior", "method", "metric", "x_kind", "x", "mean", "std", "n"]
    assert {r[3] for r in body} == {"step", "train_seconds"} and {r[2] for r in body} == {"iou", "psnr_fg", "chamfer"}
    assert all(len(r) == len(header) and int(r[7]) > 0 for r in body)
    header, body = read_csv(tmp_path / "final_metrics.csv")
    assert header[:3] == ["prior", "method", "n_runs"]
    for col in report.FINAL_COLUMNS:
        assert {f"{col}_mean", f"{col}_std", f"{col}_n"} <= set(header)
    assert {(r[0], r[1]) for r in body} == {("world", "gaussians-tpsds"), ("world", "nerf-sds"),
                                            ("bundled", "gaussians-tpsds"), ("bundled", "gaussians-uniform")}
    header, body = read_csv(tmp_path / "time_to_quality.csv")
    assert header == ["prior", "method", "metric", "level", "level_value", "x_kind", "median", "n_runs",
                      "n_reached", "fraction_reached"]
    hit = [r for r in body if r[:2] == ["world", "gaussians-tpsds"] and r[3] == "nerf_final" and r[5] == "train_seconds"]
    assert len(hit) == 1 and float(hit[0][6]) == pytest.approx(7.5)
    header, body = read_csv(tmp_path / "speed.csv")
    assert header[:5] == ["name", "representation", "resolution", "views", "ms_per_step"]
    assert "stage_densify_ms" in header and len(body) == 3

    summary = (tmp_path / "summary.md").read_text()
    check_markdown(summary)
    assert "NVIDIA H100 80GB HBM3" in summary and "python benchmarks/suite/run_quality.py --out RESULTS" in summary
    assert "python benchmarks/suite/run_speed.py --out RESULTS" in summary
    for name in ("quality_vs_seconds.png", "speed.png", "curves.csv", "final_metrics.csv"):
        assert f"]({name})" in summary
    assert target_status(summary, "Gaussians reach NeRF", "world / gaussians-tpsds") == "met"  # 0.075 <= 0.1
    assert target_status(summary, "TP-SDS reaches", "bundled") == "met"
    assert target_status(summary, "SD-shaped step at 512x512, 1 view", "gaussians-512-1view") == "met"  # 40 <= 45
    assert target_status(summary, "SD-shaped step at 512x512, 4 views", "gaussians-512-4view") == "not met"  # 130
    assert target_status(summary, "peak memory", "gaussians-512-1view") == "met"
    payload = json.loads((tmp_path / "report.json").read_text())
    assert payload["ratios"]["gaussians_vs_nerf"][0]["ratio"] == pytest.approx(0.075)
    assert payload["report_environment"] == {"device": "test", "date": "today"}


def test_cli_not_met_cases(tmp_path):
    # Gaussians need 0.75 * 20 = 15 s for NeRF's 0.6 of 100 s: ratio 0.15 > 0.1; TP-SDS slower than uniform;
    # 1-view step 50 ms > 45; peak 9 GiB >= 8
    rows = fast_vs_nerf("world", g_seconds=20.0) + tpsds_vs_uniform(0.8 / 200, 0.8 / 100, prior="bundled")
    write_results(tmp_path, rows, speed_payload(ms1=50.0, ms4=100.0, peak=9.0))
    report.main([str(tmp_path), "--no-plots"])
    summary = (tmp_path / "summary.md").read_text()
    check_markdown(summary)
    assert target_status(summary, "Gaussians reach NeRF", "world / gaussians-tpsds") == "not met"
    assert target_status(summary, "TP-SDS reaches", "bundled") == "not met"
    assert target_status(summary, "SD-shaped step at 512x512, 1 view", "gaussians-512-1view") == "not met"
    assert target_status(summary, "SD-shaped step at 512x512, 4 views", "gaussians-512-4view") == "met"
    assert target_status(summary, "peak memory", "gaussians-512-4view") == "not met"


def test_cli_without_speed_and_without_nerf(tmp_path):
    rows = tpsds_vs_uniform(prior="world")
    rows[3]["iou"] = None  # a null metric on a checkpoint must not break anything
    write_results(tmp_path, rows, speed=None, meta=False)
    with open(tmp_path / "quality.jsonl", "a") as f:  # a run that raised, and a line cut short by a kill
        f.write(json.dumps({"prior": "world", "method": "nerf-sds", "prompt": "a red mug", "seed": 0, "steps": 10,
                            "error": "RuntimeError: boom | bang"}) + "\n")
        f.write('{"method": "gaussians-tpsds", "st')
    report.main([str(tmp_path)])
    for name in ("final_metrics.csv", "time_to_quality.csv", "curves.csv", "quality_vs_seconds.png",
                 "quality_vs_steps.png", "summary.md"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "speed.csv").exists() and not (tmp_path / "speed.png").exists()
    summary = (tmp_path / "summary.md").read_text()
    check_markdown(summary)
    assert target_status(summary, "Gaussians reach NeRF", report.DASH) == "not measured"
    assert target_status(summary, "SD-shaped step at 512x512, 1 view", report.DASH) == "not measured"
    assert target_status(summary, "peak memory", report.DASH) == "not measured"
    assert target_status(summary, "TP-SDS reaches", "world") == "met"
    assert "Not measured: no NeRF runs" in summary and "Not measured: no `speed.json`" in summary
    assert "1 run(s) failed" in summary and "RuntimeError: boom" in summary
    assert "1 line(s) of quality.jsonl were not JSON records" in summary
    _, body = read_csv(tmp_path / "time_to_quality.csv")
    assert not any(r[3] == "nerf_final" for r in body)  # no NeRF, no nerf_final level


def test_runs_without_seconds_are_not_measured_rather_than_unreached():
    """A method whose solo seconds are missing (timing cut short) must read 'not measured', not 'not met'."""
    rows = fast_vs_nerf()
    for r in rows:
        if r["method"] == "gaussians-tpsds":
            r["train_seconds"] = None
    rat = report.ratios(rows, "iou")
    g = rat["gaussians_vs_nerf"][0]
    assert g["gaussians_seconds"] is None and g["gaussians_seconds_measured"] is False
    status = [t for t in report.targets(rows, None, "iou", (0.5,)) if t["target"].startswith("Gaussians reach")]
    assert [t["status"] for t in status] == ["not measured"]
    ttq = [t for t in report.time_to_quality(rows, "iou", (0.5,)) if t["method"] == "gaussians-tpsds"]
    assert ttq[0]["median"] is None and ttq[0]["n_runs"] == 0
