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
import time
from pathlib import Path
from typing import Callable, List, Optional

from . import __version__
from .errors import RunInterrupted, SplatgenError, short

EPILOG = """examples:
  splatgen generate "a red mug" --out runs/red-mug                # offline, the procedural world's prior
  splatgen generate "a red mug" run.steps=600 camera.batch_size=4 # no --out: a new folder under runs/
  splatgen generate "a DSLR photo of a corgi" --config sd21 guidance.model=/path/to/sd-2-1-base
  splatgen generate "a red mug" --config world --config nerf run.steps=1500   # the NeRF baseline
  splatgen generate "a red mug" --out runs/red-mug --resume       # continue an interrupted run
  splatgen batch prompts.txt --out batch/                         # many prompts, resumable, any number of GPUs
  splatgen evaluate runs/red-mug
  splatgen export runs/red-mug mug.ply
  splatgen view runs/red-mug                                      # interactive 3D view in the browser
  splatgen config                                                 # every key, its default and meaning
"""

#: what ``splatgen export --help`` says after the format table (which comes from the table itself)
EXPORT_NOTES = """
a mesh's vertices are split along its UV seams: weld them by position before testing it for watertightness
(trimesh: mesh.merge_vertices(merge_tex=True)); splatgen's own check is of the welded mesh.

camera path (--cameras): a JSON list, one camera per frame, each looking at the object's centre:
  [{"elevation": 15, "azimuth": 0, "radius": 2.25}, {"elevation": 20, "azimuth": 5, "radius": 2.2, "fovy": 40}, ...]
  elevation and azimuth in degrees (azimuth 0 = the front, 90 = its left), radius: the distance in world units
  (the default orbit's is 2.25), fovy (optional): the vertical field of view in degrees (default 45)
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that completes its help when the help is shown (``complete_help(parser)``): the export
    format table lives with the exporters, which load torch, and no command may wait for that to be parsed."""

    complete_help: Optional[Callable[[argparse.ArgumentParser], None]] = None

    def format_help(self) -> str:
        if self.complete_help is not None:
            self.complete_help(self)
            self.complete_help = None
        return super().format_help()


def _complete_export_help(x: argparse.ArgumentParser) -> None:
    """``splatgen export --help`` from the format table (:data:`splatgen.export.formats.FORMATS`): each format's
    up axis and the tools that open it, and each option's default."""
    from .export.formats import FORMATS, OPTIONS

    lines = ["formats (the file's extension picks one) and the up axis each is written with (--up changes it):"]
    for f in FORMATS:
        lines.append(f"  {f.extension:<13}{f.holds.replace('`', '')}")
        where = f.opens.replace("`", "")
        lines.append(f"  {'':<13}{f'{f.default_up} up, upright in: ' if f.default_up else 'plays in: '}{where}")
    x.epilog = "\n".join(lines) + "\n" + EXPORT_NOTES
    for action in x._actions:
        if action.dest in OPTIONS:
            action.default = OPTIONS[action.dest]


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
    sub = p.add_subparsers(dest="command", required=True, metavar="{generate,batch,evaluate,export,view,studio,config}",
                           parser_class=_Parser)

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

    # The export options' defaults are the format table's (OPTIONS): None here means "not given".
    x = sub.add_parser("export", help="write a run as a file for other tools; the format follows the extension",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    x.complete_help = _complete_export_help
    x.add_argument("run_dir", type=Path, help="a run folder (finished or interrupted) or a .ply")
    x.add_argument("path", type=Path, help="the file to write; its extension picks the format (see below)")
    x.add_argument("--up", choices=["z", "y", "-y"], default=None,
                   help="the file's up axis (default: what the format's viewers expect; see below). Write --up=-y")
    x.add_argument("--pad-sh3", action="store_true", default=None,
                   help=".ply: pad SH to degree 3 (45 f_rest values, INRIA's loader)")
    m = x.add_argument_group("mesh (.glb, .obj)")
    m.add_argument("--mesh-resolution", type=int, help="density grid side (default %(default)s)")
    m.add_argument("--iso", type=float, help="iso-level (default: the one matching the splats' silhouettes)")
    m.add_argument("--faces", type=int, help="target face count after decimation (default %(default)s)")
    m.add_argument("--texture-size", type=int, help="texture side in pixels (default %(default)s)")
    t = x.add_argument_group("turntable video (.mp4, .gif): turns around the object starting at its front, or a "
                             "camera path")
    t.add_argument("--kind", choices=["rgb", "depth", "alpha"],
                   help="colours, depth (turbo colormap, near = red) or opacity as grey (default %(default)s)")
    t.add_argument("--frames", type=int, help="frames in the video (default %(default)s)")
    t.add_argument("--fps", type=float, help="frames per second (default %(default)g)")
    t.add_argument("--resolution", type=int, metavar="PX",
                   help="frame side in pixels (default 512 with a GPU, 256 on a CPU)")
    t.add_argument("--elevation", type=float, metavar="DEG",
                   help="camera height as an angle above the ground plane, -90 to 90 degrees (default %(default)g)")
    t.add_argument("--radius", type=float,
                   help="camera distance from the object's centre in world units, > 0 (default %(default)g)")
    t.add_argument("--turns", type=float, help="turns around the object in the video, > 0 (default %(default)g)")
    t.add_argument("--cameras", type=Path, dest="camera_path", metavar="FILE.json",
                   help="one camera per frame from a JSON file instead of the orbit (format below)")

    v = sub.add_parser("view", help="open an interactive 3D view of a run in the browser (viser)")
    v.add_argument("run_dir", type=Path, help="a run folder (finished or interrupted; its *.glb mesh too) or a .ply")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    v.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    v.add_argument("--max-splats", type=int, default=None, metavar="N",
                   help="send only the N most opaque splats (for slow browsers)")

    from .resources import config_names

    s = sub.add_parser("studio",
                       help="a page in the browser to generate (queued, watched live), browse and download runs",
                       usage="splatgen studio [--runs DIR] [--host HOST] [--port PORT] [--config NAME] [key=value ...]")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run of the page")
    s.add_argument("--runs", type=Path, default=RUNS_ROOT, metavar="DIR",
                   help=f"the runs folder: new runs go there as `splatgen generate` writes them, earlier ones are "
                        f"listed (default {RUNS_ROOT}/)")
    s.add_argument("--config", "-c", default="default", metavar="NAME",
                   help=f"the bundled preset selected at first ({', '.join(config_names())}; default: default)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; whoever reaches the page can "
                        "start runs and read the runs folder)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if taken)")
    return p


def _cmd_generate(args) -> int:
    from .api import check_input, run_generation
    from .rundir import RunFolder, find_resumable, slug

    # Everything that can be refused is checked once, before a run folder is claimed.
    t0 = time.perf_counter()  # the run's "setup" time counts from here, as generate()'s does
    cfg, device = check_input(args.prompt, args.config or None, args.overrides)
    prompt = cfg.prompt
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
        result = run_generation(cfg, out, profile=args.profile, t0=t0, device=device)
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
    from .config import DEFAULT_PRESET, config_files, config_to_yaml, describe_config, load_config

    # The files `generate` applies (the bundled default one when --config is not given), so what this shows is
    # what a run gets.
    cfg = load_config(config_files(args.config or None), args.overrides)
    if args.resolved or args.config or args.overrides:
        sys.stdout.write(config_to_yaml(cfg))  # as a run's config.yaml, byte for byte (no blank line after it)
    else:
        print(describe_config(cfg, f"set by the bundled {DEFAULT_PRESET!r} config"))
    return 0


def _cmd_export(args) -> int:
    """One row of the format table (:mod:`splatgen.export.formats`) writes the file: splats and meshes from the
    run's splats (``find_splats``: its ``splats.ply``, an interrupted run's ``interrupted.ply``, or a .ply), a
    turntable through the run's own representation (a NeRF run too)."""
    from .devices import resolve_device
    from .export import OPTIONS, export_file, export_format
    from .rundir import export_source

    fmt = export_format(args.path)  # an unknown extension is refused before anything is read
    # The options given (export_file refuses one the format does not take, and fills in the others' defaults).
    options = {o: getattr(args, o) for o in OPTIONS if getattr(args, o, None) is not None}
    if fmt.kind == "video" and "camera_path" in options:  # checked before the run is loaded
        from .export.video import read_camera_path

        orbit = [k for k in ("frames", "elevation", "radius", "turns") if k in options]
        if orbit:
            raise SplatgenError(f"--cameras gives every frame's camera; leave out {', '.join('--' + k for k in orbit)} "
                                "(they shape the orbit)")
        options["camera_path"] = read_camera_path(options["camera_path"])
    film = fmt.kind == "video"
    source, note = export_source(args.run_dir, film, resolve_device("auto") if film else "cpu")
    if note:
        print(f"splatgen: note: {note}", file=sys.stderr)
    bar = None
    if film and sys.stderr.isatty():
        from tqdm import tqdm

        total = len(options["camera_path"]) if "camera_path" in options else options.get("frames", OPTIONS["frames"])
        bar = tqdm(total=total, desc="turntable", unit="frame", dynamic_ncols=True)
        options["progress"] = lambda done, total: bar.update(done - bar.n)
    try:
        print(f"wrote {export_file(source, args.path, up=args.up, **options)}")
    finally:
        if bar is not None:
            bar.close()
    return 0


def _cmd_view(args) -> int:
    from .viewer import serve_run

    serve_run(args.run_dir, host=args.host, port=args.port, max_splats=args.max_splats)
    return 0


def _cmd_studio(args) -> int:
    from .studio import serve_studio

    serve_studio(args.runs, host=args.host, port=args.port, overrides=args.overrides, config=args.config)
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
    # The handler above prints our messages, and nothing else may: once a library configures the root logger,
    # each would print a second time as "INFO:splatgen: ..." (open_clip, loading the bundled prior's text encoder,
    # calls logging.info() on the root logger, which runs logging.basicConfig()). Restored on return.
    propagate, log.propagate = log.propagate, False
    _SIGNAL_SEEN.clear()
    handlers = {"generate": _cmd_generate, "batch": _cmd_batch, "evaluate": _cmd_evaluate, "config": _cmd_config,
                "export": _cmd_export, "view": _cmd_view, "studio": _cmd_studio}
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
        log.propagate = propagate
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
            except ValueError:  # pragma: no cover
                pass


if __name__ == "__main__":
    sys.exit(main())
