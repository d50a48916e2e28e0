"""Speed track: ms per step by stage, peak memory, memory over a long run, and full default generations,
for Gaussians and the NeRF baseline under Stable-Diffusion-2.1-base-shaped guidance.

    python benchmarks/suite/speed.py --out benchmarks/results/suite/speed.json     # on the GPU machine
    python benchmarks/suite/speed.py --small --out /tmp/speed.json                  # CPU smoke size

The guidance is SD 2.1-base's UNet and VAE built from their configs with random weights (the real model's
cost; ``splatgen.guidance.tiny.build_sd21_shaped``) and random 77 x 1024 text embeddings. Every
representation runs through the same ``Trainer.train_step``; only ``model.type`` and the render size change.
The NeRF's renders are resized to 512 x 512 before the VAE, as in stable-dreamfusion.

Entries (each: ``--warmup`` untimed steps, ``--steps`` steps timed stage by stage with CUDA synchronised
around each stage, then ``--steps`` more timed end to end, which is ``ms_per_step``):

- ``gaussians-512-1view``, ``gaussians-512-4view``: 512 x 512, densification every 25 steps up to 200k.
- ``nerf-64-1view``: stable-dreamfusion's setting (one 64 x 64 view per step), then ``nerf-R-1view`` for
  R = 128, 256, 512 until one runs out of memory (recorded as such): the largest that fits.
- ``memory_curve``: allocated memory between steps (and the peak within the steps since the last point,
  ``peak_gib``) every few steps over a long Gaussian run at 512 x 512, 4 views, with
  densification in its default window, and over a NeRF run; ``leak_mib_per_100_steps`` is the slope of
  allocated memory after growth stops (flat means no leak).
- ``full_generation``: the default Gaussian generation of ``configs/sd21.yaml`` run end to end; the NeRF's
  (``configs/nerf.yaml``: 10,000 steps) extrapolated from its measured steady ms/step plus its setup time,
  and marked ``extrapolated``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import environment, write_json  # noqa: E402

from splatgen.config import load_config  # noqa: E402
from splatgen.trainer import STAGES, Trainer  # noqa: E402

TARGETS = {"ms_per_step_1_view": 45.0, "ms_per_step_4_views": 120.0, "peak_gib": 8.0}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _mem(dev: torch.device) -> Dict[str, float]:
    if dev.type != "cuda":
        return {"allocated_gib": 0.0, "reserved_gib": 0.0}
    return {"allocated_gib": round(torch.cuda.memory_allocated(dev) / 2**30, 4),
            "reserved_gib": round(torch.cuda.memory_reserved(dev) / 2**30, 4)}


def make_trainer(guidance, files: Sequence[str], overrides: Sequence[str], device: str) -> Trainer:
    cfg = load_config(list(files), [
        "guidance.type=stable-diffusion", "guidance.model=sd21-base-shaped", "run.evaluate=false",
        "run.preview_views=0", "run.progress=off", f"run.device={device}", *overrides,
    ])
    cfg.prompt = "a benchmark prompt"
    return Trainer(cfg, guidance, profile=True)


def bench_entry(name: str, guidance, files, overrides, args, dev, scale: float = 1.0) -> dict:
    """Stage split and end-to-end ms/step of one setting; OOM is caught and reported. ``scale`` < 1 runs
    fewer warm-up and timed steps (slow high-resolution NeRF entries)."""
    warmup, steps = max(2, int(args.warmup * scale)), max(2, int(args.steps * scale))
    total = warmup + 2 * steps
    rep = "nerf" if "nerf" in files else "gaussians"
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        trainer = make_trainer(guidance, files, [f"run.steps={total}", *overrides], str(dev))
        for step in range(warmup):
            trainer.train_step(step)
        _sync(dev)
        trainer.timer.totals = {s: 0.0 for s in STAGES}
        for step in range(warmup, warmup + steps):
            trainer.train_step(step)
        stage = {k: 1000.0 * v / steps for k, v in trainer.timer.totals.items()}
        trainer.timer.enabled = False
        _sync(dev)
        t0 = time.perf_counter()
        for step in range(warmup + steps, total):
            trainer.train_step(step)
        _sync(dev)
        ms = 1000.0 * (time.perf_counter() - t0) / steps
    except torch.cuda.OutOfMemoryError as exc:
        return {"name": name, "representation": rep, "oom": True, "note": f"out of memory: {str(exc).splitlines()[0]}"}
    cfg = trainer.cfg
    row = {
        "name": name, "representation": rep, "resolution": cfg.render.resolution, "views": cfg.camera.batch_size,
        "ms_per_step": round(ms, 2), "ms_per_step_profiled": round(sum(stage.values()), 2),
        "stage_ms": {
            "render": round(stage["render"] + stage["backward_render"], 2),
            "vae": round(stage["vae"] + stage["backward_vae"], 2),
            "unet": round(stage["unet"], 2), "sds": round(stage["sds"], 2),
            "optimizer": round(stage["optimizer"], 2), "densify": round(stage["densify"], 2),
        },
        "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 3) if dev.type == "cuda" else None,
        "num_elements": trainer.rep.size(), "oom": False, "timed_steps": steps,
    }
    del trainer
    return row


def memory_curve(name: str, guidance, files, overrides, steps: int, every: int, dev) -> List[dict]:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    trainer = make_trainer(guidance, files, [f"run.steps={steps}", *overrides], str(dev))
    trainer.timer.enabled = False
    rows = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for step in range(steps):
        trainer.train_step(step)
        if (step + 1) % every == 0:
            _sync(dev)
            # allocated/reserved between steps, and the peak inside the steps since the last point
            peak = round(torch.cuda.max_memory_allocated(dev) / 2**30, 4) if dev.type == "cuda" else 0.0
            rows.append({"name": name, "step": step + 1, **_mem(dev), "peak_gib": peak,
                         "num_elements": trainer.rep.size()})
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
    del trainer
    return rows


def leak_slope(rows: List[dict]) -> Optional[float]:
    """MiB per 100 steps of allocated memory over the part of the curve where the model no longer grows (the
    points with the final element count), or, when that count never settles (a NeRF's occupied cells change
    every update while its memory does not depend on them), over the second half of the curve."""
    flat = [r for r in rows if r["num_elements"] == rows[-1]["num_elements"]]
    if len(flat) < 3:
        flat = rows[len(rows) // 2:]
    if len(flat) < 3:
        return None
    xs = [r["step"] for r in flat]
    ys = [r["allocated_gib"] * 1024 for r in flat]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den, 4) if den else None


def full_generation(name: str, guidance, files, overrides, dev, steps: Optional[int] = None) -> dict:
    """One whole run of a config, step by step through ``Trainer.train_step`` (timer off; no logging or
    checkpoint files). With ``steps`` below the config's, it is extrapolated instead: ``steps // 2`` steps are
    timed at the start and ``steps // 2`` at the start of every later phase whose per-step work differs (the
    NeRF's shading starts at ``nerf.albedo_ratio`` of the run, and shaded steps cost more), each phase priced
    at its own steady ms/step (the second half of its window)."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    cfg = load_config(list(files), list(overrides))
    total = cfg.run.steps
    trainer = make_trainer(guidance, files, [*overrides, f"run.steps={total}"], str(dev))
    trainer.timer.enabled = False
    setup = time.perf_counter() - t0
    row = {"name": name, "representation": trainer.rep.kind, "config": list(files), "steps": total,
           "setup_seconds": round(setup, 2)}

    def window(first: int, n: int) -> float:
        """Run steps [first, first + n); return the steady seconds per step of the second half."""
        half = first + n // 2
        _sync(dev)
        for step in range(first, first + n):
            if step == half:
                _sync(dev)
                t_half = time.perf_counter()
            trainer.train_step(step)
        _sync(dev)
        return (time.perf_counter() - t_half) / (first + n - half)

    if steps is None or steps >= total:
        _sync(dev)
        t1 = time.perf_counter()
        for step in range(total):
            trainer.train_step(step)
        _sync(dev)
        row.update(seconds=round(setup + time.perf_counter() - t1, 2), extrapolated=False)
    else:
        starts = [0]
        if cfg.model.type == "nerf" and 0 < int(cfg.nerf.albedo_ratio * total) < total:
            starts.append(int(cfg.nerf.albedo_ratio * total))
        n = max(2, steps // len(starts))
        bounds = starts + [total]
        phases = []
        for i, first in enumerate(starts):
            sec = window(first, n)
            phases.append({"from_step": first, "steps": bounds[i + 1] - first, "ms_per_step": round(1000 * sec, 2)})
        est = setup + sum(p["steps"] * p["ms_per_step"] / 1000 for p in phases)
        row.update(seconds=round(est, 2), extrapolated=True, measured_steps=n * len(starts), phases=phases,
                   note=f"{n * len(starts)} of {total} steps run ({n} at the start of each phase); each phase "
                        "priced at its own steady ms/step")
    row["num_elements"] = trainer.rep.size()
    del trainer
    return row


def main(argv: Sequence[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--nerf-resolutions", type=int, nargs="+", default=None,
                    help="NeRF render sides, tried in order until one runs out of memory (default 64 128 256 512)")
    ap.add_argument("--curve-steps", type=int, default=600)
    ap.add_argument("--nerf-full-steps", type=int, default=300, help="NeRF steps actually run for the full-generation estimate")
    ap.add_argument("--skip", nargs="*", default=[], choices=["entries", "curve", "full", "nerf"])
    ap.add_argument("--tag", default="", help="suffix for every entry name (a variant, e.g. vae-checkpointing)")
    ap.add_argument("--small", action="store_true", help="CPU smoke size: tiny SD-shaped model, tiny renders")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. guidance.cuda_graph=false)")
    args = ap.parse_args(argv)

    dev = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    extra = list(args.overrides)
    if args.small:
        import tempfile

        from splatgen.config import GuidanceConfig
        from splatgen.components import build_guidance
        from splatgen.config import Config
        from splatgen.guidance.tiny import make_tiny_sd

        folder = make_tiny_sd(Path(tempfile.mkdtemp(prefix="splatgen-speed-")) / "tiny-sd")
        guidance = build_guidance(Config(guidance=GuidanceConfig(type="stable-diffusion", model=str(folder), dtype="fp32")), dev)
        args.warmup, args.steps, args.curve_steps, args.nerf_full_steps = 1, 2, 6, 3
        res_g, nerf_res = 32, args.nerf_resolutions or [16, 24]
        extra += ["model.num_points=300", "nerf.num_levels=4", "nerf.log2_hashmap_size=12", "nerf.desired_resolution=64",
                  "nerf.grid_resolution=16", "nerf.num_steps=16", "nerf.upsample_steps=8", "nerf.update_every=2",
                  "render.resolution_milestones=[]"]
        full_g = ["render.resolution=32", "run.steps=4"]
    else:
        from splatgen.guidance.tiny import build_sd21_shaped

        guidance = build_sd21_shaped("cuda", torch.float16)
        # The guidance is built here, not from the config: apply its switches from the overrides.
        guidance.cuda_graph = "guidance.cuda_graph=false" not in extra
        guidance.set_vae_checkpointing("guidance.vae_checkpointing=true" in extra)
        res_g, nerf_res = 512, args.nerf_resolutions or [64, 128, 256, 512]
        full_g = []
    dens = ["densify.start=0.0", "densify.stop=1.0", "densify.every=25", "model.num_points=50000",
            "densify.max_gaussians=200000", "render.background=random"]
    if args.small:
        dens = [d for d in dens if "num_points" not in d]

    entries: List[dict] = []
    curve: List[dict] = []
    full: List[dict] = []
    env = environment()

    def save() -> None:
        if args.tag:
            for e in entries:
                if not e["name"].endswith(f"+{args.tag}"):
                    e["name"] += f"+{args.tag}"
        leaks = {n: leak_slope([r for r in curve if r["name"] == n]) for n in sorted({r["name"] for r in curve})}
        write_json(args.out, {
            "benchmark": "speed track (SD-2.1-base-shaped guidance)", "environment": env, "command": env["command"],
            "settings": {k: str(v) for k, v in vars(args).items()}, "targets": TARGETS, "entries": entries,
            "memory_curve": curve, "leak_mib_per_100_steps": leaks, "full_generation": full})

    if "entries" not in args.skip:
        for views in (1, 4):
            entries.append(bench_entry(f"gaussians-{res_g}-{views}view", guidance, [],
                                       [f"render.resolution={res_g}", f"camera.batch_size={views}", *dens, *extra], args, dev))
            print(entries[-1], flush=True)
            save()
        for r in ([] if "nerf" in args.skip else nerf_res):
            entries.append(bench_entry(f"nerf-{r}-1view", guidance, ["nerf"], [f"render.resolution={r}", *extra], args,
                                       dev, scale=1.0 if r <= 128 else 0.25))
            print(entries[-1], flush=True)
            save()
            if entries[-1]["oom"]:
                break
    if "curve" not in args.skip:
        curve += memory_curve(f"gaussians-{res_g}-4view", guidance, [],
                              [f"render.resolution={res_g}", "camera.batch_size=4", "model.num_points=50000",
                               "densify.max_gaussians=200000", "render.background=random", *extra],
                              args.curve_steps, max(1, args.curve_steps // 60), dev)
        curve += memory_curve(f"nerf-{nerf_res[0]}-1view", guidance, ["nerf"], [f"render.resolution={nerf_res[0]}", *extra],
                              max(2, args.curve_steps // 2), max(1, args.curve_steps // 60), dev)
        save()
    if "full" not in args.skip:
        full.append(full_generation("gaussians-sd21-default", guidance, ["sd21"], [*full_g, *extra], dev))
        print(full[-1], flush=True)
        save()
        full.append(full_generation("nerf-default", guidance, ["sd21", "nerf"], extra, dev, steps=args.nerf_full_steps))
        print(full[-1], flush=True)
    save()
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
