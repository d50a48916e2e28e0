"""Benchmark of densification: Triton kernels vs the PyTorch reference vs gsplat's DefaultStrategy.

    python benchmarks/kernels/bench_densify.py --out benchmarks/results/kernels    # about 1-2 minutes on an H100

For N = 10k, 100k, 1M, 4M Gaussians (SH degree 0, the config default; plus 1M at SH degree 3) with one
Adam (exp_avg, exp_avg_sq) per parameter and realistic statistics (5% of the Gaussians grow, half cloned and
half split; 3% pruned as transparent):

- ``accumulate``: the per-step statistics update from ``means2d.grad`` [4, N, 2] and radii [4, N]:
  ``accumulate_stats_triton`` vs ``splatgen.densify.accumulate_stats`` vs gsplat's ``_update_state``
  (do_bench median, cold L2).
- ``step``: one full densification step (decisions, clone / split / prune of every parameter and both Adam
  moments, split sampling): ``densify_step_triton`` vs ``splatgen.densify.densify_step`` vs gsplat's
  ``_grow_gs`` + ``_prune_gs`` on the same model (its own per-parameter Adam). Wall clock with the device
  synchronised around the call (all three synchronise with the host inside), median of several runs, each
  on a fresh copy of the model.
- gsplat agreement: the decisions of gsplat's rules on the same statistics (tests/kernels/gsplat_rules.py).

Bytes for the Triton step are the minimum the step must move: read the statistics, log-scales and opacities
(28 B per Gaussian) and write a code byte; read every kept or split row of each parameter and moment
(children read only the parameter) and write every new row. Writes densify.json/.csv/.png into --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "kernels"))  # gsplat_rules: the comparison lives with the tests
from _common import DEFAULT_OUT, DEVICE, copy_bandwidth_GBps, do_bench_ms, environment, wall_ms, write_results  # noqa: E402

from splatgen.densify import DensifyParams, DensifyStats, accumulate_stats, densify_decisions, densify_step  # noqa: E402
from splatgen.gaussians import PARAM_NAMES, GaussianModel, num_sh_bases  # noqa: E402

SIZES = [(10_000, 0), (100_000, 0), (1_000_000, 0), (4_000_000, 0), (1_000_000, 3)]
VIEWS = 4


def template(n: int, sh_degree: int, p: DensifyParams, seed: int = 0):
    """Parameters, Adam moments and statistics: 5% grow (half small -> clone, half large -> split), 3% transparent."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    u = torch.rand(n, generator=g, device=DEVICE)
    grow = u < 0.05
    transparent = (u >= 0.05) & (u < 0.08)
    small = torch.rand(n, generator=g, device=DEVICE) < 0.5
    log_s = torch.where(small, math.log(0.5 * p.dense_scale), math.log(5 * p.dense_scale))
    params = dict(
        means=torch.randn(n, 3, generator=g, device=DEVICE) * 0.5,
        scales=log_s[:, None] + 0.05 * torch.randn(n, 3, generator=g, device=DEVICE),
        quats=torch.randn(n, 4, generator=g, device=DEVICE),
        opacities=torch.where(transparent, -6.0, 0.0) + 0.1 * torch.randn(n, generator=g, device=DEVICE),
        sh0=torch.randn(n, 1, 3, generator=g, device=DEVICE),
        shN=torch.randn(n, num_sh_bases(sh_degree) - 1, 3, generator=g, device=DEVICE),
    )
    moments = {k: (0.01 * torch.randn_like(v), torch.rand_like(v) * 1e-4) for k, v in params.items()}
    count = torch.full((n,), 10.0, device=DEVICE)
    avg = torch.where(grow, 2.0, 0.5) * p.grad_threshold
    stats = DensifyStats(avg * count, count, torch.full((n,), 0.1, device=DEVICE))
    return params, moments, stats


def our_model(params, moments, sh_degree):
    model = GaussianModel({k: v.clone() for k, v in params.items()}, sh_degree=sh_degree)
    model.create_optimizer({k: 1e-3 for k in PARAM_NAMES})
    for k in PARAM_NAMES:
        prm = model.params[k]
        model.optimizer.state[prm] = {"step": torch.tensor(100.0), "exp_avg": moments[k][0].clone(), "exp_avg_sq": moments[k][1].clone()}
    return model


def gsplat_model(params, moments):
    prm = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in params.items()})
    opts = {}
    for k in params:
        opts[k] = torch.optim.Adam([prm[k]], lr=1e-3, eps=1e-15)
        opts[k].state[prm[k]] = {"step": torch.tensor(100.0), "exp_avg": moments[k][0].clone(), "exp_avg_sq": moments[k][1].clone()}
    return prm, opts


def step_bytes(params, plan) -> int:
    """Minimum traffic of one step. Decide: read statistics, log-scales, logits (28 B) and write a code byte,
    per Gaussian. Scatter, with r the bytes of one row of all parameters: every survivor (clones included)
    reads its parameters and two moments (3 r); every split parent reads its parameters (r) and its rotation
    and scales again for sampling (28 B); every new row is written with its two moments (3 r)."""
    n = len(plan.codes)
    r = sum(v[0].numel() * v.element_size() for v in params.values())
    return 29 * n + 3 * r * plan.n_survive + (r + 28) * plan.n_split + 3 * r * plan.num_new


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated N (SH degree 0), e.g. 10000,100000")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs (CPU + TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    assert DEVICE == "cuda" or args.smoke, "the benchmark needs a CUDA device (or --smoke)"
    from splatgen_kernels.densify import accumulate_stats_triton, densify_plan_triton, densify_step_triton

    try:
        import gsplat_rules as G
        from gsplat.strategy import DefaultStrategy  # noqa: F401

        have_gsplat = True
    except Exception as e:  # gsplat is optional on the benchmark machine
        print(f"gsplat unavailable ({e}); its columns stay empty")
        have_gsplat = False

    sizes = [(int(s), 0) for s in args.sizes.split(",")] if args.sizes else SIZES
    if args.smoke:
        sizes = [(700, 0), (300, 3)]
    p = DensifyParams(max_gaussians=10**9)  # no cap: the cap's rare fallback is not what we time
    copy_bw = copy_bandwidth_GBps()
    print(f"copy bandwidth (read + write): {copy_bw:.0f} GB/s")
    rows, agreement = [], []
    for n, sh in sizes:
        params, moments, stats = template(n, sh, p)
        label = f"N={n:,} sh{sh}"
        row = dict(case=label, n=n, sh_degree=sh)

        # ---- accumulate (every step)
        g = torch.Generator(device=DEVICE).manual_seed(1)
        grad = torch.randn(VIEWS, n, 2, generator=g, device=DEVICE) * 1e-3
        radii = torch.randint(0, 30, (VIEWS, n), generator=g, device=DEVICE, dtype=torch.int32)
        s_acc = DensifyStats.zeros(n, DEVICE)
        row["acc_triton_us"] = 1e3 * do_bench_ms(
            lambda: accumulate_stats_triton(s_acc.grad2d_sum, s_acc.count, s_acc.max_radii, grad, radii, 512, 512))
        row["acc_torch_us"] = 1e3 * do_bench_ms(lambda: accumulate_stats(s_acc, grad, radii, 512, 512))
        acc_bytes = grad.numel() * 4 + radii.numel() * 4 + n * 3 * 4 * 2
        row["acc_triton_frac_copy_bw"] = acc_bytes / (row["acc_triton_us"] * 1e-6) / 1e9 / copy_bw
        if have_gsplat:
            strategy = G.make_strategy(p)
            means2d = torch.zeros(VIEWS, n, 2, device=DEVICE, requires_grad=True)
            means2d.grad = grad
            info = {"width": 512, "height": 512, "n_cameras": VIEWS, "radii": torch.stack([radii, radii], -1),
                    "gaussian_ids": None, "means2d": means2d}
            gs_state = strategy.initialize_state(scene_scale=p.scene_extent)
            row["acc_gsplat_us"] = 1e3 * do_bench_ms(lambda: strategy._update_state({"means": params["means"]}, gs_state, info))
            del means2d, info, gs_state
        del grad, radii, s_acc

        # ---- decisions only, then the full step
        row["decide_triton_us"] = 1e3 * do_bench_ms(lambda: densify_plan_triton(stats, params["scales"], params["opacities"], p))
        row["decide_torch_us"] = 1e3 * do_bench_ms(lambda: densify_decisions(stats, params["scales"], params["opacities"], p))
        plan = densify_plan_triton(stats, params["scales"], params["opacities"], p)
        row.update(cloned=plan.n_clone, split=plan.n_split, pruned=plan.n_prune, n_new=plan.num_new)
        reps = 2 if args.smoke else 5 if n >= 4_000_000 else 10
        t = wall_ms(lambda m: densify_step_triton(m, stats, p, seed=0), lambda: our_model(params, moments, sh), reps)
        row["step_triton_ms"] = t["median_ms"]
        t = wall_ms(lambda m: densify_step(m, stats, p, torch.Generator().manual_seed(0)), lambda: our_model(params, moments, sh), reps)
        row["step_torch_ms"] = t["median_ms"]
        row["step_speedup_vs_torch"] = row["step_torch_ms"] / row["step_triton_ms"]
        moved = step_bytes(params, plan)
        row["step_triton_bytes"] = moved
        row["step_triton_frac_copy_bw"] = moved / (row["step_triton_ms"] * 1e-3) / 1e9 / copy_bw
        if have_gsplat:
            strategy = G.make_strategy(p)

            def gs_step(arg):
                prm, opts, state = arg
                strategy._grow_gs(prm, opts, state, 2)
                strategy._prune_gs(prm, opts, state, 2)

            def gs_setup():
                prm, opts = gsplat_model(params, moments)
                return prm, opts, {"grad2d": stats.grad2d_sum.clone(), "count": stats.count.clone(), "scene_scale": p.scene_extent}

            row["step_gsplat_ms"] = wall_ms(gs_step, gs_setup, reps)["median_ms"]
            row["step_speedup_vs_gsplat"] = row["step_gsplat_ms"] / row["step_triton_ms"]
            exp_ids, role = G.gsplat_expected_rows(stats.grad2d_sum, stats.count, stats.max_radii, params["scales"],
                                                   params["opacities"], strategy, p.scene_extent, step=2)
            cmp = G.compare_fates(stats, params["scales"], params["opacities"], p, plan.masks(), exp_ids, role)
            agreement.append(dict(case=label, **{k: v for k, v in cmp.items() if k not in ("differ_mask", "reason")}))
        rows.append(row)
        print(f"{label:16s} step: triton {row['step_triton_ms']:8.3f} ms  torch {row['step_torch_ms']:8.3f} ms "
              f"(x{row['step_speedup_vs_torch']:.1f})  gsplat {row.get('step_gsplat_ms', float('nan')):8.3f} ms | "
              f"accumulate: triton {row['acc_triton_us']:7.1f} us  torch {row['acc_torch_us']:7.1f} us  "
              f"gsplat {row.get('acc_gsplat_us', float('nan')):7.1f} us")
        del params, moments, stats, plan
        if DEVICE == "cuda":
            torch.cuda.empty_cache()

    meta = environment()
    meta.update(copy_bandwidth_GBps=copy_bw, views=VIEWS, densify_params=vars(p),
                stats="5% grow (half clone, half split), 3% transparent (pruned), count 10, max radius 0.1",
                timing="accumulate/decide: do_bench median (cold L2); step: wall clock median, device synchronised, fresh model each run",
                gsplat_settings=G.mapped_thresholds_note() if have_gsplat else None)
    write_results(args.out, "densify", meta, rows, {"gsplat_agreement": agreement})
    plot(args.out / "densify.png", rows, meta)


def plot(path: Path, rows, meta) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    base = [r for r in rows if r["sh_degree"] == 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, name in (("step_triton_ms", "Triton"), ("step_torch_ms", "PyTorch reference"), ("step_gsplat_ms", "gsplat DefaultStrategy")):
        pts = [(r["n"], r[key]) for r in base if key in r]
        if pts:
            axes[0].loglog(*zip(*pts), marker="o", label=name)
    axes[0].set_xlabel("Gaussians")
    axes[0].set_ylabel("ms per densification step")
    axes[0].set_title("full step (decide + clone/split/prune + Adam state)")
    axes[0].legend(fontsize=8)
    for key, name in (("acc_triton_us", "Triton"), ("acc_torch_us", "PyTorch reference"), ("acc_gsplat_us", "gsplat _update_state")):
        pts = [(r["n"], r[key]) for r in base if key in r]
        if pts:
            axes[1].loglog(*zip(*pts), marker="o", label=name)
    axes[1].set_xlabel("Gaussians")
    axes[1].set_ylabel("us per step (4 views)")
    axes[1].set_title("statistics accumulation")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"densification, {meta.get('device')}, torch {meta['torch']}, triton {meta.get('triton')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
