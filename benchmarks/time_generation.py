"""Wall-clock time of one whole generation (``splatgen.generate``), with its ground-truth metrics.

    python benchmarks/time_generation.py --prompt "a red mug" --out benchmarks/results/prior/default_generation_cpu.json

Uses the bundled default config unless ``--config`` says otherwise; ``key=value`` overrides may follow. The
time covers everything the command does: loading the prior, the optimisation, writing the run folder,
previews and the evaluation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

import splatgen  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt", default="a red mug")
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = splatgen.generate(args.prompt, config=args.config, out_dir=Path(tmp) / "run", overrides=args.overrides)
        total = time.perf_counter() - t0
    payload = {
        "benchmark": "one whole generation",
        "environment": environment(),
        "prompt": args.prompt,
        "config": args.config or "default",
        "overrides": args.overrides,
        "total_seconds": round(total, 2),
        "optimisation_seconds": round(result.seconds, 2),
        "steps": result.config.run.steps,
        "views_per_step": result.config.camera.batch_size,
        "num_gaussians": result.num_gaussians,
        "metrics": result.metrics,
    }
    write_json(args.out, payload)
    print(f"{args.prompt!r}: {total:.1f} s in all ({result.seconds:.1f} s optimising), metrics {result.metrics}")


if __name__ == "__main__":
    main()
