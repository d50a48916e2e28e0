"""Quality against wall-clock on the procedural world: every method x prompt x seed, evaluated on a schedule.

    python benchmarks/suite/quality.py --out benchmarks/results/suite/quality.jsonl \
        --priors world --methods gaussians-tpsds gaussians-uniform gaussians-linear nerf-sds --seeds 0 1 2
    python benchmarks/suite/quality.py --small --out /tmp/q.jsonl     # CPU smoke size (the suite's CI test)
    python benchmarks/suite/quality.py --out q.jsonl --priors bundled --prompt-set 20 --seeds 0 1 2 \
        --methods sds csd nfsd ism vsd sds+perpneg --previews previews/     # the losses (benchmarks/suite/losses.py)

Each run is one ``splatgen.generate`` with ``run.eval_every`` set: every ``--evals``-th of the run it is scored
against the ground truth (silhouette IoU, foreground PSNR, Chamfer, Janus, evaluator R-precision; see
``splatgen.world.metrics``) and one JSON line is written per checkpoint. ``train_seconds`` is the
optimisation wall-clock up to that checkpoint; the evaluations themselves are not counted.

Methods differ in exactly one thing each: the timestep schedule (``gaussians-*``), the representation
(``nerf-sds``: the NeRF baseline with DreamFusion's uniform t, stable-dreamfusion's batch of one view), or the
score-distillation loss (``sds``, ``csd``, ``nfsd``, ``ism``, ``vsd``, each alone and with ``+perpneg``; see
``splatgen.guidance.losses``). ``--variant NAME KEY=VALUE ...`` adds a method defined on the command line (for
sweeps), and a method whose overrides set ``run.steps`` runs that many steps (the equal-wall-clock rows).
``--previews DIR`` keeps four views of every final model as a PNG for the montage of ``losses.py``.
Priors: ``world`` is the exact oracle (``configs/world.yaml``), ``bundled`` the shipped 64 px diffusion model
(``configs/default.yaml``).

Parallelism: ``--gpus G --procs-per-gpu K`` runs G x K worker processes. With K = 1 each run has a GPU to
itself and its seconds are real. With K > 1 runs share a GPU and their own seconds are inflated by the
sharing; ``--solo-gpu`` then keeps the first GPU for a solo worker that runs ``--timing-prompts`` of every
(prior, method) one after another with nothing else on that GPU. Their rows (``"timing": true``) give each
method's real seconds at each checkpoint step; every pooled row's ``train_seconds`` is replaced by the solo
mean at its step (its own contended value kept as ``train_seconds_pool``), and the header says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment  # noqa: E402

#: name -> (extra config files, overrides). Everything else comes from the prior's config.
METHODS: Dict[str, tuple] = {
    "gaussians-tpsds": ([], ["schedule.timestep=tp-sds"]),
    "gaussians-uniform": ([], ["schedule.timestep=uniform"]),
    "gaussians-linear": ([], ["schedule.timestep=linear"]),
    "nerf-sds": (["nerf"], ["schedule.timestep=uniform"]),
}
#: the score-distillation losses, each alone and with Perp-Neg (everything else is the prior's default config)
for _loss in ("sds", "csd", "nfsd", "ism", "vsd"):
    METHODS[_loss] = ([], [f"guidance.loss={_loss}", "guidance.perp_neg=false"])
    METHODS[f"{_loss}+perpneg"] = ([], [f"guidance.loss={_loss}", "guidance.perp_neg=true"])
PRIORS = {"world": "world", "bundled": "default"}

#: ten objects, the nine with a front and a back plus the rocket (the world/oracle track)
PROMPTS_10 = (
    "a red mug", "a blue chair", "a yellow house", "a white snowman", "a green car",
    "a purple lamp", "a black penguin", "an orange teapot", "a grey robot", "a red rocket",
)
#: twenty for the bundled prior: the ten above, the other kinds, and five pairs held out of its training
PROMPTS_20 = PROMPTS_10 + (
    "a brown table", "a green tree", "a pink donut", "a red mushroom", "a white rocket",
    "a blue mug", "an orange chair", "a pink house", "a red lamp", "a yellow teapot",
)
#: sixteen more world prompts, none of them in the sets above (all with a front and a back; four are
#: held-out pairs of the bundled prior): where settings are tuned, so the 20-prompt table is not tuned on
PROMPTS_OTHER_16 = (
    "a green mug", "a white chair", "a red house", "a blue snowman", "a yellow car", "a white lamp",
    "a blue penguin", "a green teapot", "a red robot", "a black chair", "a purple car", "a brown house",
    "a black snowman", "a pink car", "a purple penguin", "a white robot",
)
PROMPT_SETS = {"10": PROMPTS_10, "20": PROMPTS_20, "other16": PROMPTS_OTHER_16}

METRICS = ("iou", "psnr_fg", "chamfer", "janus", "r_precision", "depth_abs_err", "silhouette_precision", "silhouette_recall")


@functools.lru_cache(maxsize=None)
def prior_default_steps(prior: str) -> int:
    """``run.steps`` of the prior's own config (``default`` for the bundled prior, ``world`` for the world's):
    the steps a user gets from ``splatgen generate``. Resolved once per prior, not once per job."""
    from splatgen.api import resolve_config

    return int(resolve_config(PRIORS[prior]).run.steps)


def method_steps(method: str, args, prior: str = "bundled") -> int:
    """The method's own ``run.steps`` override (equal-wall-clock rows), else the suite's steps (``--gaussian-steps``,
    by default the prior config's)."""
    for o in METHODS[method][1]:
        if o.startswith("run.steps="):
            return int(o.split("=", 1)[1])
    if method.startswith("nerf"):
        return args.nerf_steps
    steps = args.gaussian_steps if args.gaussian_steps is not None else prior_default_steps(prior)
    return min(steps, 8) if args.small else steps


def job_overrides(job: dict, args) -> List[str]:
    steps = job["steps"]
    every = max(1, steps // args.evals)
    o = [f"run.steps={steps}", f"run.eval_every={every}", f"run.seed={job['seed']}", "run.evaluate=false",
         "run.preview_views=0", "run.progress=off", f"run.log_every={every}"]
    o += [x for x in job["method_overrides"] if not x.startswith("run.steps=")]
    if args.small:
        o += ["model.num_points=200", "render.resolution=24", "camera.batch_size=4", "guidance.world_views=24",
              "guidance.world_resolution=24", "nerf.num_levels=4", "nerf.log2_hashmap_size=12",
              "nerf.desired_resolution=64", "nerf.grid_resolution=16", "nerf.num_steps=16", "nerf.upsample_steps=8",
              "nerf.export_resolution=24", "nerf.update_every=4"]
    return o + list(args.overrides)


def run_job(job: dict, args) -> List[dict]:
    import torch

    import splatgen

    files = [PRIORS[job["prior"]], *job["method_files"]]
    t0 = time.perf_counter()
    result = splatgen.generate(job["prompt"], config=files, overrides=job_overrides(job, args))
    wall = time.perf_counter() - t0
    rows = []
    for e in result.evals:
        rows.append({
            "method": job["method"], "prior": job["prior"], "prompt": job["prompt"], "kind": e.get("kind"),
            "seed": job["seed"], "step": e["step"], "steps_total": job["steps"], "train_seconds": e["train_seconds"],
            **{k: e.get(k) for k in METRICS}, "num_elements": e.get("num_elements"),
            "run_wall_seconds": round(wall, 2), "device": str(result.rep.device),
            "prior_rows_per_step": result.distillation.get("prior_rows_per_step"),
            "prior_calls_per_step": result.distillation.get("prior_calls_per_step"),
        })
    if args.previews is not None and not job.get("warmup"):
        save_previews(result, Path(args.previews) / preview_name(job))
    del result
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def preview_name(job: dict) -> str:
    """File name of a run's previews: ``<prior>__<method>__<prompt>__s<seed>.png`` (spaces as '-')."""
    return f"{job['prior']}__{job['method']}__{job['prompt'].replace(' ', '-')}__s{job['seed']}.png"


def save_previews(result, path: Path, views: int = 4, size: int = 96) -> None:
    """Four views of the final model side by side (azimuths 0, 90, 180, 270 at 15 deg elevation), as one PNG."""
    import numpy as np
    from PIL import Image

    from splatgen.trainer import preview_cameras

    img = result.render(cameras=preview_cameras(views, size, result.rep.device))
    row = (img.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(list(row), axis=1)).save(path)


def _worker(index: int, gpu: int | None, jobs: "mp.Queue", out_path: str, args, timing: bool = False) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    warmed: set = set()
    with open(out_path, "a", buffering=1) as f:
        while True:
            job = jobs.get()
            kind = (job["prior"], job["method"].split("-")[0]) if job is not None else None
            # Solo timing runs, and pooled runs whose own seconds are kept (no --solo-gpu), are warmed up.
            if (timing or not args.solo_gpu) and job is not None and kind not in warmed:
                # A process pays one-off costs on the first run of each prior and representation (CUDA context,
                # cuBLAS/cuDNN set-up and autotuning, Triton compiles of the SDS and densify kernels): run one
                # untimed copy first so no method's seconds include them. Costs every generation pays (the
                # UNet's CUDA-graph capture, a new guidance per run) stay in every run's seconds.
                try:
                    run_job({**job, "steps": min(job["steps"], 100), "warmup": True}, args)
                except Exception:
                    pass
                warmed.add(kind)
            if job is None:
                return
            try:
                for row in run_job(job, args):
                    f.write(json.dumps({**row, "timing": True} if timing else row) + "\n")
                print(f"[w{index}] done {job['prior']} {job['method']} {job['prompt']!r} seed {job['seed']}", flush=True)
            except Exception as exc:  # one broken run must not lose the others
                f.write(json.dumps({**job, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
                print(f"[w{index}] FAILED {job}: {traceback.format_exc()}", flush=True)


def make_jobs(args) -> List[dict]:
    jobs = []
    for prior in args.priors:
        prompts = args.prompts or PROMPT_SETS[args.prompt_set or ("20" if prior == "bundled" and args.bundled_20 else "10")]
        for method in (args.bundled_methods or args.methods) if prior == "bundled" else args.methods:
            cut = prior == "bundled" and method.startswith(("gaussians-", "nerf-")) and method != "gaussians-tpsds"
            seeds = args.seeds[: args.bundled_other_seeds] if cut else args.seeds
            for prompt in prompts:
                for seed in seeds:
                    # The method's definition travels with the job: workers are spawned and do not see --variant.
                    jobs.append({"prior": prior, "method": method, "prompt": prompt, "seed": seed,
                                 "steps": method_steps(method, args, prior), "method_files": list(METHODS[method][0]),
                                 "method_overrides": list(METHODS[method][1])})
    # Seed by seed (a run cut short by a time limit loses the last seed, not a whole prior or method), longest
    # first within a seed so the pool does not end on one long run.
    if args.skip_done:  # a table carried on from earlier calls: runs that finished there are not run again
        done = finished_runs(args.skip_done)
        jobs = [j for j in jobs if (j["prior"], j["method"], j["prompt"], j["seed"]) not in done]
    return sorted(jobs, key=lambda j: (args.seeds.index(j["seed"]), -j["steps"]))


def finished_runs(paths: Sequence[Path]) -> set:
    """(prior, method, prompt, seed) of every run that reached its last step in these quality.jsonl files."""
    done = set()
    for path in paths:
        for line in Path(path).read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if "error" not in r and not r.get("timing") and r.get("step") is not None and r.get("step") == r.get("steps_total"):
                done.add((r["prior"], r["method"], r["prompt"], r["seed"]))
    return done


def timing_jobs(args) -> List[dict]:
    """Solo runs for the seconds: the first ``--timing-prompts`` prompts of each (prior, method), seed 0."""
    seen, out = set(), []
    for j in make_jobs(args):
        key = (j["prior"], j["method"])
        prompts = args.prompts or PROMPT_SETS[args.prompt_set or "10"]
        if j["seed"] == args.seeds[0] and j["prompt"] in prompts[: args.timing_prompts] and (key, j["prompt"]) not in seen:
            seen.add((key, j["prompt"]))
            out.append(j)
    return out


def solo_seconds(rows: List[dict]) -> None:
    """Replace the pooled rows' train_seconds by the solo runs' mean at the same (prior, method, step); timing
    runs marked ``"cold": true`` (they paid one-off start-up costs) are kept in the file but not used."""
    table: Dict[tuple, List[float]] = {}
    for r in rows:
        if r.get("timing") and "error" not in r and not r.get("cold"):
            table.setdefault((r["prior"], r["method"], r["step"]), []).append(r["train_seconds"])
    for r in rows:
        if r.get("timing") or "error" in r:
            continue
        solo = table.get((r["prior"], r["method"], r["step"]))
        r["train_seconds_pool"] = r["train_seconds"]
        r["train_seconds"] = round(sum(solo) / len(solo), 4) if solo else None


def merge(out: Path, parts: Sequence[Path], meta: dict) -> int:
    rows = []
    for p in parts:
        if p.exists():
            for line in p.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    pass
    if meta["meta"].get("seconds_from_solo"):
        solo_seconds(rows)
    # Timing rows stay in the file (the report skips them); quality statistics use the pooled runs.
    with open(out, "w") as f:
        f.write(json.dumps(meta) + "\n")
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for p in parts:
        p.unlink(missing_ok=True)
    return len(rows)


def _job_queue(ctx, jobs: Sequence[dict], workers: int):
    """A queue holding ``jobs`` and one end marker (None) per worker."""
    q = ctx.Queue()
    for j in [*jobs, *[None] * workers]:
        q.put(j)
    return q


def _interrupt(signum, frame):
    """SIGTERM (a time limit) as KeyboardInterrupt, once: the clean-up that follows must not be interrupted again."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def run_timing_only(args) -> Path:
    """Solo timing runs in one worker process (after its untimed warm-up run), optionally folded into an
    existing quality.jsonl with :func:`solo_seconds` reapplied."""
    jobs = timing_jobs(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.timing_rows is not None:
        new = [json.loads(l) for l in args.timing_rows.read_text().splitlines() if l.strip()]
        new = [r for r in new if "meta" not in r]
    else:
        part = args.out.with_name(f"{args.out.stem}.timing.jsonl")
        part.unlink(missing_ok=True)
        ctx = mp.get_context("spawn")
        queue = _job_queue(ctx, jobs, 1)  # kept referenced until the worker is done: its semaphore must outlive the start
        proc = ctx.Process(target=_worker, args=(0, None, queue, str(part), args, True))
        signal.signal(signal.SIGTERM, _interrupt)
        proc.start()
        try:
            proc.join()
        except KeyboardInterrupt:  # a time limit: keep the timing rows written so far, and no worker running on
            pass
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
        new = [json.loads(l) for l in part.read_text().splitlines()] if part.exists() else []
        part.unlink(missing_ok=True)
    if args.replace_timing is None:
        meta = {"meta": {**environment(), "track": "quality-timing", "timing_jobs": len(jobs)}}
        args.out.write_text("\n".join(json.dumps(r) for r in [meta, *new]) + "\n")
        return args.out
    lines = [json.loads(l) for l in args.replace_timing.read_text().splitlines() if l.strip()]
    meta, rows = lines[0], [r for r in lines[1:] if not r.get("timing")]
    for r in rows:
        if "train_seconds_pool" in r:
            r["train_seconds"] = r.pop("train_seconds_pool")
    env = environment()
    meta["meta"].update(seconds_from_solo=True, timing_jobs=len(jobs), timing_command=env["command"],
                        timing_device=args.timing_device or env.get("device"), timing_date=env["date"])
    if args.timing_note:
        meta["meta"]["timing_note"] = args.timing_note
    rows += new
    solo_seconds(rows)
    args.out.write_text("\n".join(json.dumps(r) for r in [meta, *rows]) + "\n")
    print(f"wrote {args.out}: {len(new)} timing rows from {len(jobs)} solo runs folded into {len(rows) - len(new)} rows")
    return args.out


def main(argv: Sequence[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--priors", nargs="+", default=["world"], choices=sorted(PRIORS))
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                    help="a method defined here: its name and its overrides (repeatable)")
    ap.add_argument("--methods", nargs="+", default=None, help=f"known: {sorted(METHODS)} (default: the four "
                    "gaussians-*/nerf-* methods) and every --variant")
    ap.add_argument("--prompt-set", choices=sorted(PROMPT_SETS), default=None,
                    help="the prompts of every prior (default: 10, or 20 for bundled with --bundled-20)")
    ap.add_argument("--previews", type=Path, default=None, help="keep four views of every final model here (PNG)")
    ap.add_argument("--prompts", nargs="+", default=None, help="default: the 10-object set (20 for bundled with --bundled-20)")
    ap.add_argument("--bundled-20", action="store_true", help="bundled prior: the 20-prompt set for gaussians-tpsds")
    ap.add_argument("--bundled-other-seeds", type=int, default=1,
                    help="bundled prior: seeds for methods other than gaussians-tpsds")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--gaussian-steps", type=int, default=None,
                    help="steps of the Gaussian methods (default: the prior config's run.steps, as a user gets them)")
    ap.add_argument("--nerf-steps", type=int, default=3000)
    ap.add_argument("--evals", type=int, default=10, help="evaluations per run (evenly spaced, plus the last step)")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs to spread workers over (default: all visible)")
    ap.add_argument("--procs-per-gpu", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="worker processes without a GPU")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument("--solo-gpu", action="store_true",
                    help="keep GPU 0 for solo timing runs; pooled rows get the solo seconds at their step")
    ap.add_argument("--timing-prompts", type=int, default=2, help="prompts per (prior, method) timed solo")
    ap.add_argument("--timing-only", action="store_true",
                    help="run only the solo timing runs (one process, one GPU) and write them to --out")
    ap.add_argument("--replace-timing", type=Path, default=None, metavar="QUALITY_JSONL",
                    help="with --timing-only: fold the new timing runs into this quality.jsonl (replacing its "
                         "timing rows and recomputing its pooled rows' seconds) instead of writing --out alone")
    ap.add_argument("--timing-rows", type=Path, default=None,
                    help="with --replace-timing: take the timing rows from this file instead of running them")
    ap.add_argument("--timing-device", default=None, help="with --timing-rows: the device those rows ran on")
    ap.add_argument("--timing-note", default=None, help="a note on the timing runs, kept in the header")
    ap.add_argument("--bundled-methods", nargs="+", default=None,
                    help="methods for the bundled prior (default: --methods)")
    ap.add_argument("--skip-done", nargs="+", type=Path, default=[], metavar="QUALITY_JSONL",
                    help="leave out the runs that reached their last step in these files (a table over several calls)")
    ap.add_argument("--small", action="store_true", help="tiny runs for CPU smoke tests")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for every run")
    args = ap.parse_args(argv)
    for name, *overrides in args.variant:
        METHODS[name] = ([], list(overrides))
    if args.methods is None:
        args.methods = ["gaussians-tpsds", "gaussians-uniform", "gaussians-linear", "nerf-sds"]
    unknown = sorted({m for m in args.methods + (args.bundled_methods or []) if m not in METHODS})
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if args.small:
        args.nerf_steps = min(args.nerf_steps, 8)  # the Gaussian methods' steps are cut in method_steps
        args.evals = min(args.evals, 2)

    import torch

    n_gpus = (args.gpus if args.gpus is not None else torch.cuda.device_count()) if torch.cuda.is_available() else 0
    if args.timing_only:
        return run_timing_only(args)
    solo = args.solo_gpu and (n_gpus > 1 or not n_gpus)
    if args.solo_gpu and not solo:
        print("--solo-gpu needs 2 or more GPUs; with one, every run has the GPU to itself and keeps its own seconds")
        args.solo_gpu = False
    pool_gpus = list(range(1 if solo and n_gpus else 0, n_gpus))
    slots = [g for g in pool_gpus for _ in range(args.procs_per_gpu)] if n_gpus else [None] * args.workers
    jobs = make_jobs(args)
    timing = timing_jobs(args) if solo else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    parts = [args.out.with_name(f"{args.out.stem}.w{i}.jsonl") for i in range(len(slots) + 1)]
    for p in parts:
        p.unlink(missing_ok=True)
    meta = {"meta": {**environment(), "track": "quality", "jobs": len(jobs), "workers": len(slots),
                     "gpus": n_gpus, "procs_per_gpu": args.procs_per_gpu if n_gpus else None,
                     "seconds_from_solo": bool(solo), "timing_jobs": len(timing),
                     "gaussian_steps": (args.gaussian_steps if args.gaussian_steps is not None
                                        else {p: prior_default_steps(p) for p in args.priors}), "nerf_steps": args.nerf_steps, "small": args.small,
                     "overrides": args.overrides}}
    t0 = time.perf_counter()

    signal.signal(signal.SIGTERM, _interrupt)
    ctx = mp.get_context("spawn")
    queue, tqueue = _job_queue(ctx, jobs, len(slots)), _job_queue(ctx, timing, 1)
    procs = [ctx.Process(target=_worker, args=(i, g, queue, str(parts[i]), args)) for i, g in enumerate(slots)]
    if solo:
        procs.append(ctx.Process(target=_worker, args=(len(slots), 0 if n_gpus else None, tqueue, str(parts[-1]), args, True)))
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    finally:  # a timeout (SIGTERM/SIGINT) still leaves a merged file of what finished
        # SIGKILL, not SIGTERM: a worker's generation takes SIGTERM as "stop after this step", and the worker would
        # then go on with the next job (every finished run's rows are already written; only the runs in flight go).
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join()
        meta["meta"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        merge(args.out, parts, meta)
    print(f"wrote {args.out} ({len(jobs)} runs in {meta['meta']['wall_seconds']} s)")
    return args.out


if __name__ == "__main__":
    main()
