"""The compiled group-norm kernels on the GPU at the shapes of Stable Diffusion's VAE encoder.

    pytest -m gpu tests/kernels/test_group_norm_gpu.py

Same contract and bounds as ``test_group_norm_kernel.py`` (float64 reference on the device; one rounding to
fp16/bf16 plus the float32 bound derived there), at N = 4 and every (channels, side) the encoder normalises at
512 x 512 input; and the SD-2.1-shaped encoder (random weights) with and without the swap.
"""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def compiled_kernels():
    from splatgen_kernels._utils import is_interpreted
    from splatgen_kernels.group_norm import _norm_kernel

    if is_interpreted(_norm_kernel):
        pytest.skip("TRITON_INTERPRET is set: these tests are for the compiled kernels")


# (channels, side) of the encoder's norms at 512 x 512: the down blocks at 512, 256, 128, 64 (each block's first
# norm still at the previous width), the mid block and the output norm at 512 x 64 x 64
ENCODER_NORMS = [(128, 512), (128, 256), (256, 256), (256, 128), (512, 128), (512, 64)]


@pytest.mark.parametrize("channels,side", ENCODER_NORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encoder_shapes(channels, side, dtype):
    from test_group_norm_kernel import check

    check((4, channels, side, side), 32, dtype, "cuda", seed=channels + side)


@pytest.mark.parametrize("act", [True, False])
def test_float32_and_odd_size(act):
    from test_group_norm_kernel import check

    check((4, 512, 63, 65), 32, torch.float32, "cuda", act=act, seed=1)
    check((3, 256, 97, 101), 32, torch.float32, "cuda", act=act, offset=50.0, seed=2)


def test_sd21_encoder_with_and_without_the_swap():
    from diffusers import AutoencoderKL

    from splatgen.guidance.fused_norm import fuse_encoder_norms
    from splatgen.guidance.tiny import load_model_config
    from test_group_norm_kernel import encode_with_grads

    torch.manual_seed(0)
    with torch.device("cuda"):
        vae = AutoencoderKL.from_config(load_model_config("sd21_base_vae")).eval()
    x = torch.rand(2, 3, 256, 256, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0)) * 2 - 1
    ref_z, ref_grads = encode_with_grads(vae.encoder, x)
    assert fuse_encoder_norms(vae.encoder) == 2 * 2 * 4 + 2 * 2 + 1 + 1  # 4 down blocks, mid block, attention, out
    z, grads = encode_with_grads(vae.encoder, x)
    # float32 without TF32 on both sides; 1e-4 of the scale for a 30-layer network (1e-5 at the tiny one's 10)
    for got, ref in zip((z, *grads), (ref_z, *ref_grads)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
