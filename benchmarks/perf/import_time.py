"""Start-up cost of the light entry points: ``import splatgen``, ``python -m splatgen --help`` and
``import splatgen.world.grammar``, each the median of ``--repeats`` fresh processes, for one or more checkouts
(to compare a change against its base; the runs of the checkouts are interleaved).

    python benchmarks/perf/import_time.py --out benchmarks/results/perf/import_time_cpu.json \\
        --checkout now=. [--checkout base=/path/to/an/older/worktree] [--repeats 10]

Each process puts its checkout first on ``sys.path`` (``PYTHONPATH``), so the interpreter and installed
dependencies are the same for all checkouts; only splatgen's own code differs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

CASES = {
    "import splatgen": ["-c", "import splatgen"],
    "splatgen --help": ["-m", "splatgen", "--help"],
    "import splatgen.world.grammar": ["-c", "import splatgen.world.grammar"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    checkouts = dict(c.split("=", 1) for c in (args.checkout or ["now=."]))
    times = {(name, case): [] for name in checkouts for case in CASES}
    for _ in range(args.repeats):
        for name, path in checkouts.items():
            env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()))
            for case, argv in CASES.items():
                t = time.perf_counter()
                subprocess.run([sys.executable, *argv], env=env, check=True, stdout=subprocess.DEVNULL,
                               cwd=Path(path).resolve())
                times[(name, case)].append(time.perf_counter() - t)
    rows = [{"checkout": name, "path": str(Path(checkouts[name]).resolve()), "case": case,
             "median_s": round(statistics.median(ts), 4), "min_s": round(min(ts), 4)}
            for (name, case), ts in times.items()]
    for r in rows:
        print(r, flush=True)
    write_json(args.out, {"benchmark": "start-up of the light entry points", "environment": environment(),
                          "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
