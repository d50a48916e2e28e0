"""The CUDA-graph UNet replay (``guidance.cuda_graph``) gives the eager UNet's predictions.

Run on a CUDA machine: ``pytest tests/gpu -m gpu -q``. Uses the bundled prior (the default generation's model: a
camera-conditioned 4-view UNet, whose cameras go into the graph as class labels) in fp16 at two batch shapes, and a
text-to-image UNet without class labels; each graph is fed several different inputs, cameras included, so a graph
that replayed stale buffers would fail.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _bundled_guidance(cuda_graph: bool):
    from splatgen.components import build_guidance
    from splatgen.config import Config, GuidanceConfig

    g = build_guidance(Config(guidance=GuidanceConfig(cuda_graph=cuda_graph)), "cuda")
    g.prepare_text("a red mug", "", True)
    return g


def _random_cameras(n: int, gen: torch.Generator):
    from splatgen.cameras import orbit_cameras

    elev = (torch.rand(n, generator=gen) * 40 - 5).tolist()
    azim = (torch.rand(n, generator=gen) * 360).tolist()
    return orbit_cameras(elev, azim, 2.2, 45.0, 64, device="cuda")


def test_graphed_camera_conditioned_unet_matches_eager():
    graphed, eager = _bundled_guidance(True), _bundled_guidance(False)
    assert graphed.multiview is not None, "the bundled prior is expected to be camera-conditioned"
    gen = torch.Generator("cuda").manual_seed(0)
    cpu_gen = torch.Generator().manual_seed(0)
    outputs = []
    for batch in (4, 8, 4):
        for _ in range(3):
            x = torch.randn(batch, 3, 64, 64, generator=gen, device="cuda")
            t = torch.randint(20, 980, (batch,), generator=gen, device="cuda")
            cams = _random_cameras(batch, cpu_gen)
            a = graphed.predict_noise(x, t, cams)
            b = eager.predict_noise(x, t, cams)
            # Same kernels in the same order: identical up to fp16 nondeterminism of the library's algorithms.
            assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), (batch, (a - b).abs().max().item())
            outputs.append((x, t, a))
    # The camera reaches the graph: the same noisy input and timesteps under other cameras predict otherwise.
    x, t, a = outputs[-1]
    other = graphed.predict_noise(x, t, _random_cameras(x.shape[0], cpu_gen))
    assert (other - a).abs().max().item() > 1e-2
    assert graphed._graphed is not None and not graphed._graphed.failed
    assert len(graphed._graphed.graphs) == 2


def test_graphed_unet_without_class_labels_matches_eager():
    from diffusers import UNet2DConditionModel

    from splatgen.guidance.cuda_graph import CudaGraphUNet

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8).to("cuda", torch.float16).eval()
    graphed = CudaGraphUNet(unet)
    gen = torch.Generator("cuda").manual_seed(1)
    for batch in (2, 6, 2):
        x = torch.randn(batch, 4, 32, 32, generator=gen, device="cuda", dtype=torch.float16)
        t = torch.randint(0, 1000, (batch,), generator=gen, device="cuda")
        emb = torch.randn(batch, 7, 32, generator=gen, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            b = graphed.eager(x, t, emb)
        a = graphed(x, t, emb)
        assert torch.allclose(a, b, atol=2e-3, rtol=1e-3), (batch, (a - b).abs().max().item())
    assert not graphed.failed and len(graphed.graphs) == 2
