"""Compiled kernels on the GPU at production sizes, against the references and against gsplat.

    pytest -m gpu tests/kernels/test_kernels_gpu.py -s        # -s prints the gsplat agreement summary

Same exactness contract as the CPU tests (see their module docstrings): bitwise gradients and decisions,
bitwise copies of kept rows and moments, reasoned bounds for sums, statistical bounds for children. Sizes are
the issue's: SD latents and 512x512 pixels for SDS; 1M and 4M Gaussians for densification.
"""

import json
import os

import pytest
import torch

from splatgen.densify import DensifyParams, DensifyStats, accumulate_stats, densify_decisions

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

U = 2.0**-24


@pytest.fixture(autouse=True)
def compiled_kernels():
    from splatgen_kernels._utils import is_interpreted
    from splatgen_kernels.sds import _sds_grad_kernel

    if is_interpreted(_sds_grad_kernel):
        pytest.skip("TRITON_INTERPRET is set: these tests are for the compiled kernels")


# ----------------------------------------------------------------------------------------------- SDS
@pytest.mark.parametrize("shape", [(1, 4, 64, 64), (4, 4, 64, 64), (4, 3, 512, 512), (2, 2**24 + 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("clip", [0.0, 0.1])
def test_sds_gradient_large(shape, dtype, clip):
    from splatgen.sds import sds_gradient
    from splatgen_kernels.sds import sds_gradient_triton

    g = torch.Generator(device="cuda").manual_seed(sum(shape))
    B = shape[0]
    eps = torch.randn((2 * B, *shape[1:]), generator=g, device="cuda").to(dtype)
    noise = torch.randn(shape, generator=g, device="cuda")
    weight = torch.rand(B, generator=g, device="cuda")
    eps.view(-1)[::100003] = float("nan")
    noise.view(-1)[7::200003] = float("inf")
    grad, stats = sds_gradient_triton(eps, noise, weight, 100.0, clip)
    ref, ref_stats = sds_gradient(eps, noise, weight, 100.0, clip)
    assert torch.equal(grad, ref), f"{int((grad != ref).sum())} elements differ"
    assert int(stats["num_nonfinite"]) == int(ref_stats["num_nonfinite"]) > 0
    exact = float(ref.double().pow(2).sum().sqrt())
    assert abs(float(stats["grad_norm"]) - exact) <= 10 * U * exact  # bound derived in test_sds_kernel


def test_sds_loss_backward_large():
    from splatgen.sds import sds_gradient
    from splatgen_kernels.sds import sds_loss_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    eps = torch.randn(8, 4, 64, 64, generator=g, device="cuda").half()
    noise = torch.randn(4, 4, 64, 64, generator=g, device="cuda").half()
    w = torch.rand(4, generator=g, device="cuda")
    x0 = torch.randn(4, 4, 64, 64, generator=g, device="cuda", dtype=torch.float16, requires_grad=True)
    loss, _ = sds_loss_triton(x0, eps, noise, w, 7.5)
    loss.backward()
    ref, _ = sds_gradient(eps, noise, w, 7.5)
    assert torch.equal(x0.grad, ref.half())


# ----------------------------------------------------------------------------------------------- densify
def big_stats(n, seed, mean_grad=0.004):
    g = torch.Generator(device="cuda").manual_seed(seed)
    count = torch.randint(0, 5, (n,), generator=g, device="cuda").float()
    avg = -mean_grad * torch.log(torch.rand(n, generator=g, device="cuda").clamp_min(1e-12))
    return DensifyStats(avg * count, count, 0.27 * torch.rand(n, generator=g, device="cuda"))


def big_geometry(n, seed):
    g = torch.Generator(device="cuda").manual_seed(seed + 1)
    scales = torch.randn(n, 1, generator=g, device="cuda") - 4.0 + 0.3 * torch.randn(n, 3, generator=g, device="cuda")
    return scales, torch.randn(n, generator=g, device="cuda") * 2.0 - 1.5


def test_accumulate_large():
    from splatgen_kernels.densify import accumulate_stats_triton

    n, B = 1_000_000, 4
    g = torch.Generator(device="cuda").manual_seed(1)
    ref = big_stats(n, 1)
    ours = DensifyStats(ref.grad2d_sum.clone(), ref.count.clone(), ref.max_radii.clone())
    grad = torch.randn(B, n, 2, generator=g, device="cuda") * 1e-3
    radii = torch.randint(0, 60, (B, n), generator=g, device="cuda", dtype=torch.int32)
    radii[torch.rand(B, n, generator=g, device="cuda") < 0.4] = 0
    accumulate_stats(ref, grad, radii, 512, 512)
    accumulate_stats_triton(ours.grad2d_sum, ours.count, ours.max_radii, grad, radii, 512, 512)
    assert torch.equal(ours.count, ref.count) and torch.equal(ours.max_radii, ref.max_radii)
    torch.testing.assert_close(ours.grad2d_sum, ref.grad2d_sum, rtol=(B + 2) * 2.0**-23, atol=0.0)


@pytest.mark.parametrize("n", [1_000_000, 4_000_000])
@pytest.mark.parametrize("screen", [0.25, 0.0])
def test_decisions_large(n, screen):
    from splatgen_kernels.densify import densify_decisions_triton

    p = DensifyParams(max_screen_fraction=screen, max_gaussians=10 * n)
    stats = big_stats(n, n)
    scales, opac = big_geometry(n, n)
    ref = densify_decisions(stats, scales, opac, p)
    ours = densify_decisions_triton(stats, scales, opac, p)
    for k in ref:
        assert torch.equal(ref[k], ours[k]), f"{k}: {int((ref[k] != ours[k]).sum())} of {n} differ"


def test_decisions_at_thresholds_large():
    """A million values packed within a few ulps of each threshold: CUDA's exp and sigmoid are evaluated by
    PyTorch on both sides, so not one decision may differ."""
    from splatgen_kernels.densify import _threshold, densify_decisions_triton

    n = 1_000_000
    p = DensifyParams()
    stats = DensifyStats(torch.ones(n, device="cuda"), torch.ones(n, device="cuda"), torch.zeros(n, device="cuda"))
    keys = lambda t: torch.tensor([t], dtype=torch.float32).view(torch.int32).item()  # noqa: E731
    k = torch.arange(-(n // 2), n - n // 2, device="cuda", dtype=torch.int32) % 64 - 32
    o_thr = keys(_threshold("opacity", p.min_opacity, "cuda"))
    s_big = keys(_threshold("scale", p.max_world_scale * p.scene_extent, "cuda"))
    s_small = keys(_threshold("scale", p.dense_scale * p.scene_extent, "cuda"))
    third = torch.arange(n, device="cuda") % 3
    # negative floats: larger int bits = more negative, still a contiguous neighbourhood of 64 values
    opac = torch.where(third == 0, (o_thr + k).view(torch.float32), torch.zeros(n, device="cuda"))
    smax = torch.where(third == 1, (s_big + k).view(torch.float32), (s_small + k).view(torch.float32))
    scales = torch.stack([smax, smax - 3.0, smax - 5.0], -1)
    ref = densify_decisions(stats, scales, opac, p)
    ours = densify_decisions_triton(stats, scales, opac, p)
    for key in ref:
        assert torch.equal(ref[key], ours[key]), f"{key}: {int((ref[key] != ours[key]).sum())} differ"


def test_cap_large():
    from splatgen_kernels.densify import densify_decisions_triton

    n = 1_000_000
    stats = big_stats(n, 5)
    scales, opac = big_geometry(n, 5)
    p = DensifyParams(max_gaussians=n + 12_345)
    ref = densify_decisions(stats, scales, opac, p)
    ours = densify_decisions_triton(stats, scales, opac, p)
    assert int(ref["clone"].sum() + ref["split"].sum()) == 12_345
    for k in ref:
        assert torch.equal(ref[k], ours[k])


def _model(n, sh_degree, seed):
    from splatgen.gaussians import GaussianModel, num_sh_bases

    g = torch.Generator(device="cuda").manual_seed(seed)
    scales, opac = big_geometry(n, seed)
    params = dict(
        means=torch.randn(n, 3, generator=g, device="cuda"), scales=scales,
        quats=torch.randn(n, 4, generator=g, device="cuda"), opacities=opac,
        sh0=torch.randn(n, 1, 3, generator=g, device="cuda"),
        shN=torch.randn(n, num_sh_bases(sh_degree) - 1, 3, generator=g, device="cuda"),
    )
    model = GaussianModel(params, sh_degree=sh_degree)
    model.create_optimizer({k: 1e-3 for k in params})
    for prm in model.params.values():
        prm.grad = torch.randn(prm.shape, generator=g, device="cuda")
    model.optimizer.step()
    return model


@pytest.mark.parametrize("n,sh_degree", [(1_000_000, 0), (300_000, 3)])
def test_densify_step_large(n, sh_degree):
    from splatgen.densify import densify_step
    from splatgen_kernels.densify import densify_step_triton

    p = DensifyParams(max_gaussians=10 * n)
    stats = big_stats(n, 11)
    ref_model, model = _model(n, sh_degree, 3), _model(n, sh_degree, 3)
    masks = densify_decisions(stats, ref_model.params["scales"].data, ref_model.params["opacities"].data, p)
    parent = {k: v.detach().clone() for k, v in ref_model.params.items()}
    ref_counts = densify_step(ref_model, stats, p, torch.Generator().manual_seed(0))
    counts = densify_step_triton(model, stats, p, seed=7)
    assert counts == ref_counts
    n_kept = counts["total"] - 2 * counts["split"]
    idx = torch.nonzero(masks["split"]).squeeze(-1)
    for name in model.params:
        a, b = model.params[name].data, ref_model.params[name].data
        assert torch.equal(a[:n_kept], b[:n_kept]), name
        if name != "means":
            assert torch.equal(a[n_kept:], b[n_kept:]), name
        st, rst = model.optimizer.state[model.params[name]], ref_model.optimizer.state[ref_model.params[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[key], rst[key]), (name, key)
    from test_densify_kernel import assert_standard_normal, whitened_offsets

    m = idx.numel()
    z = torch.stack([
        whitened_offsets(model.params["means"].data[n_kept + k * m: n_kept + (k + 1) * m], parent["means"][idx],
                         parent["scales"][idx], parent["quats"][idx])
        for k in range(2)
    ])
    assert_standard_normal(z)


# ----------------------------------------------------------------------------------------------- gsplat
def test_against_gsplat_default_strategy():
    """gsplat's DefaultStrategy on the same statistics at 1M Gaussians: its result equals the written-out
    rules row for row, and every disagreement with splatgen has a documented reason (gsplat_rules.py).
    The summary is printed, and written to $SPLATGEN_REPORT_DIR/gsplat_agreement.json when that is set."""
    pytest.importorskip("gsplat")
    import gsplat_rules as G

    from splatgen_kernels.densify import densify_decisions_triton

    n = 1_000_000
    p = DensifyParams(max_gaussians=n + 30_000)
    stats = big_stats(n, 21, mean_grad=0.006)
    model = _model(n, 0, 21)
    params = {k: model.params[k].data for k in ("means", "scales", "quats", "opacities")}
    strategy = G.make_strategy(p)
    ids = G.run_gsplat(params, stats.grad2d_sum, stats.count, stats.max_radii, strategy, p.scene_extent, step=2)
    exp_ids, role = G.gsplat_expected_rows(stats.grad2d_sum, stats.count, stats.max_radii, params["scales"],
                                           params["opacities"], strategy, p.scene_extent, step=2)
    assert torch.equal(ids, exp_ids)
    masks = densify_decisions_triton(stats, params["scales"], params["opacities"], p)
    cmp = G.compare_fates(stats, params["scales"], params["opacities"], p, masks, exp_ids, role)
    summary = {k: v for k, v in cmp.items() if k not in ("differ_mask", "reason")}
    summary["settings"] = G.mapped_thresholds_note()
    print("\ngsplat agreement:", json.dumps(summary, indent=1))
    if os.environ.get("SPLATGEN_REPORT_DIR"):
        os.makedirs(os.environ["SPLATGEN_REPORT_DIR"], exist_ok=True)
        with open(os.path.join(os.environ["SPLATGEN_REPORT_DIR"], "gsplat_agreement.json"), "w") as f:
            json.dump(summary, f, indent=1)
    assert cmp["disagree_by_reason"]["other"] == 0
    assert cmp["agree"] + sum(cmp["disagree_by_reason"].values()) == n
