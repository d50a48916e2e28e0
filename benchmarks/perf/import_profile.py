"""Where a fresh ``splatgen generate`` spends its import time: ``python -X importtime`` of the whole command,
each module's own time summed by top-level package, the chain that first imports each heavy library (the
import that pays for it), and the run's own phase timings (``summary.json``'s ``timings_s``).

    python benchmarks/perf/import_profile.py --out benchmarks/results/perf/import_profile_cpu.json \\
        [--checkout now=.] [--checkout base=/path/to/an/older/worktree] [--prompt "a red mug"] [key=value ...]

The command is ``python -X importtime -m splatgen generate PROMPT --out TMP run.progress=off [key=value ...]``
in a fresh process; ``-X importtime`` itself slows imports a little, so the seconds are an upper bound and
the shares are what to read. Each checkout is put first on ``PYTHONPATH`` (as in ``import_time.py``), so only
splatgen's own code differs between them; the on-disk cache is as the previous runs left it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

#: Libraries whose first import is traced back to the splatgen or library module that asked for it.
HEAVY = ("torch", "torch._dynamo", "torch._inductor", "triton", "diffusers", "diffusers.models.transformers",
         "transformers", "open_clip", "torchvision", "timm", "peft", "scipy", "accelerate", "wandb", "sympy")

_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def parse_importtime(stderr: str) -> list:
    """(self_us, cumulative_us, depth, module) per line of ``-X importtime``, in the order printed (a module
    after all it imported)."""
    return [(int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4))
            for m in map(_LINE.match, stderr.splitlines()) if m]


def first_import_chains(rows: list, names=HEAVY) -> dict:
    """For each of ``names``: its cumulative seconds and the chain of modules that imported it, innermost first."""
    out = {}
    for i, (_, cum, depth, name) in enumerate(rows):
        if name not in names or name in out:
            continue
        chain, d = [], depth
        for _, _, d2, n2 in rows[i + 1:]:
            if d2 < d:
                chain.append(n2)
                d = d2
        out[name] = {"cumulative_s": round(cum / 1e6, 3), "imported_by": chain[:6]}
    return out


def by_package(rows: list, top: int = 20) -> list:
    totals = defaultdict(int)
    for self_us, _, _, name in rows:
        totals[name.split(".")[0]] += self_us
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"package": k, "self_s": round(v / 1e6, 3)} for k, v in ranked]


def profile_run(checkout: Path, prompt: str, overrides: list) -> dict:
    """Profile one fresh ``splatgen generate`` of ``checkout``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(checkout))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-X", "importtime", "-m", "splatgen", "generate", prompt, "--out", f"{tmp}/run",
               "run.progress=off", *overrides]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=checkout)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(f"the run of {checkout} failed: {r.stderr[-2000:]}")
        summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
    rows = parse_importtime(r.stderr)
    return {"path": str(checkout), "wall_s": round(wall, 2), "timings_s": summary.get("timings_s"),
            "imports_total_s": round(sum(s for s, *_ in rows) / 1e6, 3), "modules_imported": len(rows),
            "self_time_by_package": by_package(rows), "first_imports": first_import_chains(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--prompt", default="a red mug")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the run")
    args = ap.parse_args()
    checkouts = dict(c.split("=", 1) for c in (args.checkout or ["now=."]))
    result = {"benchmark": "import profile of a fresh splatgen generate", "environment": environment(),
              "run": " ".join(["python -X importtime -m splatgen generate", repr(args.prompt), "--out TMP",
                               "run.progress=off", *args.overrides]), "checkouts": {}}
    for name, path in checkouts.items():
        result["checkouts"][name] = profile_run(Path(path).resolve(), args.prompt, args.overrides)
    print(json.dumps(result["checkouts"], indent=1))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
