"""benchmarks/prompt_suite.py: the public prompt list, DreamFusion's R-precision, and a small run with the bundled
prior and its evaluator CLIP on world prompts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import prompt_suite  # noqa: E402


def test_the_dreamfusion_list_is_complete_and_clean():
    prompts = prompt_suite.read_prompts(str(prompt_suite.DEFAULT_PROMPTS))
    assert len(prompts) == 415 and len(set(prompts)) == 415
    assert prompts[0] == "a 20-sided die made out of glass" and "a DSLR photo of a corgi puppy" in prompts
    assert all(p == " ".join(p.split()) and not p.startswith("#") for p in prompts)
    with pytest.raises(SystemExit, match="is not a file"):
        prompt_suite.read_prompts("/nonexistent/prompts.txt")


def test_r_precision_retrieves_true_views_and_fails_swapped_ones():
    """Ground-truth renders of world objects retrieve their own caption with the bundled evaluator; the same
    renders credited to the wrong prompts do not (the metric can fail)."""
    from splatgen.trainer import preview_cameras
    from splatgen.world.grammar import parse_prompt
    from splatgen.world.raycast import render_world

    prompts = ["a red mug", "a blue chair", "a yellow house", "a green tree"]
    scorer = prompt_suite.ClipScorer("bundled", None, torch.device("cpu"))
    cams = preview_cameras(4, 64, "cpu")
    rgb = torch.cat([render_world(parse_prompt(p), cams, background=(1.0, 1.0, 1.0))["rgb"] for p in prompts])
    owner = torch.arange(len(prompts)).repeat_interleave(4)
    q = prompt_suite.retrieval(scorer.images(rgb), scorer.texts(prompts), owner)
    assert float(q["correct"].float().mean()) >= 0.75
    swapped = prompt_suite.retrieval(scorer.images(rgb), scorer.texts(prompts), (owner + 1) % len(prompts))
    assert float(swapped["correct"].float().mean()) <= 0.25
    assert torch.equal(q["correct"], q["rank"] == 0)


def test_a_small_run_on_world_prompts(tmp_path):
    out = tmp_path / "suite"
    result = prompt_suite.main(["--out", str(out), "--prompts", "world", "--limit", "2", "--views", "3",
                                "run.steps=6", "model.num_points=150", "render.resolution=32", "camera.batch_size=4",
                                "guidance.loss=csd"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"] == result["summary"] and saved["summary"]["prompts"] == 2
    for rec in saved["prompts"]:
        assert rec["train_seconds"] > 0 and rec["distillation"]["loss"] == "csd"
        hits = [r == rec["prompt"] for r in rec["retrieved"]]
        assert len(hits) == 3 and rec["r_precision"] == pytest.approx(sum(hits) / 3)
    assert saved["summary"]["r_precision"] == pytest.approx(sum(r["r_precision"] for r in saved["prompts"]) / 2)
    from PIL import Image

    w, h = Image.open(out / "montage.png").size
    assert w == 4 * (4 * 96 + 6) and h == 96 + 14 + 6  # one row of four slots, two of them filled
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("index,prompt,r_precision")
