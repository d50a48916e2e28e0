"""benchmarks/suite/losses.py, the losses table's summary: per-seed means and their spread, pairing against the
reference, and where each method's seconds come from, on constructed rows whose answers are known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite"
sys.path.insert(0, str(SUITE))
sys.path.insert(0, str(SUITE.parent))

import losses  # noqa: E402


def row(method, prompt, seed, iou, janus, seconds, source=0, step=300, **kw):
    return {"prior": "world", "method": method, "prompt": prompt, "seed": seed, "step": step, "steps_total": 300,
            "iou": iou, "janus": janus, "psnr_fg": 10.0, "r_precision": 1.0, "chamfer": 0.1,
            "train_seconds": seconds, "_source": source, **kw}


def test_seed_means_spread_pairs_and_seconds():
    runs = [
        row("sds", "a red mug", 0, 0.8, 0.0, 10.0), row("sds", "a blue chair", 0, 0.6, 0.5, 10.0),
        row("sds", "a red mug", 1, 0.9, 0.0, 10.0), row("sds", "a blue chair", 1, 0.7, 0.0, 10.0),
        row("pn", "a red mug", 0, 0.7, 0.0, 15.0), row("pn", "a blue chair", 0, 0.7, 0.0, 15.0),
        # a method that only ever ran in another pool, beside runs we know nothing about
        row("lonely", "a red mug", 0, 0.5, 0.0, 99.0, source=1),
    ]
    # An earlier, unfinished evaluation of a run is not its result.
    rows = runs + [row("pn", "a red mug", 0, 0.1, 1.0, 1.0, step=150)]
    final = losses.final_rows(rows)
    assert len(final) == len(runs)
    table = {e["method"]: e for e in losses.summarise(final, {("world", "sds"): 4.0})}
    sds = table["sds"]["all"]
    assert sds["iou"] == pytest.approx(0.75)  # seed means 0.7 and 0.8
    assert sds["iou_seed_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert table["pn"]["all"]["iou_seed_std"] is None  # one seed: no spread
    # Seconds: solo timing for sds; pn shared the pool with sds (its 15 s there scale by sds's 4/10); the lonely
    # method has no reference in its pool and is not given a number.
    assert table["sds"]["seconds"] == 4.0 and table["sds"]["seconds_source"] == "solo"
    assert table["pn"]["seconds"] == pytest.approx(6.0) and "scaled" in table["pn"]["seconds_source"]
    assert table["lonely"]["seconds"] is None and "not timed" in table["lonely"]["seconds_source"]
    tab = list(table.values())
    losses.paired(final, tab, "sds")
    vs = table["pn"]["vs_sds"]
    assert vs["pairs"] == 2  # only seed 0's two prompts are shared
    assert vs["iou_diff"] == pytest.approx(0.0)  # (-0.1 + 0.1) / 2
    assert (vs["iou_better"], vs["iou_worse"]) == (1, 1)
    assert (vs["janus_better"], vs["janus_worse"]) == (1, 0)  # lower Janus is better


def test_report_files_and_a_plot_with_an_untimed_method(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(json.dumps(r) for r in [
        {"meta": {"device": "test"}},
        row("sds", "a red mug", 0, 0.8, 0.0, 10.0), row("csd", "a red mug", 0, 0.5, 0.0, 12.0)]) + "\n")
    out = tmp_path / "out"
    result = losses.main([str(q), "--out", str(out)])
    names = {e["method"]: e for e in result["table"]}
    assert names["csd"]["seconds"] is None and names["csd"]["vs_sds"]["iou_diff"] == pytest.approx(-0.3)
    assert (out / "losses.png").stat().st_size > 10_000
    header = (out / "losses.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["prior", "method", "runs", "steps"]


def test_the_montage_shows_the_seed_it_is_asked_for(tmp_path):
    """Previews exist for seed 1 only: the default montage (seed 0) has nothing to show, --montage-seed 1 shows
    both methods, each cell the run's own picture."""
    from PIL import Image

    from quality import preview_name

    q = tmp_path / "q.jsonl"
    q.write_text("\n".join(json.dumps(r) for r in [
        {"meta": {"device": "test"}},
        row("sds", "a red mug", 1, 0.8, 0.0, 10.0), row("gs5", "a red mug", 1, 0.9, 0.0, 10.0)]) + "\n")
    pv = tmp_path / "pv"
    pv.mkdir()
    for method, colour in (("sds", (255, 0, 0)), ("gs5", (0, 0, 255))):
        Image.new("RGB", (64, 16), colour).save(pv / preview_name({"prior": "world", "method": method, "prompt": "a red mug", "seed": 1}))
    losses.main([str(q), "--out", str(tmp_path / "s0"), "--previews", str(pv)])
    assert not (tmp_path / "s0" / "montage_world.png").exists()
    losses.main([str(q), "--out", str(tmp_path / "s1"), "--previews", str(pv), "--montage-seed", "1", "--methods", "sds", "gs5"])
    px = Image.open(tmp_path / "s1" / "montage_world.png").convert("RGB")
    colours = {px.getpixel((x, y)) for x in range(px.width) for y in range(px.height)}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours
