"""Command line: ``splatgen generate "a prompt" --config FILE --out DIR key=value ...`` (also ``python -m splatgen``).

Every error a user can cause (bad input, a full disk, a missing model) ends in one line ``splatgen: error: ...``
and exit code 2; Ctrl-C ends in 130, SIGTERM in 143, each after saving what the run had; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

from . import __version__
from .errors import RunInterrupted, SplatgenError, short

EPILOG = """examples:
  splatgen generate "a red mug"                                   # offline, the procedural world's prior
  splatgen generate "a red mug" run.steps=600 camera.batch_size=4
  splatgen generate "a DSLR photo of a corgi" --config sd21 guidance.model=/path/to/sd-2-1-base
  splatgen generate "a red mug" --config world --config nerf run.steps=1500   # the NeRF baseline
  splatgen generate "a red mug" --out runs/mug --resume           # continue an interrupted run
  splatgen batch prompts.txt --out batch/                         # many prompts, resumable, any number of GPUs
  splatgen evaluate runs/a-red-mug
  splatgen export runs/a-red-mug mug.ply
  splatgen view runs/a-red-mug                                    # interactive 3D view in the browser
  splatgen config                                                 # every key, its default and meaning
"""

EXPORT_EPILOG = """formats and their default up axis (--up changes it):
  .ply .splat      splats, -y up: SuperSplat and antimatter15's viewer show them upright
                   (three.js viewers such as Spark and GaussianSplats3D: --up=y)
  .spz             Niantic's compressed splats, y up (the format's RUB axes; Spark)
  .splats.glb      glTF KHR_gaussian_splatting, y up (glTF's axes; Babylon.js, PlayCanvas, Cesium)
  .glb .obj        closed textured mesh, y up with the front facing +Z (Blender, game engines, three.js)
  .mp4 .gif        turntable video, 120 frames at 30 fps, starting at the front
"""

#: the folder numbered runs go to when --out is not given.
RUNS_ROOT = Path("runs")


def _config_help() -> str:
    from .resources import config_names

    return f"YAML config file or bundled name ({', '.join(config_names())}); repeatable, later wins"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splatgen", description="Text-to-3D with Gaussian splatting and score distillation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"splatgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{generate,batch,evaluate,export,view,config}")

    g = sub.add_parser("generate", help="generate 3D Gaussians from a text prompt",
                       usage="splatgen generate [options] PROMPT [key=value ...]",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    g.add_argument("prompt", help='what to generate, quoted: "a red mug"')
    g.add_argument("overrides", nargs="*", metavar="key=value",
                   help="optional config overrides such as run.steps=300 (see `splatgen config`)")
    g.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help=_config_help())
    g.add_argument("--out", "-o", type=Path, default=None,
                   help=f"run folder (default: {RUNS_ROOT}/<prompt>, numbered so earlier runs are kept); written as "
                        "<folder>.partial and renamed when complete")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out once the new one is complete (or start an interrupted one again)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out (default: the one interrupted run of this prompt "
                        f"under {RUNS_ROOT}/) from its newest checkpoint")
    g.add_argument("--profile", action="store_true", help="time every stage of the step (syncs the GPU)")

    b = sub.add_parser("batch", help="generate many prompts: resumable, one process per GPU under torchrun",
                       usage="splatgen batch [options] PROMPTS --out DIR [key=value ...]",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("prompts", type=Path, help="a text file (one prompt per line) or .jsonl (one object per line: "
                                             '{"prompt": ..., "seed": ..., "overrides": {...} or [...], "name": ...})')
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every prompt")
    b.add_argument("--out", "-o", type=Path, required=True, help="the batch folder (one run folder per prompt)")
    b.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help=_config_help())
    b.add_argument("--retries", type=int, default=2, help="attempts after a failure, per prompt (default 2)")
    b.add_argument("--no-gallery", action="store_true", help="do not write index.html")

    e = sub.add_parser("evaluate", help="score a run of a procedural-world prompt against its ground truth")
    e.add_argument("run_dir", type=Path)

    c = sub.add_parser("config", help="list every config key with its default and meaning, or show a resolved config",
                       usage="splatgen config [--config FILE] [--resolved] [key=value ...]")
    c.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help=_config_help())
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.add_argument("--resolved", action="store_true", help="print the merged config as YAML instead of the key list")

    x = sub.add_parser("export", help="write a run as a file for other tools; the format follows the extension",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXPORT_EPILOG)
    x.add_argument("run_dir", type=Path, help="a run folder (finished or interrupted) or a .ply")
    x.add_argument("path", type=Path, help="the file to write: .ply .splat .spz .splats.glb (splats), .glb .obj "
                                           "(textured mesh), .mp4 .gif (turntable)")
    x.add_argument("--up", choices=["z", "y", "-y"], default=None,
                   help="the file's up axis (default: what the format's viewers expect; see below). Write --up=-y")
    x.add_argument("--pad-sh3", action="store_true", help=".ply: pad SH to degree 3 (45 f_rest values, INRIA's loader)")
    m = x.add_argument_group("mesh (.glb, .obj)")
    m.add_argument("--mesh-resolution", type=int, default=128, help="density grid side (default 128)")
    m.add_argument("--iso", type=float, default=None, help="iso-level (default: the one matching the splats' silhouettes)")
    m.add_argument("--faces", type=int, default=20000, help="target face count after decimation (default 20000)")
    m.add_argument("--texture-size", type=int, default=1024, help="texture side in pixels (default 1024)")
    t = x.add_argument_group("turntable video (.mp4, .gif): one turn around the object, starting at its front")
    t.add_argument("--kind", choices=["rgb", "depth", "alpha"], default="rgb",
                   help="colours, depth (turbo colormap, near = red) or opacity as grey (default rgb)")
    t.add_argument("--frames", type=int, default=120, help="frames in the turn (default 120: 4 s at 30 fps)")
    t.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    t.add_argument("--resolution", type=int, default=None, metavar="PX",
                   help="frame side in pixels (default 512 with a GPU, 256 on a CPU)")

    v = sub.add_parser("view", help="open an interactive 3D view of a run in the browser (viser)")
    v.add_argument("run_dir", type=Path, help="a run folder (finished or interrupted; its *.glb mesh too) or a .ply")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    v.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    v.add_argument("--max-splats", type=int, default=None, metavar="N",
                   help="send only the N most opaque splats (for slow browsers)")
    return p


def _cmd_generate(args) -> int:
    from .api import check_prompt, generate, resolve_config
    from .rundir import RunFolder, find_resumable, slug
    from .trainer import check_memory, resolve_device

    # Everything that can be refused is checked before a run folder is claimed.
    prompt = check_prompt(args.prompt)
    cfg = resolve_config(args.config or None, args.overrides)
    cfg.prompt = prompt
    check_memory(cfg, resolve_device(cfg.run.device))
    if args.resume and args.out is None:
        found = find_resumable(RUNS_ROOT, prompt)
        if not found:
            raise SplatgenError(f"--resume: no interrupted run of {short(prompt)} under {RUNS_ROOT}/; give its --out")
        if len(found) > 1:
            raise SplatgenError(f"--resume: several interrupted runs of this prompt ({[str(f) for f in found]}); "
                                "choose one with --out")
        args.out = found[0]
    log = logging.getLogger("splatgen")
    if args.out is None:
        out = RunFolder.claim_numbered(RUNS_ROOT, slug(prompt))
    else:
        out = RunFolder.claim(args.out, overwrite=args.overwrite, resume=args.resume, require_interrupted=args.resume)
    log.info("writing %s (renamed %s when complete)", out.path, out.final)
    try:
        result = generate(prompt, config=cfg, out_dir=out, profile=args.profile)
    except RunInterrupted as exc:
        if exc.step <= 0:
            raise
        cmd = ["splatgen", "generate", json.dumps(args.prompt), *[f"--config {c}" for c in args.config],
               *args.overrides, "--out", str(out.final), "--resume"]
        raise RunInterrupted(f"{exc}; continue with: {' '.join(cmd)}", exc.signum, exc.step) from None
    rep = result.rep
    print(f"wrote {out.final / rep.ply_name} ({rep.summary()}) in {result.seconds:.1f} s")
    if result.metrics:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
        print("metrics:", json.dumps(shown))
    return 0


def _cmd_batch(args) -> int:
    from .batch import run_batch

    summary = run_batch(args.prompts, args.out, config=args.config or None, overrides=args.overrides,
                        retries=args.retries, gallery=not args.no_gallery)
    return 0 if summary.get("failed", 0) == 0 else 1


def _cmd_evaluate(args) -> int:
    import warnings

    from .world.metrics import evaluate_run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate_run(args.run_dir)
    for w in caught:
        print(f"splatgen: note: {w.message}", file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_config(args) -> int:
    from .config import config_to_yaml, describe_config, load_config

    if args.resolved or args.config or args.overrides:
        print(config_to_yaml(load_config(args.config, args.overrides)))
    else:
        print(describe_config())
    return 0


def _cmd_export(args) -> int:
    from .export import MESH_FORMATS, SPLAT_FORMATS, VIDEO_FORMATS, export_format, export_splats, load_ply
    from .rundir import find_splats

    fmt = export_format(args.path)  # an unknown extension is refused before anything is read
    if fmt in VIDEO_FORMATS:
        return _export_video(args)
    src, note = find_splats(args.run_dir)
    if note:
        print(f"splatgen: note: {note}", file=sys.stderr)
    model = load_ply(src)
    if fmt in SPLAT_FORMATS:
        n = export_splats(model, args.path, up=args.up, pad_sh_to_degree3=args.pad_sh3)
        print(f"wrote {args.path} ({n} Gaussians)")
    elif fmt in MESH_FORMATS:
        from .export.mesh import export_mesh

        res = export_mesh(model.state(), args.path, up=args.up or "y", resolution=args.mesh_resolution, iso=args.iso,
                          target_faces=args.faces, texture_size=args.texture_size)
        extra = " (+ .mtl and .png beside it)" if fmt == "obj" else ""
        print(f"wrote {args.path}{extra} ({res.num_faces} faces, iso {res.iso:.3g}, "
              f"{'watertight' if res.watertight else 'not watertight'})")
    return 0


def _export_video(args) -> int:
    """A turntable of a run through its representation's own renderer (a NeRF run too), or of a .ply."""
    from .export import load_ply
    from .export.video import write_turntable
    from .rundir import load_run
    from .trainer import resolve_device

    device = resolve_device("auto")
    if args.run_dir.is_file():
        model = load_ply(args.run_dir, device=device)
    else:
        view, model = load_run(args.run_dir, device=device)
        if view.note:
            print(f"splatgen: note: {view.note}", file=sys.stderr)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=args.frames, desc="turntable", unit="frame", dynamic_ncols=True)
    try:
        info = write_turntable(model, args.path, fps=args.fps, frames=args.frames, resolution=args.resolution,
                               kind=args.kind, progress=(lambda done, total: bar.update(done - bar.n)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {info}")
    return 0


def _cmd_view(args) -> int:
    from .viewer import serve_run

    serve_run(args.run_dir, host=args.host, port=args.port, max_splats=args.max_splats)
    return 0


def _unquoted_prompt_hint(args, overrides: List[str]) -> str:
    """When words of an unquoted prompt were taken for overrides, say how to quote it."""
    words = [o for o in overrides if "=" not in o and not o.startswith("-")]
    if not (getattr(args, "prompt", None) and words):
        return ""
    whole = " ".join([args.prompt, *words])
    return f'; if "{whole}" is the prompt, quote it: splatgen {args.command} "{whole}"'


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is at the time of the message (main() may run many times in a process)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always answers sys.stderr
        pass


#: the signal that stopped the command, once one came (see _on_signal)
_SIGNAL_SEEN: List[int] = []


def _on_signal(signum, frame):
    """Ctrl-C and SIGTERM (timeout, docker stop, systemd, Slurm) outside training: stop, remembering why. (During
    training the run's own handler takes over and saves at the next step boundary.) A signal that lands inside an
    import can surface later as another error (an interrupted C extension fails to import again): remembering it
    lets main() still report an interrupt, not that error."""
    _SIGNAL_SEEN.append(signum)
    raise RunInterrupted(f"stopped by {'Ctrl-C' if signum == signal.SIGINT else 'SIGTERM'}", signum=signum)


def _join_negative_values(argv: List[str]) -> List[str]:
    """``--up -y`` -> ``--up=-y`` (argparse would read ``-y`` as an option)."""
    out: List[str] = []
    for a in argv:
        if out and out[-1] == "--up" and a.startswith("-") and not a.startswith("--"):
            out[-1] = f"--up={a}"
        else:
            out.append(a)
    return out


#: libgomp's spin before an idle OpenMP thread sleeps, used unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY.
#: libgomp's default (300000) collapses a run on a busy machine: a thread spins at a barrier while the thread it
#: waits for is off the CPU. On a 2-core CPU beside a process busy on both cores, the default run took 141 s
#: against 71 s at 1000 (what libgomp itself uses when one process oversubscribes the CPUs), alone 34.5 s against
#: 37.5 s (medians of 3; benchmarks/results/perf/cpu_contention.json).
OPENMP_SPINCOUNT = "1000"


def _openmp_spin_default(environ=os.environ) -> None:
    """Set :data:`OPENMP_SPINCOUNT` before torch (and with it libgomp, which reads it once) loads."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return
    environ["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT


def main(argv: Optional[List[str]] = None) -> int:
    _openmp_spin_default()
    parser = build_parser()
    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    # key=value overrides may stand before or after options (argparse stops collecting positionals at the
    # first option), so gather the leftovers that look like overrides.
    args, unknown = parser.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("-") or "=" not in u]
    if stray or (unknown and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or unknown)}{_unquoted_prompt_hint(args, stray)}")
    if unknown:
        args.overrides = list(args.overrides) + unknown
    # Our messages at INFO; libraries (open_clip, diffusers) keep their own, quieter levels.
    log = logging.getLogger("splatgen")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    _SIGNAL_SEEN.clear()
    handlers = {"generate": _cmd_generate, "batch": _cmd_batch, "evaluate": _cmd_evaluate, "config": _cmd_config,
                "export": _cmd_export, "view": _cmd_view}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
    except ValueError:  # pragma: no cover - not the main thread (main() called from a thread)
        pass
    try:
        return handlers[args.command](args)
    except SplatgenError as exc:
        hint = _unquoted_prompt_hint(args, list(getattr(args, "overrides", []) or []))
        print(f"splatgen: error: {exc}{hint if 'key=value' in str(exc) else ''}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `splatgen config | head`: the reader went away; say nothing more (and let Python not complain either)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        detail = f": {exc}" if str(exc) else ""
        print(f"splatgen: interrupted{detail}", file=sys.stderr)
        return 128 + int(signum)
    except OSError as exc:
        from .rundir import disk_error

        if _SIGNAL_SEEN:
            print("splatgen: interrupted", file=sys.stderr)
            return 128 + _SIGNAL_SEEN[0]
        if not disk_error(exc):
            raise
        print(f"splatgen: error: {exc.filename or ''}: {exc.strerror}".replace(": :", ":"), file=sys.stderr)
        return 2
    except Exception:
        if _SIGNAL_SEEN:
            print("splatgen: interrupted", file=sys.stderr)
            return 128 + _SIGNAL_SEEN[0]
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            except ValueError:  # pragma: no cover
                pass


if __name__ == "__main__":
    sys.exit(main())
