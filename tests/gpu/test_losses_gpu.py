"""Every score-distillation loss on CUDA: a generation with the bundled prior (UNet from CUDA graphs, gsplat,
the Triton kernels), and the compiled Triton gradient bit-equal to the PyTorch reference on each loss's terms.

Run on a CUDA machine: ``pytest tests/gpu -m gpu -q``.
"""

from __future__ import annotations

import math

import pytest
import torch

from splatgen.config import LOSS_NAMES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_generates_on_cuda(name):
    import splatgen

    res = splatgen.generate("a red mug", config=["default"], overrides=[
        "run.steps=30", "run.preview_views=0", "run.evaluate=false", "run.progress=off", f"guidance.loss={name}",
        f"guidance.perp_neg={'true' if name in ('sds', 'ism') else 'false'}", "densify.backend=triton",
        "run.device=cuda"])
    rows = [r for r in res.history if "loss" in r]
    assert rows and all(math.isfinite(r["loss"]) for r in rows)
    assert res.rep.device.type == "cuda" and res.rep.is_finite()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_triton_gradient_equals_the_reference_on_cuda(name):
    from splatgen.cameras import orbit_cameras
    from splatgen.components import build_guidance
    from splatgen.config import load_config
    from splatgen.guidance.losses import build_loss
    from splatgen.sds import sds_gradient
    from splatgen_kernels.sds import sds_gradient_triton

    cfg = load_config(["default"], [f"guidance.loss={name}", "guidance.perp_neg=true"])
    g = build_guidance(cfg, "cuda")
    g.prepare_text("a red mug", "", True)
    loss = build_loss(cfg.guidance, g)
    cams = orbit_cameras([5.0, 20.0, 0.0, 40.0], [0.0, 70.0, 180.0, 250.0], 2.2, 45.0, 64)
    gen = torch.Generator("cuda").manual_seed(0)
    x0 = torch.rand(4, 3, 64, 64, generator=gen, device="cuda") * 2 - 1
    t = torch.tensor([150, 400, 640, 900], device="cuda")
    noise = torch.randn(x0.shape, generator=gen, device="cuda")
    loss.after_backward(x0, t, cams, torch.Generator().manual_seed(0))
    terms = loss.terms(x0, t, cams, noise)
    w = torch.rand(4, generator=gen, device="cuda")
    ref, _ = sds_gradient(terms.eps_pair, terms.baseline, w, 7.5)
    fused, _ = sds_gradient_triton(terms.eps_pair, terms.baseline, w, 7.5)
    assert torch.isfinite(ref).all() and torch.equal(ref, fused)
