"""benchmarks/world_class_spread.py and benchmarks/world_silhouette_limit.py: the diagnostics of where a
generation's silhouette IoU goes, at smoke size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import world_class_spread  # noqa: E402
import world_silhouette_limit  # noqa: E402

from splatgen.world.grammar import parse_prompt  # noqa: E402
from splatgen.world.metrics import heldout_cameras  # noqa: E402
from splatgen.world.raycast import render_world  # noqa: E402


def test_scores_of_a_mask_against_itself_and_a_dilated_one():
    gt = render_world(parse_prompt("a red mug"), heldout_cameras(4, 32), supersample=2)["mask"]
    assert world_class_spread.scores(gt, gt) == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
    fat = torch.nn.functional.max_pool2d(gt.permute(0, 3, 1, 2), 5, 1, 2).permute(0, 2, 3, 1)
    s = world_class_spread.scores(fat, gt)
    assert s["recall"] == 1.0 and s["precision"] < 0.9 and s["iou"] == s["precision"]


def test_class_spread_writes_every_prompt(tmp_path):
    out = tmp_path / "cs.json"
    assert world_class_spread.main(["--prompts", "a red mug", "a blue chair", "--variations", "2", "--views", "4",
                                    "--resolution", "24", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [r["prompt"] for r in d["prompts"]] == ["a red mug", "a blue chair"]
    for r in d["prompts"]:
        # variations are other objects of the kind: overlapping the canonical one, never equal to it
        assert 0.3 < r["variation_iou"] < 1.0 and r["variations"] == 2
        assert 0.3 < r["mean_mask_iou"] <= 1.0
    assert abs(d["mean_over_prompts"]["variation_iou"] - sum(r["variation_iou"] for r in d["prompts"]) / 2) < 1e-9


def test_silhouette_limit_fit_draws_the_object(tmp_path):
    out = tmp_path / "sl.json"
    assert world_silhouette_limit.main(["--prompts", "a red mug", "--models", "fit", "--steps", "30",
                                        "--out", str(out)]) == 0
    r = json.loads(out.read_text())["runs"][0]
    assert r["model"] == "fit" and r["steps"] == 30
    assert 0.0 <= r["fp_within_1px"] <= r["fp_within_2px"] <= 1.0
    assert r["iou"] > 0.3  # 30 L2 steps already find the mug; a broken fit or report stays near 0
