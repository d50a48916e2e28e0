"""What the command line shows a user when nothing goes wrong: the defaults `splatgen config` lists are the ones a
run gets, each log line once, help examples that match the README, and files described as a check of them finds."""

from __future__ import annotations

import ast
import collections
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from splatgen.cli import main as cli_main
from splatgen.config import Config

#: what every prompt of the logging test overrides: two steps of the bundled prior, nothing written but the run
TINY_PRIOR = ["run.steps=2", "run.log_every=1", "model.num_points=48", "camera.batch_size=4", "run.preview_views=0",
              "run.evaluate=false", "run.progress=off", "render.backend=torch"]


class _Stopped(Exception):
    """Raised in place of training, once the run folder holds its config.yaml."""


def _stop(self):
    raise _Stopped


def test_config_resolved_is_the_config_a_generation_writes(tmp_path, capsys, monkeypatch):
    from splatgen import components, trainer
    from splatgen.world.oracle import WorldGuidance

    # A generation with no --config and no overrides, as a user types it. Loading the bundled prior takes seconds
    # and 300 steps take minutes; neither changes the config.yaml the run writes before its first step, so a
    # small oracle stands in for the prior and the run stops where training would begin.
    monkeypatch.setitem(components.GUIDANCE_BUILDERS, "pixel",
                        lambda cfg, device: WorldGuidance(num_views=8, resolution=16, camera=cfg.camera, device=device))
    monkeypatch.setattr(trainer.Trainer, "train", _stop)
    with pytest.raises(_Stopped):
        cli_main(["generate", "a red mug", "--out", str(tmp_path / "run")])
    written = (tmp_path / "run.partial" / "config.yaml").read_text()
    capsys.readouterr()
    assert cli_main(["config", "--resolved"]) == 0
    shown = capsys.readouterr().out
    assert yaml.safe_load(written)["prompt"] == "a red mug"  # the run's own key; every other one is a default
    # what `diff <(splatgen config --resolved) RUN/config.yaml` compares: every line but the prompt's
    assert [ln for ln in shown.splitlines(True) if not ln.startswith("prompt:")] == \
        [ln for ln in written.splitlines(True) if not ln.startswith("prompt:")]


def test_config_lists_each_key_with_the_value_a_run_gets_and_what_it_is(capsys):
    assert cli_main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert cli_main(["config", "--resolved"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    built_in = Config()
    listed = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"  (\w+)\.(\w+) = (.*?)(  # (.*))?", line)
        if not m:
            continue
        sec, key, value, note = m.group(1), m.group(2), ast.literal_eval(m.group(3)), m.group(5)
        listed[f"{sec}.{key}"] = value
        assert value == resolved[sec][key], line
        assert lines[i + 1].startswith("      ") and lines[i + 1].strip(), f"{line}: no description under it"
        default = getattr(getattr(built_in, sec), key)
        if value == default:
            assert note is None, line
        else:  # a key the bundled default config sets says so, and what Config() holds
            assert note is not None and "'default' config" in note and f"built-in default {default!r}" in note, line
    sections = {s.name: getattr(built_in, s.name) for s in dataclasses.fields(Config) if s.name != "prompt"}
    assert sorted(listed) == sorted(f"{s}.{f.name}" for s, obj in sections.items() for f in dataclasses.fields(obj))
    assert any(listed[k] != getattr(getattr(built_in, k.split(".")[0]), k.split(".")[1]) for k in listed)


def test_a_batch_prints_each_log_line_once(tmp_path):
    # The bundled prior's text encoder (open_clip) logs through the root logger, which configures it
    # (logging.basicConfig): our own lines must not come out a second time as "INFO:splatgen: ...".
    (tmp_path / "prompts.txt").write_text("a red mug\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-m", "splatgen", "batch", "prompts.txt", "--out", "b1", *TINY_PRIOR],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert any(ln.endswith("1 done") for ln in lines), r.stderr  # the last line comes after the models loaded
    assert not [ln for ln in lines if re.match(r"(INFO|WARNING|ERROR):splatgen:", ln)], r.stderr
    assert [ln for ln, n in collections.Counter(lines).items() if n > 1] == [], r.stderr


def test_help_examples_name_the_run_folder_the_readme_uses(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    examples = capsys.readouterr().out.split("examples:")[1]
    assert set(re.findall(r"runs/[\w.-]+", examples)) == {"runs/red-mug"}


def test_an_unknown_key_is_one_line_with_a_close_match_and_no_file_to_look_in(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["generate", "a red mug", "run.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("splatgen: error: unknown config key 'run.stepz'"), err
    assert "did you mean 'run.steps'?" in err and "`splatgen config`" in err and ".yaml" not in err, err
    assert not (tmp_path / "runs").exists()


def test_a_resumed_runs_summary_says_which_seconds_are_whose(tmp_path):
    from splatgen.fileio import load_checkpoint
    from test_shared_folders import interrupted_run
    from test_runs import gen

    fresh = tmp_path / "fresh"
    gen(fresh)
    assert not {"resumed_from_step", "seconds_this_process"} & set(json.loads((fresh / "summary.json").read_text()))
    out = tmp_path / "run"
    checkpoint = load_checkpoint(interrupted_run(out) / "checkpoints" / "interrupted.pt")
    gen(out, resume=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == checkpoint["step"] > 0
    # `seconds` keeps its meaning (the training of both processes); this process's part is the rest
    assert summary["seconds"] - summary["seconds_this_process"] == pytest.approx(checkpoint["seconds"], abs=2e-3)


def test_a_mesh_is_reported_watertight_as_a_check_of_its_file_finds_it(tmp_path, capsys):
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("xatlas")
    pytest.importorskip("skimage")
    pytest.importorskip("fast_simplification")
    from splatgen.export import save_ply
    from test_mesh import ball

    save_ply(ball(500), tmp_path / "ball.ply")
    glb = tmp_path / "ball.glb"
    assert cli_main(["export", str(tmp_path / "ball.ply"), str(glb), "--mesh-resolution", "48", "--texture-size",
                     "256", "--faces", "4000"]) == 0
    said = capsys.readouterr().out
    assert ", not watertight" not in said and "watertight with its UV seams welded" in said, said
    mesh = trimesh.load(glb, force="mesh")
    assert not mesh.is_watertight  # the file splits vertices along UV seams (one texture coordinate each)...
    mesh.merge_vertices(merge_tex=True)  # ...so a check welds them by position first, as the line says
    assert mesh.is_watertight
