"""Views per second of the world's ground-truth ray caster (``splatgen.world.raycast.render_world``).

For each kind of object: one object seen by a batch of random orbit cameras at 64 x 64 (no supersampling,
and 2 x 2 as the prior's training data uses), timed after a warm-up with the device synchronised.

    python benchmarks/world_raycast_speed.py --out benchmarks/results/world/raycast_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_json  # noqa: E402

from splatgen.cameras import sample_orbit_cameras  # noqa: E402
from splatgen.world.grammar import KINDS, make_object  # noqa: E402
from splatgen.world.raycast import render_world  # noqa: E402


def views_per_second(obj, batch: int, resolution: int, supersample: int, device: str, repeats: int) -> float:
    cams = sample_orbit_cameras(batch, resolution, torch.Generator().manual_seed(0), device=device)
    render_world(obj, cams, supersample=supersample)  # warm-up (allocations, kernels)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        render_world(obj, cams, supersample=supersample)
        sync()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/world/raycast_speed.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for kind in sorted(KINDS):
        obj = make_object(kind, seed=0)
        row = {"kind": kind, "primitives": len(obj.primitives)}
        for ss in (1, 2):
            row[f"views_per_s_ss{ss}"] = round(views_per_second(obj, args.batch, args.resolution, ss, args.device, args.repeats), 1)
        rows.append(row)
        print(row, flush=True)
    summary = {f"median_views_per_s_ss{ss}": statistics.median(r[f"views_per_s_ss{ss}"] for r in rows) for ss in (1, 2)}
    write_json(args.out, {"benchmark": "world ray caster speed", "environment": environment(),
                          "settings": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "results": rows})
    print(summary)


if __name__ == "__main__":
    main()
