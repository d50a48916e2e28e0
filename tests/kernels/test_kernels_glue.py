"""``splatgen.kernels_glue``: backend resolution and that both backends give the trainer the same results."""

import os
import subprocess
import sys

import pytest
import torch

from splatgen import kernels_glue as glue
from splatgen.densify import DensifyParams
from splatgen.errors import ConfigError
from splatgen.sds import sds_gradient

from test_densify_kernel import make_model, make_stats  # noqa: E402  (same folder, on sys.path under pytest)


def test_resolve_backend(monkeypatch):
    assert glue.resolve_kernel_backend("torch", "cpu") == "torch"
    assert glue.resolve_kernel_backend("auto", "cpu") == "torch"
    with pytest.raises(ConfigError, match="not allowed"):
        glue.resolve_kernel_backend("cuda", "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        glue.resolve_kernel_backend("triton", "cpu")
    assert not glue.sds_backend_available("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert glue.resolve_kernel_backend("triton", "cpu") == "triton"


def test_import_does_not_import_triton():
    code = (
        "import sys, splatgen.kernels_glue as g\n"
        "assert g.resolve_kernel_backend('auto', 'cpu') == 'torch'\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_sds_loss_backends_agree(device):
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(4, 4, 8, 9, generator=g).half().to(device)
    noise = torch.randn(2, 4, 8, 9, generator=g).to(device)
    w = torch.rand(2, generator=g).to(device)
    grads, stats = {}, {}
    x0 = torch.randn(2, 4, 8, 9, generator=torch.Generator().manual_seed(1)).to(device)
    for backend in ("torch", "triton"):
        x = x0.clone().requires_grad_(True)
        loss, stats[backend] = glue.sds_loss(backend, x, eps, noise, w, 7.5, 0.0)
        loss.backward()
        grads[backend] = x.grad
    grad, _ = sds_gradient(eps, noise, w, 7.5)
    assert torch.equal(grads["triton"], grad)
    # the reference loss's gradient carries one rounding of x0 - (x0 - grad) (see test_sds_kernel)
    assert ((grads["torch"] - grad).abs() <= 2 * 2.0**-24 * ((x0 - grad).abs() + grad.abs())).all()
    assert int(stats["triton"]["num_nonfinite"]) == int(stats["torch"]["num_nonfinite"]) == 0
    exact = float(grad.double().pow(2).sum().sqrt())
    assert abs(float(stats["triton"]["grad_norm"]) - exact) <= 10 * 2.0**-24 * exact  # bound derived in test_sds_kernel


def test_accumulate_and_densify_backends_agree(device):
    n = 700
    p = DensifyParams()
    models, counts, all_stats = {}, {}, {}
    for backend in ("torch", "triton"):
        stats = make_stats(n, 3, device)
        grad = torch.randn(2, n, 2, generator=torch.Generator().manual_seed(2)).to(device) * 1e-3
        radii = torch.randint(0, 9, (2, n), generator=torch.Generator().manual_seed(3), dtype=torch.int32).to(device)
        glue.accumulate_stats(backend, stats, grad, radii, 64, 64)
        all_stats[backend] = stats
        models[backend] = make_model(n, 3, device)
        counts[backend] = glue.densify_step(backend, models[backend], stats, p, torch.Generator().manual_seed(4))
    assert torch.equal(all_stats["torch"].count, all_stats["triton"].count)
    assert counts["torch"] == counts["triton"]
    n_kept = counts["torch"]["total"] - 2 * counts["torch"]["split"]
    for k in models["torch"].params:
        assert torch.equal(models["torch"].params[k][:n_kept], models["triton"].params[k][:n_kept])
    # a seed works too, and the same seed gives the same children
    for seed_run in range(2):
        m = make_model(n, 3, device)
        glue.densify_step("triton", m, all_stats["triton"], p, 1234)
        if seed_run == 0:
            first = m.params["means"].detach().clone()
    assert torch.equal(first, m.params["means"])
