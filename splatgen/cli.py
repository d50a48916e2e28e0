"""Command line: ``splatgen generate "a prompt" --config FILE --out DIR key=value ...`` (also ``python -m splatgen``)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import List, Optional

from .errors import SplatgenError

EPILOG = """examples:
  splatgen generate "a red mug"                                   # offline, the procedural world's prior
  splatgen generate "a red mug" run.steps=600 camera.batch_size=4
  splatgen generate "a DSLR photo of a corgi" --config sd21 guidance.model=/path/to/sd-2-1-base
  splatgen generate "a red mug" --config world --config nerf run.steps=1500   # the NeRF baseline
  splatgen evaluate runs/a-red-mug
  splatgen config                                                 # every key, its default and meaning
"""


def _slug(prompt: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return s[:60] or "run"


def default_out_dir(prompt: str, root: Path = Path("runs")) -> Path:
    """``runs/<slug>``, or ``runs/<slug>-2``, ``-3``... so a default run never lands on an earlier one."""
    base = root / _slug(prompt)
    if not base.exists():
        return base
    i = 2
    while (root / f"{base.name}-{i}").exists():
        i += 1
    return root / f"{base.name}-{i}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splatgen", description="Text-to-3D with Gaussian splatting and score distillation.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate 3D Gaussians from a text prompt",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    g.add_argument("prompt", help='what to generate, e.g. "a red mug"')
    g.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides such as run.steps=300 (see `splatgen config`)")
    g.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config file or bundled name (default, sd21, tiny...); repeatable, later wins")
    g.add_argument("--out", "-o", type=Path, default=None,
                   help="run folder (default: runs/<prompt>, numbered so earlier runs are kept)")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument("--profile", action="store_true", help="time every stage of the step (syncs the GPU)")

    e = sub.add_parser("evaluate", help="score a run of a procedural-world prompt against its ground truth")
    e.add_argument("run_dir", type=Path)

    c = sub.add_parser("config", help="list every config key with its default and meaning, or show a resolved config")
    c.add_argument("--config", "-c", action="append", default=[], metavar="FILE")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.add_argument("--resolved", action="store_true", help="print the merged config as YAML instead of the key list")

    x = sub.add_parser("export", help="write a run's Gaussians as a .ply (e.g. padded to SH degree 3)")
    x.add_argument("run_dir", type=Path)
    x.add_argument("path", type=Path)
    x.add_argument("--pad-sh3", action="store_true", help="pad SH to degree 3 (45 f_rest values, INRIA's loader)")
    return p


def _cmd_generate(args) -> int:
    from .api import generate

    out = args.out if args.out is not None else default_out_dir(args.prompt)
    result = generate(args.prompt, config=args.config or None, out_dir=out, overrides=args.overrides,
                      overwrite=args.overwrite, profile=args.profile)
    rep = result.rep
    what = f"{result.num_gaussians} Gaussians" if rep is None or rep.kind == "gaussians" else f"NeRF, {rep.size()} occupied cells"
    name = rep.ply_name if rep is not None else "splats.ply"
    print(f"wrote {out / name} ({what}) in {result.seconds:.1f} s")
    if result.metrics:
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.metrics.items() if not isinstance(v, (dict, list))}
        print("metrics:", json.dumps(shown))
    return 0


def _cmd_evaluate(args) -> int:
    from .world.metrics import evaluate_run

    metrics = evaluate_run(args.run_dir)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.run_dir / 'metrics.json'}")
    return 0


def _cmd_config(args) -> int:
    from .config import config_to_yaml, describe_config, load_config

    if args.resolved or args.config or args.overrides:
        print(config_to_yaml(load_config(args.config, args.overrides)))
    else:
        print(describe_config())
    return 0


def _cmd_export(args) -> int:
    from .export import load_ply, save_ply
    from .rundir import find_splats

    n = save_ply(load_ply(find_splats(args.run_dir)), args.path, pad_sh_to_degree3=args.pad_sh3)
    print(f"wrote {args.path} ({n} Gaussians)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    # key=value overrides may stand before or after options (argparse stops collecting positionals at the
    # first option), so gather the leftovers that look like overrides.
    args, unknown = parser.parse_known_args(argv)
    stray = [u for u in unknown if u.startswith("-") or "=" not in u]
    if stray or (unknown and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or unknown)}")
    if unknown:
        args.overrides = list(args.overrides) + unknown
    # Our messages at INFO; libraries (open_clip, diffusers) keep their own, quieter levels.
    log = logging.getLogger("splatgen")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    handlers = {"generate": _cmd_generate, "evaluate": _cmd_evaluate, "config": _cmd_config, "export": _cmd_export}
    try:
        return handlers[args.command](args)
    except SplatgenError as exc:
        print(f"splatgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("splatgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
