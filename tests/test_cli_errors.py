"""Everything a user can get wrong ends in one line, ``splatgen: error: ...``, and exit code 2 (never a traceback);
and the small faults of the command line itself."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splatgen.cli import main as cli_main

TINY = ["run.steps=4", "run.log_every=2", "model.num_points=48", "render.resolution=16", "render.resolution_milestones=[]",
        "camera.batch_size=1", "guidance.world_views=8", "guidance.world_resolution=16", "run.preview_views=1",
        "run.preview_resolution=16", "run.evaluate=false", "render.backend=torch", "run.progress=off"]


def run_cli(args, capsys, cwd=None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    code = cli_main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("splatgen: error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def finished_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("override,needle", [
    ("guidance.guidance_scale=nan", "not a finite number"),
    ("optim.lr_means=inf", "not a finite number"),
    ("render.near_plane=nan", "not a finite number"),
    ("densify.grad_threshold=nan", "not a finite number"),
    ("render.resolution=100000", "render.resolution"),
    ("model.num_points=100000000", "model.num_points"),
    ("run.device=cuda:x", "run.device"),
    ("camera.elevation_range={}", "wrong shape"),  # a mapping where a list belongs (found by hypothesis)
])
def test_bad_values_are_refused_up_front(override, needle, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, override], capsys, tmp_path, monkeypatch)
    one_line_error(code, err, needle)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "nothing written"


def test_a_config_that_cannot_fit_is_refused_with_numbers(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "render.resolution=4096",
                            "camera.batch_size=64"], capsys, tmp_path, monkeypatch)
    one_line_error(code, err, "GiB", "render.resolution")


@pytest.mark.parametrize("content", [b"run:\n  steps: [1, 2\n", b"run:\n  steps: \xff\xfe3\n", b"- just\n- a list\n"])
def test_broken_config_files(content, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    code, _, err = run_cli(["generate", "a red mug", "--config", str(bad), *TINY], capsys, tmp_path, monkeypatch)
    one_line_error(code, err, "bad.yaml")


def test_out_places_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "--out", str(f)], capsys)
    one_line_error(code, err, "is a file")
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "--out", "/proc/splatgen-no/run"], capsys)
    one_line_error(code, err, "cannot write")


def test_a_full_disk_is_one_line_and_keeps_no_partial_file(tmp_path, capsys, monkeypatch):
    import splatgen.fileio as fileio

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    out = tmp_path / "run"
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "--out", str(out)], capsys)
    one_line_error(code, err, "No space left on device")
    assert not out.exists()
    assert not list(tmp_path.rglob("*.splatgen-tmp"))


def test_evaluate_on_what_is_not_a_finished_run(finished_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(*run_cli(["evaluate", str(empty)], capsys)[::2], "not a run folder")
    one_line_error(*run_cli(["evaluate", str(tmp_path / "nothing")], capsys)[::2], "not a run folder")
    (finished_run / "splats.ply").unlink()
    one_line_error(*run_cli(["evaluate", str(finished_run)], capsys)[::2], "splats.ply is missing")
    (finished_run / "config.yaml").write_text("run: {steps: [\n")
    one_line_error(*run_cli(["evaluate", str(finished_run)], capsys)[::2], "damaged")


def test_export_errors_leave_nothing_behind(finished_run, tmp_path, capsys):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    one_line_error(*run_cli(["export", str(finished_run), str(folder)], capsys)[::2], "folder")
    one_line_error(*run_cli(["export", str(finished_run), str(tmp_path / "x.xyz")], capsys)[::2], "extension")
    one_line_error(*run_cli(["export", str(finished_run), "/proc/splatgen-no/x.ply"], capsys)[::2], "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "run"]
    assert not list(folder.iterdir())


def test_zero_gaussians_is_named_when_it_happens(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "run.steps=8", "densify.start=0",
                            "densify.every=2", "densify.min_opacity=0.999", "--out", str(tmp_path / "r")], capsys)
    one_line_error(code, err, "pruned every Gaussian", "densify.min_opacity=0.999", "step 2")


def test_unquoted_prompt_gets_a_hint(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["generate", "a", "red", "mug"], capsys, tmp_path, monkeypatch)
    one_line_error(code, err, 'quote it: splatgen generate "a red mug"')


def test_a_long_prompt_is_not_echoed_whole(tmp_path, capsys, monkeypatch):
    prompt = "a " + "very " * 2000 + "red mug"
    code, _, err = run_cli(["generate", prompt, "--config", "world", *TINY], capsys, tmp_path, monkeypatch)
    one_line_error(code, err, "characters")
    assert len(err) < 2000


def test_version_help_and_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("splatgen ")
    with pytest.raises(SystemExit):
        cli_main(["generate", "--help"])
    out = capsys.readouterr().out
    usage = out.split("\n\n")[0]
    assert "[key=value ...]" in usage and "tiny" not in out
    from splatgen.resources import config_names

    assert all(n in out for n in config_names())


def test_config_into_a_closed_pipe_is_quiet():
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'splatgen', 'config'], "
            "stdout=subprocess.PIPE, stderr=subprocess.PIPE); p.stdout.readline(); p.stdout.close(); "
            "err = p.stderr.read().decode(); p.wait(); print(p.returncode); print(err)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, _, err = r.stdout.partition("\n")
    assert rc.strip() == "0" and "Traceback" not in err and "BrokenPipe" not in err, r.stdout


def test_ctrl_c_during_startup_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "splatgen", "generate", "a red mug", "run.steps=5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    import time

    # Interrupt inside the first imports: once torch's library is mapped (the CLI imports torch only inside
    # main(), so its Ctrl-C handling is in place by then), not after a fixed delay that a loaded machine outruns.
    maps, deadline = Path(f"/proc/{p.pid}/maps"), time.monotonic() + 60
    if maps.exists():
        while p.poll() is None and time.monotonic() < deadline and "libtorch" not in maps.read_text():
            time.sleep(0.02)
    else:  # no /proc: the old fixed delay
        time.sleep(0.8)
    p.send_signal(2)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("splatgen: interrupted")
    assert not list(tmp_path.rglob("*.partial")), "nothing left behind"


@pytest.mark.parametrize("env, expected", [({}, "1000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                           ({"OMP_WAIT_POLICY": "PASSIVE"}, "None")])
def test_the_cli_shortens_openmp_spinning_before_torch_loads_unless_the_user_chose(env, expected):
    # libgomp's default spin collapses a CPU run beside another busy process (benchmarks/perf/cpu_contention.py);
    # the setting only works if it is in the environment before torch loads, and a user's own choice wins.
    code = ("import os, sys\nfrom splatgen.cli import _openmp_spin_default\nassert 'torch' not in sys.modules\n"
            "_openmp_spin_default()\nimport torch\nprint(os.environ.get('GOMP_SPINCOUNT'))")
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("override,needle", [("run.steps=abc", "bad value for run.steps"),
                                             ("render.resolution_milestones=3", "bad value for render.resolution_milestones")])
def test_a_value_of_the_wrong_type_is_one_line(override, needle, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, override], capsys, tmp_path, monkeypatch)
    one_line_error(code, err, needle)
    assert "full_key" not in err and "reference_type" not in err  # no OmegaConf dump after the line


def test_resume_where_nothing_was_interrupted_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "never-ran"
    code, _, err = run_cli(["generate", "a red mug", "--config", "world", *TINY, "--out", str(out), "--resume"], capsys)
    one_line_error(code, err, "no interrupted run", "leave out --resume")
    assert not out.exists() and not out.with_name("never-ran.partial").exists()
