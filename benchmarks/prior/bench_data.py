"""Throughput of the prior's training data: captioned world views rendered per second.

    python3 benchmarks/prior/bench_data.py --out benchmarks/results/prior/data_cpu.json
    python3 benchmarks/prior/bench_data.py --workers 13 --seconds 10 --out $OUT/data_gpu_host.json   # GPU machine

Measures one process on one CPU thread at 32 and 64 pixels, with and without 2x2 supersampling (chunks of
8 objects x 16 views), the ray caster on CUDA in this process when there is a GPU, and ``--workers`` CPU
worker processes feeding a pool (what training uses).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: prior_training/
from common import environment, write_json  # noqa: E402

from prior_training.data import ViewPool, ViewProducer, WorldViews, views_per_second  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    ap.add_argument("--workers", type=int, default=0, help="also measure this many worker processes")
    args = ap.parse_args()
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for res in (32, 64):
        for ss in (1, 2):
            v = views_per_second("cpu", args.seconds, resolution=res, supersample=ss)
            results.append({"where": "cpu, 1 process, 1 thread", "resolution": res, "supersample": ss, "views_per_s": round(v, 1)})
            print(results[-1], flush=True)
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        for ss in (1, 2):
            v = views_per_second("cuda", args.seconds, resolution=64, supersample=ss)
            results.append({"where": "cuda, in process", "resolution": 64, "supersample": ss, "views_per_s": round(v, 1)})
            print(results[-1], flush=True)
    if args.workers > 0:
        producer = ViewProducer(WorldViews(resolution=64, supersample=2), workers=args.workers, seed=1)
        pool = ViewPool(1 << 16, 64, "cuda" if torch.cuda.is_available() else "cpu")
        for c in producer.poll(max_chunks=1, wait=True):  # workers started
            pool.add(c)
        n0, t0 = producer.rendered, time.perf_counter()
        while time.perf_counter() - t0 < 2 * args.seconds:
            for c in producer.poll(max_chunks=64):
                pool.add(c)
            time.sleep(0.01)
        v = (producer.rendered - n0) / (time.perf_counter() - t0)
        producer.close()
        results.append({"where": f"{args.workers} CPU worker processes -> pool", "resolution": 64, "supersample": 2, "views_per_s": round(v, 1)})
        print(results[-1], flush=True)
    write_json(args.out, {"benchmark": "prior data: rendered views per second", "environment": environment(), "results": results})


if __name__ == "__main__":
    main()
