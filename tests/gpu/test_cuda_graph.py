"""The CUDA-graph UNet replay (``guidance.cuda_graph``) gives the eager UNet's predictions.

Run on a CUDA machine: ``pytest tests/gpu -m gpu -q``. Uses the bundled prior's UNet (the default
generation's model) in fp16, at two batch shapes, and feeds each graph several different inputs so a
graph that replayed stale buffers would fail.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _bundled_guidance(cuda_graph: bool):
    from splatgen.config import GuidanceConfig
    from splatgen.components import build_guidance
    from splatgen.config import Config

    g = build_guidance(Config(guidance=GuidanceConfig(cuda_graph=cuda_graph)), "cuda")
    g.prepare_text("a red mug", "", True)
    return g


def test_graphed_unet_matches_eager():
    graphed, eager = _bundled_guidance(True), _bundled_guidance(False)
    gen = torch.Generator("cuda").manual_seed(0)
    for batch in (4, 1, 4):
        for _ in range(3):
            x = torch.randn(batch, 3, 64, 64, generator=gen, device="cuda")
            t = torch.randint(20, 980, (batch,), generator=gen, device="cuda")
            dirs = ["front", "side", "back", "overhead"][:batch]
            a = graphed.predict_noise(x, t, dirs)
            b = eager.predict_noise(x, t, dirs)
            # Same kernels in the same order: identical up to fp16 nondeterminism of the library's algorithms.
            assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), (batch, (a - b).abs().max().item())
    assert graphed._graphed is not None and not graphed._graphed.failed
    assert len(graphed._graphed.graphs) == 2
