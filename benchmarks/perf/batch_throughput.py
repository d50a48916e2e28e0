"""Prompts per hour on one device: ``splatgen.generate_many`` (the guidance loaded once, reused for every
prompt) against one ``splatgen generate`` process per prompt.

    python benchmarks/perf/batch_throughput.py --out benchmarks/results/batch/throughput_1gpu_h200.json --prompts 6

The batch is timed in this process from the call to its return (the model load, every prompt, the records);
the per-process figure is ``--cli-runs`` fresh ``splatgen generate`` processes of the first prompt, timed
end to end, as a user would run them in a loop. Both with the bundled prior's default config and their
evaluation on (what the commands do by default).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

PROMPTS = ["a red mug", "a blue chair", "a green car", "a white snowman", "a yellow teapot", "an orange rocket",
           "a purple lamp", "a brown table", "a pink donut", "a black penguin", "a grey robot", "a green tree"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--cli-runs", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import splatgen

    prompts = PROMPTS[: args.prompts]
    result = {"benchmark": "batch throughput on one device", "environment": environment(), "prompts": prompts,
              "overrides": args.overrides}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = splatgen.generate_many(prompts, Path(tmp) / "batch", overrides=["run.progress=off", *args.overrides],
                                     progress=False)
        batch_s = time.perf_counter() - t
        rows = res["rows"]
        result["batch"] = {"seconds": round(batch_s, 2), "done": res.get("done", 0),
                           "prompts_per_hour": round(3600 * res.get("done", 0) / batch_s, 1),
                           "per_prompt_seconds": [r["seconds"] for r in rows],
                           "mean_iou": statistics.fmean([r["metrics"]["iou"] for r in rows if r["metrics"].get("iou") is not None])}
        print(result["batch"], flush=True)
        write_json(args.out, result)
        walls = []
        for i in range(args.cli_runs):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "splatgen", "generate", prompts[i % len(prompts)], "--out",
                                f"{tmp}/cli{i}", "run.progress=off", *args.overrides], capture_output=True, text=True)
            walls.append(round(time.perf_counter() - t, 2))
            assert r.returncode == 0, r.stderr[-1000:]
        mean = statistics.fmean(walls)
        result["one_process_per_prompt"] = {"seconds": walls, "prompts_per_hour": round(3600 / mean, 1)}
        result["speedup"] = round(result["batch"]["prompts_per_hour"] / result["one_process_per_prompt"]["prompts_per_hour"], 2)
        print(result["one_process_per_prompt"], "speed-up", result["speedup"], flush=True)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
