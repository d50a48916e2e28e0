"""What a fresh process pays before and after its steps: the evaluator's caption features come from the on-disk
cache (exactly, and never stale), and a run loads only the modules it uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from splatgen.guidance.text_encoders import EVALUATOR_FOLDER
from splatgen.resources import bundled_prior_path
from splatgen.world import clip_eval
from splatgen.world.clip_eval_cache import CACHE_ENV, CAPTION_FEATURES

EVALUATOR = bundled_prior_path() / EVALUATOR_FOLDER
needs_evaluator = pytest.mark.skipif(not EVALUATOR.is_dir(), reason="this installation has no bundled evaluator CLIP")


@pytest.fixture()
def counted(monkeypatch, tmp_path):
    """The evaluator folder copied to tmp_path (so it can be edited), the cache under tmp_path, and a count of
    the text tower's runs over the captions."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "evaluator"
    shutil.copytree(EVALUATOR, folder)
    calls = []
    original = clip_eval.Evaluator._caption_features

    def count(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(clip_eval.Evaluator, "_caption_features", count)
    return folder, calls


def _entries(tmp_path):
    return sorted((tmp_path / "cache" / CAPTION_FEATURES).glob("*.safetensors"))


@needs_evaluator
def test_a_second_evaluator_reads_the_caption_features_from_disk(counted, tmp_path):
    folder, calls = counted
    first = clip_eval.Evaluator(folder)
    assert len(calls) == 1 and len(_entries(tmp_path)) == 1
    second = clip_eval.Evaluator(folder)
    assert len(calls) == 1  # not recomputed
    assert second.text_features.dtype == torch.float32
    assert torch.equal(second.text_features, first.text_features)  # bit for bit what the tower computes


@needs_evaluator
def test_edited_evaluator_files_are_not_served_stale(counted, tmp_path):
    folder, calls = counted
    clip_eval.Evaluator(folder)
    config = folder / "open_clip_config.json"
    stat = config.stat()
    data = json.loads(config.read_text())
    data["splatgen"]["edited"] = True
    config.write_text(json.dumps(data))
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time: the content is the key
    clip_eval.Evaluator(folder)
    assert len(calls) == 2 and len(_entries(tmp_path)) == 2


@needs_evaluator
def test_a_broken_cache_entry_or_folder_only_costs_time(counted, tmp_path, monkeypatch):
    folder, calls = counted
    reference = clip_eval.Evaluator(folder).text_features
    (entry,) = _entries(tmp_path)
    entry.write_bytes(b"not a safetensors file")
    assert torch.equal(clip_eval.Evaluator(folder).text_features, reference)
    assert len(calls) == 2 and entry.stat().st_size > 100  # recomputed and rewritten
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker))  # the cache folder cannot be made
    assert torch.equal(clip_eval.Evaluator(folder).text_features, reference)
    assert len(calls) == 3


#: Modules a run of the bundled prior does not use until after its steps, or never: the world's evaluation and
#: evaluator CLIP, the exporters' and viewer's libraries, diffusers' pipelines, the CUDA rasteriser.
NOT_FOR_THE_GUIDANCE = ("splatgen.world.clip_eval", "splatgen.world.metrics", "splatgen.world.raycast",
                        "splatgen.world.oracle", "splatgen.viewer", "diffusers.pipelines", "gsplat", "skimage",
                        "trimesh", "xatlas", "viser", "imageio", "matplotlib")


def test_building_the_bundled_guidance_loads_only_what_it_uses():
    code = (
        "import sys\n"
        "import splatgen.cli\n"
        "print(sorted(m for m in ('torch', 'numpy', 'omegaconf', 'yaml') if m in sys.modules))\n"
        "from splatgen.components import build_guidance\n"
        "from splatgen.config import load_config\n"
        "g = build_guidance(load_config(), 'cpu')\n"
        "print(type(g).__name__, sorted(m for m in sys.argv[1:] if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *NOT_FOR_THE_GUIDANCE], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    cli_line, guidance_line = r.stdout.strip().split("\n")[-2:]
    assert cli_line == "[]"  # parsing a command line loads no torch, numpy or config library
    assert guidance_line == "PixelGuidance []"


@needs_evaluator
def test_the_evaluator_clip_loads_only_when_the_run_evaluates(tmp_path, monkeypatch):
    import splatgen.api
    from test_cli_errors import TINY

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    clip_eval.bundled_evaluator.cache_clear()
    splatgen.api.generate("a red mug", config="world", overrides=TINY, out_dir=tmp_path / "quiet")
    assert clip_eval.bundled_evaluator.cache_info().currsize == 0
    result = splatgen.api.generate("a red mug", config="world", overrides=[*TINY, "run.evaluate=true"],
                                   out_dir=tmp_path / "evaluated")
    assert clip_eval.bundled_evaluator.cache_info().currsize == 1
    assert "r_precision" in result.metrics


def test_the_cache_key_follows_the_files_captions_and_thread_count(tmp_path):
    from splatgen.world.clip_eval_cache import caption_features_key

    def key(content: bytes, caption: str, threads: int) -> str:
        (tmp_path / "weights.bin").write_bytes(content)
        torch.set_num_threads(threads)
        return caption_features_key(tmp_path, [caption], torch.device("cpu"))

    before = torch.get_num_threads()
    try:
        reference = key(b"\0", "a red mug", 1)
        assert key(b"\0", "a red mug", 1) == reference
        assert key(b"\1", "a red mug", 1) != reference  # the files' bytes
        assert key(b"\0", "a blue mug", 1) != reference  # the captions
        assert key(b"\0", "a red mug", 2) != reference  # the BLAS may sum in another order
    finally:
        torch.set_num_threads(before)
