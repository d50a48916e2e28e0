"""Turntable videos and the viewer, timed on this machine.

    python benchmarks/export_video.py --run runs/red-mug                      # everything below
    python benchmarks/export_video.py --run runs/red-mug --only video --frames 120 --resolutions 256 512

``video`` (-> ``video.json``, ``turntable_frame0.png``): the run's turntable (``splatgen.export.video``) at
each resolution: rendering (frames/s, batches of ``--batch`` views), H.264 encoding of the rendered frames
(CRF 18, preset medium) and the .mp4 size; the .gif at the smallest resolution; frames/s of the renderer
with one view per call against batches, in short turns repeated alternately (medians); and frame 0 against our
renderer's front view after decoding (PSNR).

``viewer`` (-> ``viewer.png``): headless Chromium (PyPI ``playwright`` driving ``/usr/bin/chromium``) opens
``splatgen.viewer.serve_run(RUN)`` and the page is screenshot once the splats are drawn.

``live`` (-> ``live_viewer.json``): the cost of ``run.viewer`` to training. The same short training (the
procedural world's exact oracle prior, no weights) with no viewer and with a :class:`LiveViewer` fed every
step (its defaults, and every step unthrottled for comparison), each with a websocket client receiving the
updates as a browser would; runs alternate so that a machine shared with other work slows all of them alike.
Beside whole-run seconds, the share of each run's time spent inside the viewer's callback, which the noise of
a shared machine blurs far less.

Numbers from a CPU shared with other processes are noisy: ``environment.load_average`` is recorded beside
them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from splatgen.export import load_ply  # noqa: E402
from splatgen.export.video import (  # noqa: E402
    DEFAULT_CRF, DEFAULT_PRESET, iter_turntable, render_turntable, write_turntable,
)
from splatgen.rundir import find_splats  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export"


def versions() -> dict:
    out = {}
    for mod in ("imageio_ffmpeg", "viser", "PIL", "playwright"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", None)
        except ImportError:
            out[mod] = None
    try:
        import imageio_ffmpeg

        out["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        out["playwright"] = version("playwright")
    except PackageNotFoundError:
        pass
    return out


def env() -> dict:
    e = environment()
    e["load_average"] = [round(x, 2) for x in os.getloadavg()]
    e["torch_threads"] = torch.get_num_threads()
    e.update(versions())
    return e


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


# ------------------------------------------------------------------------------------------------ video
def bench_video(model, frames: int, resolutions, batch: int, out_dir: Path, repeats: int = 3) -> dict:
    import imageio_ffmpeg

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in resolutions:
            t0 = time.perf_counter()
            video = render_turntable(model, frames=frames, resolution=res, batch_size=batch)
            t_render = time.perf_counter() - t0
            t0 = time.perf_counter()
            info = write_turntable(video, Path(tmp) / f"turn{res}.mp4", fps=30)
            t_encode = time.perf_counter() - t0
            reader = imageio_ffmpeg.read_frames(str(info.path))
            meta = next(reader)
            first = np.frombuffer(next(reader), np.uint8).reshape(res, res, 3)
            reader.close()
            row = {
                "resolution": res, "frames": frames, "render_seconds": round(t_render, 2),
                "render_frames_per_second": round(frames / t_render, 2),
                "encode_seconds": round(t_encode, 2), "encode_frames_per_second": round(frames / t_encode, 1),
                "total_seconds": round(t_render + t_encode, 2), "mp4_bytes": info.bytes,
                "mp4_codec": meta["codec"], "mp4_pix_fmt": meta["pix_fmt"], "mp4_fps": meta["fps"],
                "frame0_psnr_db_after_decoding": round(psnr(first, video[0]), 2),
            }
            if res == min(resolutions):
                from PIL import Image

                Image.fromarray(video[0]).save(out_dir / "turntable_frame0.png", optimize=True)
                t0 = time.perf_counter()
                gif = write_turntable(video, Path(tmp) / "turn.gif", fps=30)
                row.update(gif_seconds=round(time.perf_counter() - t0, 2), gif_bytes=gif.bytes)
            rows.append(row)
            print(row, flush=True)
    # Rendering speed again in short turns, alternating resolutions and batch sizes `repeats` times, so that
    # the median is less at the mercy of whatever else the machine runs at one moment.
    n = 24
    speeds = {f"{r}px_batch_{b}": [] for r in resolutions for b in (1, batch)}
    for _ in range(repeats):
        for r in resolutions:
            for b in (1, batch):
                t0 = time.perf_counter()
                for _ in iter_turntable(model, frames=n, resolution=r, batch_size=b):
                    pass
                speeds[f"{r}px_batch_{b}"].append(n / (time.perf_counter() - t0))
    short = {k: {"median": round(statistics.median(v), 2), "all": [round(x, 2) for x in v]} for k, v in speeds.items()}
    print("frames/s in short turns:", short, flush=True)
    return {"turntables": rows, "frames_per_second_short_turns": {"frames": n, "repeats": repeats, **short}}


# ------------------------------------------------------------------------------------------------ viewer
def viewer_screenshot(run: Path, out: Path, timeout_s: float = 60.0) -> dict:
    import shutil

    from PIL import Image
    from playwright.sync_api import sync_playwright

    from splatgen.viewer import serve_run

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    args = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
    server = serve_run(run, port=0, block=False)
    t0 = time.perf_counter()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=args)
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.goto(f"http://127.0.0.1:{server.get_port()}/")
            previous, stable = None, 0
            while time.perf_counter() - t0 < timeout_s:  # until two shots a second apart agree (fade-in done)
                time.sleep(1.0)
                page.screenshot(path=str(out))
                rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)
                stable = stable + 1 if previous is not None and np.abs(rgb - previous).max() <= 2 else 0
                previous = rgb
                if stable >= 2:
                    break
            browser.close()
    finally:
        server.stop()
    Image.open(out).convert("RGB").save(out, optimize=True)
    return {"seconds_to_stable_page": round(time.perf_counter() - t0, 1), "file": out.name}


# ------------------------------------------------------------------------------------------------ live
def _summary(times: dict, extra: dict, base: float) -> dict:
    """The share of each run's wall time spent inside the viewer's callback (the training thread's cost, which
    a shared machine's noise does not blur the way it blurs whole-run times), per setup: median and max."""
    shares = {k: [e["update_seconds"] / t for e, t in zip(extra[k], times[k])] for k in extra if extra[k]}
    return {"share_of_training_time_in_viewer_updates": {
        k: {"median": round(statistics.median(v), 4), "max": round(max(v), 4)} for k, v in shares.items()}}


class _Receiver:
    """A websocket client that reads everything the viewer sends, as a browser tab would."""

    def __init__(self, port: int):
        import viser
        import websockets

        self.bytes = 0

        async def run():
            async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"],
                                          max_size=None) as ws:
                async for msg in ws:
                    self.bytes += len(msg)

        self.thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
        self.thread.start()


def bench_live(steps: int, repeats: int) -> dict:
    from splatgen.components import build_guidance
    from splatgen.config import load_config
    from splatgen.trainer import Trainer, resolve_device
    from splatgen.viewer import LiveViewer

    overrides = [f"run.steps={steps}", "run.progress=off", "run.eval_every=0", "run.preview_views=0",
                 "run.log_every=1000000"]
    cfg = load_config(["world"], overrides)
    cfg.prompt = "a red mug"
    device = resolve_device(cfg.run.device)
    guidance = build_guidance(cfg, device)

    def train(viewer) -> dict:
        class Hooked(Trainer):  # what the trainer's on_step hook will do, without editing the trainer
            def train_step(self, step):
                out = super().train_step(step)
                if viewer is not None:
                    viewer.on_step(step + 1, self.rep)
                return out

        tr = Hooked(cfg, guidance)
        t0 = time.perf_counter()
        res = tr.train()
        wall = time.perf_counter() - t0
        return {"seconds": wall, "gaussians": res.rep.size()}

    # name -> (LiveViewer arguments, feed it every step, a websocket client reading the updates)
    setups = {
        "off": None,
        "server and client, not fed": (dict(), False, True),
        "defaults (min_interval_s=1, max_overhead=0.02), no client": (dict(), True, False),
        "defaults (min_interval_s=1, max_overhead=0.02)": (dict(), True, True),
        "every step (min_interval_s=0, max_overhead=1)": (dict(min_interval_s=0.0, max_overhead=1.0), True, True),
    }
    times = {k: [] for k in setups}
    extra = {k: [] for k in setups}
    train(None)  # warm-up: first-call costs of torch and the guidance
    for r in range(repeats):
        for name, setup in setups.items():
            if setup is None:
                times[name].append(train(None)["seconds"])
                print(name, round(times[name][-1], 2), flush=True)
                continue
            kw, feed, client = setup
            with LiveViewer(port=0, **kw) as live:
                rx = _Receiver(live.server.get_port()) if client else None
                time.sleep(0.5)
                out = train(live if feed else None)
                time.sleep(0.5)
                times[name].append(out["seconds"])
                extra[name].append({"updates": live.updates, "update_seconds": round(live.update_seconds, 3),
                                    "bytes_received": rx.bytes if rx else None, "gaussians": out["gaussians"]})
            print(name, round(times[name][-1], 2), extra[name][-1], flush=True)
    base = statistics.median(times["off"])
    return {
        **_summary(times, extra, base),
        "training": {"config": "world", "overrides": overrides, "prompt": cfg.prompt, "device": str(device)},
        "repeats": repeats,
        "median_seconds": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "slowdown_vs_off": {k: round(statistics.median(v) / base - 1, 4) for k, v in times.items()},
        "all_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "viewer": extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a run folder or a .ply")
    ap.add_argument("--only", choices=["video", "viewer", "live"], nargs="*", default=["video", "viewer", "live"])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--live-steps", type=int, default=100)
    ap.add_argument("--live-repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    found = find_splats(args.run)
    ply = found[0] if isinstance(found, tuple) else found
    model = load_ply(ply)
    source = {"run": str(args.run), "ply": ply.name, "gaussians": len(model)}
    if "video" in args.only:
        res = bench_video(model, args.frames, sorted(args.resolutions), args.batch, args.out)
        write_json(args.out / "video.json", {
            "benchmark": "turntable video: render (splatgen.render, torch backend on CPU) + H.264 encode",
            "environment": env(), "source": source, "crf": DEFAULT_CRF, "preset": DEFAULT_PRESET,
            "batch_size": args.batch, **res,
        })
    if "viewer" in args.only:
        shot = viewer_screenshot(args.run, args.out / "viewer.png")
        print("viewer:", shot, flush=True)
    if "live" in args.only:
        live = bench_live(args.live_steps, args.live_repeats)
        write_json(args.out / "live_viewer.json", {
            "benchmark": "training time with the live viewer (splatgen.viewer.LiveViewer) off and on",
            "environment": env(), **live,
        })
        print(live["slowdown_vs_off"], flush=True)


if __name__ == "__main__":
    main()
