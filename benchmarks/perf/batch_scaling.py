"""``splatgen batch`` under ``torchrun`` on 1..N processes (one per GPU): prompts per hour, the scaling efficiency
against N times one process's rate, peak memory per process, and (``--kill-test``) that every prompt finishes
exactly once when one worker is killed mid-batch and torchrun restarts the group.

    python benchmarks/perf/batch_scaling.py --out benchmarks/results/batch/scaling_<device>.json \\
        --nproc 1 2 [4 8] --prompts-per-proc 4 [--guidance bundled|sd21-shaped] [--kill-test 2] [key=value ...]

Weak scaling: N processes get ``N x --prompts-per-proc`` prompts, so every process has the same work as the one
process of N = 1, and the efficiency is ``rate(N) / (N x rate(1))``. Each N is one ``torchrun --standalone
--nproc_per_node=N`` of this script's worker, timed from launch to exit (model loads, every prompt, the records:
what a user waits for). Each worker calls :func:`splatgen.generate_many` on the shared output folder, as ``splatgen
batch`` does, and writes its peak memory (CUDA: ``max_memory_allocated``; CPU: the process's max RSS).

``--guidance sd21-shaped``: Stable-Diffusion-2.1-base-shaped guidance with random weights (``--config sd21``; the
real model's cost, meaningless images; the prompt is not encoded, random embeddings stand in for the text).
``bundled``: the default config's bundled prior. On a CPU machine the processes share the cores (torchrun gives
each one thread) and the collective backend is gloo: that measures the runner, not GPU scaling.

``--kill-test N``: one more batch on N processes under ``torchrun --max-restarts=3``; once a first prompt is
done, worker rank 1 is killed with SIGKILL. torchrun stops the other workers (SIGTERM: they save and leave their
runs resumable) and restarts the group; the batch must end with every prompt finished exactly once: one folder
each, one ``done`` line each in the manifest, no ``.partial`` folder left.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import environment, write_json  # noqa: E402

PROMPTS = ["a red mug", "a blue chair", "a green car", "a white snowman", "a yellow teapot", "an orange rocket",
           "a purple lamp", "a brown table", "a pink donut", "a black penguin", "a grey robot", "a green tree"]


def prompt_list(n: int) -> list:
    """``n`` prompts: the world's objects, each with its own seed once the names repeat."""
    return [{"prompt": PROMPTS[i % len(PROMPTS)], "seed": i} for i in range(n)]


# ------------------------------------------------------------------------------------------------- worker
def worker(args, overrides) -> None:
    import torch

    import splatgen

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("splatgen").setLevel(logging.INFO)
    rank = int(os.environ.get("RANK", "0"))
    ranks = args.batch_dir.parent / f"{args.batch_dir.name}-ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / f"pid-{rank}").write_text(str(os.getpid()))  # for --kill-test (rewritten by a restarted worker)
    config = None
    if args.guidance == "sd21-shaped":
        from splatgen import components
        from splatgen.guidance.tiny import build_sd21_shaped

        def sd21_shaped(cfg, device):
            dtype = torch.float16 if device.type == "cuda" else torch.float32
            g = build_sd21_shaped(device, dtype)
            g.prepare_text = lambda *a, **k: None  # random embeddings stand in for the text encoder
            return g

        components.GUIDANCE_BUILDERS["stable-diffusion"] = sd21_shaped
        config = "sd21"
        overrides = ["guidance.model=sd21-shaped-random-weights", *overrides]
    prompts = json.loads(args.prompts_json.read_text())
    t0 = time.perf_counter()
    res = splatgen.generate_many(prompts, args.batch_dir, config=config, overrides=["run.progress=off", *overrides],
                                 progress=False)
    cuda = torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (ranks / f"rank-{rank}-{os.getpid()}.json").write_text(json.dumps({
        "rank": rank, "pid": os.getpid(), "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "seconds": round(time.perf_counter() - t0, 2),
        "peak_gib": round(peak / 2**30, 3), "peak_kind": "cuda max_memory_allocated" if cuda else "max RSS",
        "device": torch.cuda.get_device_name() if cuda else "cpu", "counts": {k: v for k, v in res.items() if k != "rows"},
    }))


# ------------------------------------------------------------------------------------------------- driver
def torchrun_cmd(n: int, batch_dir: Path, prompts_json: Path, args, overrides, max_restarts: int = 0) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            f"--max-restarts={max_restarts}", "--tee=3", __file__, "--worker", "--batch-dir", str(batch_dir),
            "--prompts-json", str(prompts_json), "--guidance", args.guidance, *overrides]


def check_batch(batch_dir: Path, n_prompts: int) -> dict:
    """Every prompt finished exactly once: folders, manifest lines, no leftovers."""
    from splatgen.batch import read_manifest

    folders = sorted(p.name for p in batch_dir.iterdir() if p.is_dir())
    finished = [f for f in folders if not f.endswith(".partial")]
    done_lines = [r for r in read_manifest(batch_dir) if r.get("status") == "done"]
    per_prompt = {}
    for r in done_lines:
        per_prompt[r["name"]] = per_prompt.get(r["name"], 0) + 1
    return {"finished_folders": len(finished), "partial_folders": len(folders) - len(finished),
            "done_lines": len(done_lines), "prompts_done_more_than_once": sorted(k for k, v in per_prompt.items() if v > 1),
            "ranks_that_finished_prompts": sorted({r["rank"] for r in done_lines}),
            "ok": len(finished) == n_prompts and len(per_prompt) == n_prompts and all(v == 1 for v in per_prompt.values())
            and len(folders) == len(finished)}


def rank_reports(batch_dir: Path) -> list:
    ranks = batch_dir.parent / f"{batch_dir.name}-ranks"
    return [json.loads(p.read_text()) for p in sorted(ranks.glob("rank-*.json"))]


def run_n(n: int, args, overrides, tmp: Path) -> dict:
    prompts = prompt_list(n * args.prompts_per_proc)
    pj = tmp / f"prompts-{n}.json"
    pj.write_text(json.dumps(prompts))
    batch_dir = tmp / f"batch-{n}"
    env = dict(os.environ)
    t = time.perf_counter()
    r = subprocess.run(torchrun_cmd(n, batch_dir, pj, args, overrides), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    row = {"nproc": n, "prompts": len(prompts), "wall_s": round(wall, 2), "returncode": r.returncode,
           "prompts_per_hour": round(3600 * len(prompts) / wall, 1), "check": check_batch(batch_dir, len(prompts)),
           "ranks": rank_reports(batch_dir)}
    if r.returncode != 0:
        row["stderr_tail"] = r.stderr[-3000:]
    return row


def kill_test(n: int, args, overrides, tmp: Path) -> dict:
    prompts = prompt_list(n * args.prompts_per_proc)
    pj = tmp / "prompts-kill.json"
    pj.write_text(json.dumps(prompts))
    batch_dir = tmp / "batch-kill"
    log_path = Path(args.out).with_suffix(".kill_test.log") if args.out else tmp / "kill_test.log"
    log_file = open(log_path, "w")
    proc = subprocess.Popen(torchrun_cmd(n, batch_dir, pj, args, overrides, max_restarts=3),
                            stdout=log_file, stderr=subprocess.STDOUT, text=True)
    killed = None
    t = time.perf_counter()
    from splatgen.batch import read_manifest

    while proc.poll() is None and killed is None and time.perf_counter() - t < args.kill_timeout:
        pid_file = batch_dir.parent / f"{batch_dir.name}-ranks" / "pid-1"
        if batch_dir.is_dir() and any(r.get("status") == "done" for r in read_manifest(batch_dir)) and pid_file.is_file():
            killed = int(pid_file.read_text())
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    hung = False
    try:
        proc.wait(timeout=args.kill_timeout)
    except subprocess.TimeoutExpired:
        hung = True
        proc.kill()  # a hang is a result too: recorded below with torchrun's output
        proc.wait()
    log_file.close()
    out = log_path.read_text(errors="replace")
    wall = time.perf_counter() - t
    return {"nproc": n, "prompts": len(prompts), "killed_pid": killed, "wall_s": round(wall, 2),
            "returncode": proc.returncode, "hung": hung,
            "restarts": max((r.get("restart", 0) for r in rank_reports(batch_dir)), default=None),
            "check": check_batch(batch_dir, len(prompts)),
            "ranks": rank_reports(batch_dir), **({"output_tail": out[-3000:]} if proc.returncode else {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompts-per-proc", type=int, default=4)
    ap.add_argument("--guidance", choices=["bundled", "sd21-shaped"], default="bundled")
    ap.add_argument("--kill-test", type=int, default=0, metavar="N", help="also the kill test on N processes (>= 2)")
    ap.add_argument("--kill-timeout", type=float, default=600.0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--prompts-json", type=Path, help=argparse.SUPPRESS)
    args, overrides = ap.parse_known_args()
    if args.worker:
        worker(args, overrides)
        return
    if args.out is None:
        ap.error("--out is required")
    result = {"benchmark": "splatgen batch under torchrun: weak scaling over processes", "environment": environment(),
              "guidance": args.guidance, "prompts_per_proc": args.prompts_per_proc, "overrides": overrides, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nproc:
            result["rows"].append(run_n(n, args, overrides, Path(tmp)))
            print({k: v for k, v in result["rows"][-1].items() if k not in ("ranks", "stderr_tail")}, flush=True)
            base = next((r for r in result["rows"] if r["nproc"] == 1), None)
            for r in result["rows"]:
                if base is not None:
                    r["efficiency"] = round(r["prompts_per_hour"] / (r["nproc"] * base["prompts_per_hour"]), 3)
            write_json(args.out, result)
        if args.kill_test:
            result["kill_test"] = kill_test(args.kill_test, args, overrides, Path(tmp))
            print({k: v for k, v in result["kill_test"].items() if k not in ("ranks", "output_tail")}, flush=True)
            write_json(args.out, result)


if __name__ == "__main__":
    main()
