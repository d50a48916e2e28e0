"""Run folders: one owner at a time, nothing half-written or mixed up, interrupts that keep their work, resume
that ends bit-identical to an uninterrupted run (CPU), and files that are safe to read."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import splatgen
from splatgen.config import load_config
from splatgen.errors import NonFiniteError, NotARunError, RunDirError, RunInterrupted, SplatgenError
from splatgen.export import load_ply
from splatgen.fileio import atomic_write, clean_temp_files, load_checkpoint, write_json
from splatgen.rundir import RunFolder, find_run, find_resumable, partial_path, slug

#: a tiny world-prior run: a few seconds on one CPU core
TINY = ["run.steps=12", "run.log_every=2", "model.num_points=64", "render.resolution=16", "render.resolution_milestones=[]",
        "camera.batch_size=1", "guidance.world_views=8", "guidance.world_resolution=16", "run.preview_views=1",
        "run.preview_resolution=16", "run.evaluate=false", "render.backend=torch", "run.progress=off",
        "densify.every=4", "densify.start=0.2", "densify.stop=0.8"]


def gen(out, *extra, **kw):
    return splatgen.generate("a red mug", config="world", out_dir=out, overrides=[*TINY, *extra], **kw)


def cli(*args, cwd=None, timeout=300, **popen):
    """`python -m splatgen ...` in a subprocess with one thread (bit-exact comparisons) and no tty."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "splatgen", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env, **popen)


# ---- claiming ------------------------------------------------------------------------------------------------


def test_a_folder_appears_only_when_the_run_is_complete(tmp_path):
    out = tmp_path / "mug"
    folder = RunFolder.claim(out)
    assert folder.path == partial_path(out) and folder.path.is_dir() and not out.exists()
    assert (folder.path / ".lock").is_file()
    folder.abandon()
    assert not partial_path(out).exists() and not out.exists()
    res = gen(out)
    assert (out / "splats.ply").is_file() and not partial_path(out).exists() and not (out / ".lock").exists()
    assert res.out_dir == out


def test_two_processes_never_share_a_folder(tmp_path):
    out = tmp_path / "mug"
    first = RunFolder.claim(out)
    # another process (a child: flock is per open file, so test across processes)
    code = ("import sys; from splatgen.rundir import RunFolder\n"
            "try:\n    RunFolder.claim(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert "RunDirError" in r.stdout and "being written right now" in r.stdout and str(os.getpid()) in r.stdout
    first.release()
    # the owner is gone: a stale folder with nothing saved is taken over and cleaned
    (first.path / "junk.splatgen-tmp").write_text("x")
    again = RunFolder.claim(out)
    assert not (again.path / "junk.splatgen-tmp").exists()
    again.abandon()


def test_numbered_folders_are_claimed_atomically_by_concurrent_processes(tmp_path):
    code = ("import sys; from splatgen.rundir import RunFolder\n"
            "f = RunFolder.claim_numbered(sys.argv[1], 'a-red-mug'); print(f.final.name, flush=True)\n"
            "import time; time.sleep(2); f.release()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    names = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert names == ["a-red-mug", "a-red-mug-2", "a-red-mug-3", "a-red-mug-4"]


def test_out_that_is_a_file_or_not_a_run(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        RunFolder.claim(f)
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        RunFolder.claim(d)
    assert (d / "cat.jpg").read_text() == "x"


def test_overwrite_replaces_the_whole_run_only_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "run"
    gen(out, "run.checkpoint_every=4")
    (out / "interrupted.ply").write_bytes(b"old")
    assert (out / "checkpoints" / "step_000004.pt").is_file()
    with pytest.raises(RunDirError, match="already holds a run"):
        splatgen.generate("a blue chair", config="world", out_dir=out, overrides=TINY)
    # a new run that fails during setup leaves the old one untouched
    with pytest.raises(SplatgenError):
        splatgen.generate("a blue chair", config="world", out_dir=out, overrides=[*TINY, "guidance.negative_prompt=x y z"],
                          overwrite=True)
    assert load_config([out / "config.yaml"]).prompt == "a red mug" and not partial_path(out).exists()
    splatgen.generate("a blue chair", config="world", out_dir=out, overrides=TINY, overwrite=True)
    assert load_config([out / "config.yaml"]).prompt == "a blue chair"
    assert not (out / "interrupted.ply").exists() and not (out / "checkpoints" / "step_000004.pt").exists()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "event" not in r] == list(range(2, 13, 2)), "the log holds one run"
    assert not list(tmp_path.glob("run.replaced-*"))


def test_setup_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SplatgenError):
        splatgen.generate("a red mug", out_dir=out, overrides=["guidance.model=/no/such/model"])
    assert not out.exists() and not partial_path(out).exists()
    gen(out)  # the corrected command is not refused
    assert (out / "splats.ply").is_file()


def test_prompt_slugs_never_leave_the_folder():
    for prompt in ("../../x", "/etc/passwd", "..", "a/b\\c", "~/x", "   ", "\u00e9t\u00e9"):
        s = slug(prompt)
        assert s and "/" not in s and "\\" not in s and s not in (".", "..") and not s.startswith("."), s


def test_cli_numbered_runs_from_prompts_like_paths(tmp_path):
    r = cli("generate", "../../x", "--config", "world", *TINY, "guidance.type=world", cwd=tmp_path)
    # not a world prompt: the oracle refuses it, and nothing is left anywhere
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path.parent / "x").exists() and not list((tmp_path / "runs").glob("*"))


# ---- interrupts and resume -------------------------------------------------------------------------------------


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def _popen(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "splatgen", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never stopped (a subprocess at one thread, like the interrupted ones)."""
    root = tmp_path_factory.mktemp("ref")
    r = cli("generate", "a red mug", "--config", "world", *TINY, "run.steps=40", "--out", str(root / "ref"), cwd=root)
    assert r.returncode == 0, r.stderr
    return root / "ref"


def test_sigkill_then_resume_is_bit_identical(uninterrupted, tmp_path):
    out = tmp_path / "run"
    p = _popen("generate", "a red mug", "--config", "world", *TINY, "run.steps=40", "run.checkpoint_every=8",
               "--out", str(out), cwd=tmp_path)
    _wait_for(partial_path(out) / "checkpoints" / "step_000016.pt", p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists() and partial_path(out).is_dir()
    # without --resume the interrupted run is protected
    r = cli("generate", "a red mug", "--config", "world", *TINY, "run.steps=40", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "--resume" in r.stderr
    # --resume with another config is refused, naming the difference
    r = cli("generate", "a red mug", "--config", "world", *TINY, "run.steps=41", "--out", str(out), "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "run.steps" in r.stderr
    r = cli("generate", "a red mug", "--config", "world", *TINY, "run.steps=40", "run.checkpoint_every=8",
            "--out", str(out), "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "splats.ply").read_bytes() == (uninterrupted / "splats.ply").read_bytes()
    steps = [json.loads(x).get("step") for x in (out / "metrics.jsonl").read_text().splitlines() if '"event"' not in x]
    assert steps == list(range(2, 41, 2)), "the resumed log reads as one run"
    assert json.loads((out / "summary.json").read_text())["steps"] == 40


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_keeps_the_model_first_and_resumes(sig, uninterrupted, tmp_path):
    out = tmp_path / "run"
    p = _popen("generate", "a red mug", "--config", "world", *TINY, "run.steps=40", "run.checkpoint_every=4",
               "--out", str(out), cwd=tmp_path)
    _wait_for(partial_path(out) / "checkpoints" / "step_000008.pt", p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    final = [ln for ln in err.splitlines() if ln.startswith("splatgen: interrupted")]
    assert len(final) == 1 and "--resume" in final[0] and "interrupted.ply" in final[0] and "Traceback" not in err
    staging = partial_path(out)
    assert load_ply(staging / "interrupted.ply").is_finite()
    assert (staging / "checkpoints" / "interrupted.pt").is_file()
    assert not list(staging.rglob("*.splatgen-tmp")) and not list(staging.rglob("*.tmp"))
    # evaluate and export find the interrupted model (and say so)
    r = cli("export", str(out), str(tmp_path / "x.ply"), cwd=tmp_path)
    assert r.returncode == 0 and "not finished" in r.stderr and (tmp_path / "x.ply").is_file()
    r = cli("generate", "a red mug", "--resume", cwd=tmp_path)  # no --out: looked for under ./runs, not there
    assert r.returncode == 2 and "no interrupted run" in r.stderr
    r = cli("generate", "a red mug", "--config", "world", *TINY, "run.steps=40", "run.checkpoint_every=4",
            "--out", str(out), "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "splats.ply").read_bytes() == (uninterrupted / "splats.ply").read_bytes()
    # the finished folder keeps no checkpoint meant only for resuming
    assert not (out / "checkpoints" / "interrupted.pt").exists() and not (out / "checkpoints" / "resume.pt").exists()


@contextlib.contextmanager
def sigterm_at(stop_step: int = 5):
    """Runs inside the block get SIGTERM's request to stop during step ``stop_step`` (0-based)."""
    from splatgen import trainer as trainer_mod

    original = trainer_mod.Trainer.train_step

    def stopping(self, step):
        if step == stop_step:
            self.request_stop(signal.SIGTERM)
        return original(self, step)

    trainer_mod.Trainer.train_step = stopping
    try:
        yield
    finally:
        trainer_mod.Trainer.train_step = original


def test_interrupt_in_the_api_raises_with_what_was_kept(tmp_path):
    out = tmp_path / "run"
    with sigterm_at(5), pytest.raises(RunInterrupted, match="after step 6 of 12") as info:
        gen(out)
    assert isinstance(info.value, KeyboardInterrupt) and info.value.signum == signal.SIGTERM
    assert [p.name for p in find_resumable(tmp_path, "a red mug")] == ["run"]
    res = gen(out, resume=True)
    assert load_config([out / "config.yaml"]).prompt == "a red mug"
    assert [r["step"] for r in res.history] == list(range(2, 13, 2)), "the history carries over the resume"


def test_nan_run_keeps_last_good_in_the_working_folder(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match="last_good"):
        gen(out, "optim.lr_scales=1e30", "run.log_every=1")
    staging = partial_path(out)
    assert not out.exists() and (staging / "last_good.ply").is_file()
    assert load_ply(staging / "last_good.ply").is_finite()
    with pytest.raises(NotARunError):
        find_run(out, allow_interrupted=False)


# ---- safe files -------------------------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/splatgen-pwned",))


def test_a_malicious_checkpoint_is_refused_not_run(tmp_path):
    out = tmp_path / "run"
    gen(out, "model.type=nerf", "nerf.num_levels=2", "nerf.log2_hashmap_size=10", "nerf.grid_resolution=8",
        "nerf.num_steps=8", "nerf.upsample_steps=0", "nerf.export_resolution=8")
    final = out / "checkpoints" / "final.pt"
    assert torch.load(final, weights_only=True)["step"] == 12  # splatgen's own files load with weights_only
    marker = Path("/tmp/splatgen-pwned")
    marker.unlink(missing_ok=True)
    with open(final, "wb") as f:
        pickle.dump({"params": _Evil()}, f)
    with pytest.raises(SplatgenError, match="refused"):
        splatgen.load_result(out)
    r = cli("evaluate", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "refused" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_atomic_writes_leave_no_partial_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk went away")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    (tmp_path / ".x.123.splatgen-tmp").write_text("litter")
    assert clean_temp_files(tmp_path) == 1


def test_json_is_strict(tmp_path):
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": 2.5})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": 2.5}


def test_checkpoint_loader_reports_a_torn_file(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"step": 3, "t": torch.ones(3)}, p)
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(SplatgenError, match="not a readable checkpoint"):
        load_checkpoint(p)


def test_a_resume_may_change_where_the_run_is_logged_but_not_what_it_computes():
    """Turning TensorBoard, W&B or the live view on or off for the resumed part is allowed; the run's own
    settings are not (the resume is bit-identical only with them unchanged)."""
    from splatgen.config import load_config
    from splatgen.rundir import RESUME_MAY_CHANGE, config_differences

    base = load_config(["world"])
    logged = load_config(["world"], ["run.tensorboard=true", "run.wandb=true", "run.wandb_project=other",
                                      "run.viewer=true", "run.viewer_port=9000", "run.progress=off"])
    assert config_differences(base, logged) == []
    assert config_differences(base, load_config(["world"], ["run.steps=41", "run.wandb=true"])) == ["run.steps"]
    assert all(k.startswith("run.") for k in RESUME_MAY_CHANGE)
