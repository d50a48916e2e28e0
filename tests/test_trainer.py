"""End-to-end generation on CPU with tiny random-weight diffusers models, and the error cases of a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import splatgen
from splatgen.cli import main as cli_main
from splatgen.config import load_config
from splatgen.resources import config_names
from splatgen.errors import DeviceError, ModelLoadError, NonFiniteError, PromptError, RunDirError
from splatgen.export import load_ply
from splatgen.guidance.tiny import make_tiny_pixel, make_tiny_sd

TINY_RUN = [
    "run.steps=6", "run.log_every=1", "run.preview_views=2", "run.preview_resolution=24", "run.evaluate=false",
    "model.num_points=150", "render.resolution=24", "camera.batch_size=2",
    "densify.start=0.0", "densify.stop=1.0", "densify.every=3", "densify.grad_threshold=1e-9",
    "densify.dense_scale=0.05",
]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def tiny_pixel(tmp_path_factory) -> Path:
    return make_tiny_pixel(tmp_path_factory.mktemp("tiny_pixel"))


def sd_overrides(folder: Path) -> list[str]:
    return ["guidance.type=stable-diffusion", f"guidance.model={folder}", "guidance.guidance_scale=7.5", *TINY_RUN]


def test_latent_generation_end_to_end(tiny_sd, tmp_path):
    out = tmp_path / "run"
    res = splatgen.generate("a red mug", out_dir=out, overrides=sd_overrides(tiny_sd))
    # Files hold what the run produced.
    back = load_ply(out / "splats.ply")
    for k, v in res.rep.module.params.items():
        assert torch.equal(back.params[k].detach(), v.detach().cpu()), k
    assert load_config([out / "config.yaml"]) == res.config
    assert res.config.prompt == "a red mug"
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "event" not in r]
    assert steps == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "event" not in r)
    densify_events = [r for r in rows if r.get("event") == "densify"]
    assert len(densify_events) == 2 and densify_events[-1]["total"] == len(res.rep.module)
    assert len(res.rep.module) > 150, "a threshold of ~0 must grow the model"
    from PIL import Image

    assert Image.open(out / "previews.png").size == (48, 24)
    assert (out / "checkpoints" / "final.pt").is_file()


def test_reference_steps_stretch_the_densify_interval_of_longer_runs(tiny_sd, tmp_path):
    # TINY_RUN densifies every 3 steps over the whole run: 12 steps densify 4 times, and with reference_steps=6
    # as often as a 6-step run does (every 6 steps: twice).
    def events(folder: Path, extra: list[str]) -> list[int]:
        splatgen.generate("a red mug", out_dir=folder, overrides=sd_overrides(tiny_sd) + ["run.steps=12", *extra])
        rows = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r["step"] for r in rows if r.get("event") == "densify"]

    assert events(tmp_path / "a", []) == [3, 6, 9, 12]
    assert events(tmp_path / "b", ["densify.reference_steps=6"]) == [6, 12]
    assert events(tmp_path / "c", ["densify.reference_steps=12"]) == [3, 6, 9, 12]


def test_optimisation_moves_parameters(tiny_sd):
    init = splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd) + ["run.steps=1", "densify.enabled=false"])
    more = splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd) + ["run.steps=4", "densify.enabled=false"])
    assert not torch.equal(init.rep.module.params["sh0"], more.rep.module.params["sh0"])


def test_pixel_generation(tiny_pixel, tmp_path):
    res = splatgen.generate(
        "a green chair", out_dir=tmp_path / "px",
        overrides=["guidance.type=pixel", f"guidance.model={tiny_pixel}", *TINY_RUN],
    )
    assert res.rep.module.is_finite() and (tmp_path / "px" / "splats.ply").is_file()


def test_same_seed_same_result(tiny_sd):
    a = splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd) + ["run.seed=3"])
    b = splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd) + ["run.seed=3"])
    c = splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd) + ["run.seed=4"])
    for k in a.rep.module.params:
        assert torch.equal(a.rep.module.params[k], b.rep.module.params[k]), k
    assert not torch.equal(a.rep.module.params["means"], c.rep.module.params["means"])


def test_guidance_scale_milestones_change_the_scale_the_step_uses(tiny_sd, monkeypatch):
    import splatgen.trainer as trainer_module

    seen = []
    original = trainer_module.sds_loss

    def recording(backend, x0, eps_pair, baseline, w, scale, grad_clip):
        seen.append(scale)
        return original(backend, x0, eps_pair, baseline, w, scale, grad_clip)

    monkeypatch.setattr(trainer_module, "sds_loss", recording)
    base = sd_overrides(tiny_sd) + ["run.seed=3"]
    splatgen.generate("a red mug", overrides=base + ["guidance.guidance_scale=9",
                                                     "guidance.guidance_scale_milestones=[[0.5,2.0],[0.8,1.0]]"])
    assert seen == [9.0, 9.0, 9.0, 2.0, 2.0, 1.0]  # 6 steps: from step 3 (0.5) and step 5 (0.8 of 6 = 4.8) on
    seen.clear()
    # the default config's own milestone ([[0.5, 3.5]]) stays unless it is emptied: one scale needs both keys
    splatgen.generate("a red mug", overrides=base + ["guidance.guidance_scale=9"])
    assert seen == [9.0, 9.0, 9.0, 3.5, 3.5, 3.5]
    seen.clear()
    splatgen.generate("a red mug", overrides=base + ["guidance.guidance_scale=9", "guidance.guidance_scale_milestones=[]"])
    assert seen == [9.0] * 6


def test_python_api_kwargs_overrides(tiny_sd):
    res = splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd), run={"steps": 2}, model__num_points=90,
                            densify={"enabled": False})
    assert res.config.run.steps == 2 and len(res.rep.module) == 90
    img = res.render(n_views=3, resolution=16)
    assert img.shape == (3, 16, 16, 3) and float(img.min()) >= 0.0 and float(img.max()) <= 1.0


def test_existing_run_folder_is_not_overwritten(tiny_sd, tmp_path):
    out = tmp_path / "run"
    splatgen.generate("a red mug", out_dir=out, overrides=sd_overrides(tiny_sd) + ["run.steps=1"])
    before = (out / "splats.ply").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        splatgen.generate("a blue mug", out_dir=out, overrides=sd_overrides(tiny_sd) + ["run.steps=1"])
    assert (out / "splats.ply").read_bytes() == before
    assert load_config([out / "config.yaml"]).prompt == "a red mug"
    splatgen.generate("a blue mug", out_dir=out, overrides=sd_overrides(tiny_sd) + ["run.steps=1"], overwrite=True)
    assert load_config([out / "config.yaml"]).prompt == "a blue mug"


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(prompt, tiny_sd):
    with pytest.raises(PromptError, match="empty"):
        splatgen.generate(prompt, overrides=sd_overrides(tiny_sd))


def test_long_prompt_warns_it_was_cut(tiny_sd):
    long = "a " + " ".join(["very"] * 40) + " red mug"
    with pytest.warns(UserWarning, match="(?i)truncat|cut"):
        splatgen.generate(long, overrides=sd_overrides(tiny_sd) + ["run.steps=1"])


def test_missing_model_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        splatgen.generate("a red mug", overrides=["guidance.type=stable-diffusion", f"guidance.model={missing}", *TINY_RUN])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_but_absent(tiny_sd):
    with pytest.raises(DeviceError, match="CUDA"):
        splatgen.generate("a red mug", overrides=sd_overrides(tiny_sd) + ["run.device=cuda"])


class NaNGradientsFrom:
    """Wraps a guidance so the gradient reaching the renders turns NaN from the k-th step on, as an fp16 VAE
    backward that overflows would do."""

    def __init__(self, inner, k: int):
        self.inner, self.k, self.calls = inner, k, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, images):
        self.calls += 1
        if self.calls >= self.k:
            images.register_hook(lambda g: torch.full_like(g, float("nan")))
        return self.inner.encode(images)


def test_nan_stops_and_keeps_last_good(tiny_sd, tmp_path):
    from splatgen.components import build_guidance

    cfg = load_config([], sd_overrides(tiny_sd))
    guidance = NaNGradientsFrom(build_guidance(cfg, "cpu"), k=4)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match="NaN/Inf at step 4") as info:
        splatgen.generate("a red mug", out_dir=out, guidance=guidance,
                          overrides=sd_overrides(tiny_sd) + ["run.steps=20", "densify.enabled=false"])
    assert "last_good" in str(info.value)
    # a failed run stays in its working folder (out.partial), never under the final name
    staging = out.with_name(out.name + ".partial")
    good = load_ply(staging / "last_good.ply")
    assert good.is_finite() and len(good) == 150
    assert torch.load(staging / "checkpoints" / "last_good.pt", weights_only=True)["step"] == 3
    assert not out.exists(), "a NaN run must not appear as a finished run"


def test_cli_generate_and_errors(tiny_sd, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # numbered runs go to ./runs
    out = tmp_path / "cli"
    assert cli_main(["generate", "a red mug", "--out", str(out), *sd_overrides(tiny_sd), "run.steps=2"]) == 0
    assert (out / "splats.ply").is_file() and "splats.ply" in capsys.readouterr().out
    assert cli_main(["generate", "a red mug", "--out", str(out), *sd_overrides(tiny_sd)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli_main(["generate", "a red mug", "run.stpes=3"]) == 2
    err = capsys.readouterr().err
    assert "run.stpes" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "a refused command leaves no run folder"
    assert cli_main(["export", str(out), str(tmp_path / "padded.ply"), "--pad-sh3"]) == 0
    assert load_ply(tmp_path / "padded.ply").sh_degree == 3


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "splatgen", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "generate" in r.stdout


@pytest.mark.parametrize("config", config_names())
def test_every_bundled_config_runs_two_steps(config, tiny_sd, tiny_pixel, tmp_path):
    """Every shipped config, with tiny overrides: diffusers configs point at tiny random-weight models."""
    cfg = load_config([config], ["guidance.model=x"] if config == "pixel" else [])
    tiny = ["run.steps=2", "model.num_points=100", "render.resolution=24", "render.resolution_milestones=[]",
            "camera.batch_size=2", "run.preview_views=1", "run.preview_resolution=16", "run.evaluate=false",
            "guidance.world_views=16", "guidance.world_resolution=16", "render.backend=torch",
            "nerf.num_levels=4", "nerf.log2_hashmap_size=12", "nerf.grid_resolution=16", "nerf.num_steps=16",
            "nerf.upsample_steps=8", "nerf.export_resolution=24"]
    if cfg.guidance.type == "stable-diffusion":
        tiny.append(f"guidance.model={tiny_sd}")
    elif cfg.guidance.type == "pixel":
        tiny.append(f"guidance.model={tiny_pixel}")
    res = splatgen.generate("a red mug", config=config, out_dir=tmp_path / "r", overrides=tiny)
    assert res.rep.is_finite() and (tmp_path / "r" / res.rep.ply_name).is_file()
    assert res.rep.kind == cfg.model.type
