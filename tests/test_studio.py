"""The studio (``splatgen studio``): Generate presses queue runs that go one after the other into the runs folder,
each exactly as ``splatgen generate`` writes it; a bad prompt fails alone, with its one-line error, and the next
run still goes; the page lists a waiting run as queued; a finished run downloads as ``splatgen export`` writes it.
And in headless Chromium: a typed prompt and a pressed Generate become a run the page draws and a ``.ply`` the
browser downloads.

The browser test needs what the viewer's does (Debian's ``chromium``, PyPI's ``playwright``) and skips with the
reason otherwise. Runs use the procedural world's oracle prior at 16 px, a few steps: seconds on a CPU.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from splatgen.cli import main as cli_main
from splatgen.export import load_ply

viser = pytest.importorskip("viser")

from splatgen.studio import RunQueue, Studio, export_run, finished_runs, run_scores  # noqa: E402
from test_viewer import CHROMIUM, CHROMIUM_ARGS, browser_missing  # noqa: E402

#: every run of these tests (the steps come from the page / the submit call, as a user's would)
TINY = ["run.log_every=2", "model.num_points=48", "render.resolution=16", "render.resolution_milestones=[]",
        "camera.batch_size=1", "guidance.world_views=8", "guidance.world_resolution=16", "run.preview_views=1",
        "run.preview_resolution=16", "run.evaluate=false", "render.backend=torch", "run.progress=off"]
EMPTY_PROMPT = 'the prompt is empty; describe the object to generate, e.g. "a red mug"'


def states(events):
    """(job id, state) as they changed, without the repeats (a running job also reports its claimed folder)."""
    out = []
    for e in events:
        if not out or out[-1] != e:
            out.append(e)
    return out


def test_queue_runs_one_after_the_other_as_generate_writes_them(tmp_path, capsys):
    runs = tmp_path / "runs"
    events = []
    queue = RunQueue(runs, TINY, on_change=lambda job: events.append((job.id, job.state)))
    mug = queue.submit("a red mug", "world", 6)
    bad = queue.submit("   ", "world", 6)
    chair = queue.submit("a blue chair", "world", 4)
    try:
        assert queue.wait(timeout=600)
    finally:
        queue.close()
    assert [mug.state, bad.state, chair.state] == ["done", "failed", "done"], [j.error for j in queue.jobs]
    assert bad.error == EMPTY_PROMPT and bad.out is None
    # One at a time, in the order pressed: each is queued first, and starts when the one before it is over.
    assert [next(s for i, s in events if i == job.id) for job in (mug, bad, chair)] == ["queued"] * 3
    assert states([e for e in events if e[1] != "queued"]) == [(1, "running"), (1, "done"), (2, "running"),
                                                               (2, "failed"), (3, "running"), (3, "done")]
    # Both runs complete under the names `splatgen generate` gives them, nothing left half-written.
    assert (mug.out, chair.out) == (runs / "a-red-mug", runs / "a-blue-chair")
    assert sorted(finished_runs(runs)) == [chair.out, mug.out] and sorted(p.name for p in runs.iterdir()) == \
        ["a-blue-chair", "a-red-mug"]
    assert json.loads((chair.out / "summary.json").read_text())["steps"] == 4 and chair.steps == 4
    assert run_scores(mug.out)[1:] == ["6 steps", "48 Gaussians"]

    # The same prompt, preset and settings through the command line: the same files.
    cli = tmp_path / "cli"
    assert cli_main(["generate", "a red mug", "--config", "world", *TINY, "run.steps=6", "--out", str(cli)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in cli.rglob("*")) == sorted(p.name for p in mug.out.rglob("*"))
    for name in ("splats.ply", "config.yaml", "previews.png"):
        assert (cli / name).read_bytes() == (mug.out / name).read_bytes(), name

    def untimed(record):  # what a record holds besides the clock's readings
        return {k: v for k, v in record.items() if k not in ("seconds", "elapsed_s", "timings_s", "stage_ms")}

    rows = [[untimed(json.loads(line)) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (mug.out, cli)]
    assert rows[0] == rows[1] and len(rows[0]) == 3
    summaries = [untimed(json.loads((d / "summary.json").read_text())) for d in (mug.out, cli)]
    assert summaries[0] == summaries[1] and summaries[0]["prompt"] == "a red mug"

    # A download is the file `splatgen export RUN FILE` writes.
    for ext in (".ply", ".spz"):
        export_run(mug.out, tmp_path / f"studio{ext}")
        assert cli_main(["export", str(mug.out), str(tmp_path / f"cli{ext}")]) == 0
        assert (tmp_path / f"studio{ext}").read_bytes() == (tmp_path / f"cli{ext}").read_bytes(), ext


def test_the_page_queues_a_second_generate_and_shows_errors_in_one_line(tmp_path):
    from splatgen.config import load_config

    studio = Studio(tmp_path / "runs", port=0, overrides=TINY, config="world")
    try:
        assert studio.server.get_host() == "127.0.0.1"  # local only unless asked
        # Picking a preset shows its steps.
        assert studio.steps.value == load_config(["world"]).run.steps
        studio.preset.value = "fast"
        assert studio.steps.value == load_config(["fast"]).run.steps
        studio.preset.value = "world"

        # Hold the first run at its first step, so the second press finds it running.
        started, release = threading.Event(), threading.Event()
        show_step = studio.queue.on_step

        def held(job, done, rep):
            started.set()
            assert release.wait(120)
            show_step(job, done, rep)

        studio.queue.on_step = held
        studio.steps.value = 6
        for prompt in ("a red mug", " ", "a blue chair"):
            studio.prompt.value = prompt
            studio.generate_button.value = True  # what a click does
        assert started.wait(300)
        lines = studio.jobs_md.content.split("  \n")
        assert lines == ["**running** a red mug (world, 6 steps)", "**queued** (empty prompt) (world, 6 steps)",
                         "**queued** a blue chair (world, 6 steps)"], lines
        release.set()
        assert studio.queue.wait(timeout=600)
        lines = studio.jobs_md.content.split("  \n")
        assert lines[0].startswith("**done** a blue chair (world, 6 steps): a-blue-chair in ")
        assert lines[1] == "**failed** (empty prompt) (world, 6 steps): " + EMPTY_PROMPT
        assert lines[2].startswith("**done** a red mug (world, 6 steps): a-red-mug in ")
        # The newest run is the one shown: its previews and scores.
        assert studio.run_choice.options == ("a-blue-chair", "a-red-mug") and studio.run_choice.value == "a-blue-chair"
        assert studio.previews.visible and studio.previews.image.shape == (16, 16, 3)
        assert "6 steps · 48 Gaussians" in studio.scores_md.content

        # Downloads: the file goes to the browser that asked; a failure is one line on the page, nothing sent.
        class Browser:
            def send_file_download(self, name, data, save_immediately=False):
                sent.append((name, data, save_immediately))

        sent = []
        studio.send_download(Browser(), ".mp4")
        assert [(n, d[4:8], now) for n, d, now in sent] == [("a-blue-chair.mp4", b"ftyp", True)]
        assert studio.download_md.content.startswith("sent a-blue-chair.mp4 (")
        sent.clear()
        studio.send_download(Browser(), ".glb")  # 48 faint Gaussians 6 steps in: no surface to mesh
        assert sent == [] and studio.download_md.content.startswith("cannot write a-blue-chair.glb: the Gaussians "
                                                                     "render no pixel with alpha > 0.5")
        assert "\n" not in studio.download_md.content
    finally:
        studio.close()


def test_closing_stops_the_running_run_resumably_and_drops_the_queued(tmp_path):
    runs = tmp_path / "runs"
    started, release = threading.Event(), threading.Event()

    def on_step(job, done, rep):
        started.set()
        assert release.wait(120)

    def on_change(job):
        if job.state == "stopped" and job.id == 2:  # close() dropped the queued job: let the running one go on
            release.set()

    queue = RunQueue(runs, TINY, on_change=on_change, on_step=on_step)
    running, queued = queue.submit("a red mug", "world", 50), queue.submit("a blue chair", "world", 6)
    assert started.wait(300)
    queue.close()
    assert (running.state, running.step) == ("stopped", 2) and queued.state == "stopped"
    assert running.error == f"stopped at step 2; {runs / 'a-red-mug'}.partial keeps the model"
    assert queued.error == "the studio was closed before it started"
    # As after a Ctrl-C of `splatgen generate`: the model kept, the folder left to resume, nothing else written.
    assert sorted(p.name for p in runs.iterdir()) == ["a-red-mug.partial"]
    assert len(load_ply(runs / "a-red-mug.partial" / "interrupted.ply")) == 48


def test_studio_command_refuses_bad_settings_in_one_line(tmp_path, capsys):
    for args, needle in ((["run.stepz=3"], "run.stepz"), (["--config", "nope"], "'nope' is not a bundled preset"),
                         (["--host", "192.0.2.1"], "not an address of this machine")):
        assert cli_main(["studio", "--runs", str(tmp_path), "--port", "0", *args]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("splatgen: error:") and needle in lines[0], err
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- browser
WIDTH, HEIGHT = 1000, 700


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_in_the_browser_type_a_prompt_see_the_object_download_a_ply(tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    studio = Studio(tmp_path / "runs", port=0, overrides=TINY, config="world")
    # Left of the control panel (top right) and below the software-WebGL notice (top left): the scene's middle.
    rows, cols = slice(200, HEIGHT - 80), slice(100, 580)

    def shot(page, name):
        page.screenshot(path=str(tmp_path / name))
        return np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(int)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=True)
                page.goto(studio.url, timeout=60_000)
                prompt = page.locator("xpath=//label[text()='Prompt']/following::input[1]")
                prompt.wait_for(timeout=60_000)
                background = shot(page, "empty.png")
                prompt.fill("a red mug")
                page.locator("xpath=//label[text()='Steps']/following::input[1]").fill("6")
                page.get_by_role("button", name="Generate", exact=True).click()
                page.get_by_text("a-red-mug in", exact=False).wait_for(timeout=300_000)
                run = tmp_path / "runs" / "a-red-mug"
                assert studio.queue.jobs[0].steps == 6 and (run / "splats.ply").is_file()
                # The object is drawn: the scene's middle is no longer the empty (white) background. 48 Gaussians
                # 6 steps from their start are faint, soft blobs: measured, 12 % of these pixels differ by more
                # than 10 levels (5.5 % by more than 20); viser fades its splats in, so look until they show.
                assert (background[rows, cols] == 255).all()
                deadline = time.monotonic() + 60
                while True:
                    changed = (np.abs(shot(page, "studio.png") - background)[rows, cols].max(axis=2) > 10).mean()
                    if changed > 0.05 or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                assert changed > 0.05, changed
                with page.expect_download(timeout=120_000) as download:
                    page.get_by_role("button", name=".ply", exact=True).click()
                got = tmp_path / download.value.suggested_filename
                download.value.save_as(got)
                # A run another process writes meanwhile is listed when the page is opened again.
                assert cli_main(["generate", "a blue chair", "--config", "world", *TINY, "run.steps=4", "--out",
                                 str(tmp_path / "runs" / "from-cli")]) == 0
                assert "from-cli" not in studio.run_choice.options
                page.reload()
                prompt.wait_for(timeout=60_000)
                deadline = time.monotonic() + 60
                while "from-cli" not in studio.run_choice.options and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert studio.run_choice.options == ("from-cli", "a-red-mug")
            finally:
                browser.close()
    finally:
        studio.close()
    assert got.name == "a-red-mug.ply"
    assert len(load_ply(got)) == len(load_ply(run / "splats.ply")) == 48


def test_the_step_hook_runs_beside_the_live_view_of_run_viewer(tmp_path, monkeypatch):
    """The page's hook reaches the trainer through ``generate(on_step=...)``; a config with ``run.viewer=true``
    keeps its own live view too."""
    from splatgen import viewer
    from splatgen.api import generate

    live_steps, ours = [], []
    live_on_step = viewer.LiveViewer.on_step

    def counted(self, step, rep, total=None):
        live_steps.append(step)
        return live_on_step(self, step, rep, total)

    monkeypatch.setattr(viewer.LiveViewer, "on_step", counted)
    generate("a red mug", "world", tmp_path / "run", overrides=[*TINY, "run.steps=3", "run.viewer=true",
                                                                "run.viewer_port=0"],
             on_step=lambda done, rep: ours.append((done, rep.size())))
    assert ours == [(1, 48), (2, 48), (3, 48)] and live_steps == [1, 2, 3]
