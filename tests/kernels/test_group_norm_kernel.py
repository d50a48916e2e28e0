"""The fused channels-last GroupNorm (+ SiLU) kernels against the PyTorch reference (``F.group_norm`` + ``F.silu``).

The reference runs in float64 on the same input values, so it is the exact answer to within 1e-15 and every
difference is the kernel's own error. Tolerances, with u the unit roundoff of the output dtype:

- float32 (u = 2^-24). Every statistic is a float32 reduction of at most ``depth`` levels (a tile's tree of
  log2(BLOCK_P C/G) levels, the sequential walk over a program's tiles, the finalize's chunks and tree, the sum
  over N), and Chan's merges add no cancellation, so mean, rstd and the channel sums carry at most ``depth`` u
  relative to the sum of |terms|; the element-wise outputs add a few more roundings. The mean's error is
  relative to |x|, not to the spread, so it moves xhat = (x - mean) rstd by up to that much times
  A = max|x| max(rstd) (about 4 for centred data; inherent to float32, whatever the algorithm). We allow
  (depth + 8) u A x the largest reference value for y and dx, and (depth + 8) u A x (sum |dz xhat| + sum |dz|)
  for dw and db.
- float16 / bfloat16 (u = 2^-11 / 2^-8). Inputs are read exactly and everything is computed in float32, then
  rounded once to the output dtype: the error is at most u |ref| plus the float32 error above (the float32
  bound, used as the absolute part). One exception: Triton's interpreter converts float32 to bfloat16 by
  truncation half the time (numpy has no bfloat16; compiled kernels round to nearest), so under the interpreter
  the bfloat16 bound is one ulp, 2^-7 |ref|.
"""

import math

import pytest
import torch

U32 = 2.0**-24


def out_u(dtype):
    """Error of the final rounding to ``dtype``, relative (see the module docstring)."""
    from splatgen_kernels._utils import is_interpreted

    if dtype == torch.bfloat16:
        return 2.0**-7 if is_interpreted(gn()._norm_kernel) else 2.0**-8
    return {torch.float32: 0.0, torch.float16: 2.0**-11}[dtype]


def gn():
    import splatgen_kernels.group_norm as G

    return G


def make(shape, groups, dtype, device, seed=0, offset=0.0, channels_last=True, param_dtype=None):
    g = torch.Generator().manual_seed(seed)
    N, C = shape[:2]
    x = (torch.randn(shape, generator=g) * 2.0 + offset).to(dtype)
    if channels_last:
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)  # NHWC storage, NCHW shape (also for 3D / 5D)
    w = (torch.randn(C, generator=g) * 0.5 + 1.0).to(param_dtype or dtype)
    b = (torch.randn(C, generator=g) * 0.5).to(param_dtype or dtype)
    dy = torch.randn(shape, generator=g).to(dtype)
    return x.to(device), w.to(device), b.to(device), dy.to(device)


def reference(x, groups, w, b, dy, eps, act):
    """float64 outputs and gradients of the PyTorch reference (on x's device), and the abs-sums that bound dw / db."""
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = gn().group_norm_silu_reference(x64, groups, w64, b64, eps, act)
    dx, dw, db = torch.autograd.grad(y, (x64, w64, b64), dy.double())
    with torch.no_grad():
        z = torch.nn.functional.group_norm(x64, groups, None, None, eps)  # xhat
        zz = z * w64.view(1, -1, *[1] * (x.dim() - 2)) + b64.view(1, -1, *[1] * (x.dim() - 2))
        dz = dy.double()
        if act:
            s = torch.sigmoid(zz)
            dz = dz * s * (1 + zz * (1 - s))
        dims = [0, *range(2, x.dim())]
        abs_db, abs_dw = dz.abs().sum(dims), (dz * z).abs().sum(dims)
    return y.detach(), dx, dw, db, abs_dw, abs_db


def depth(shape, groups):
    sh = gn()._Shape(shape[0], math.prod(shape[2:]), shape[1], groups)
    final = gn()._FINAL_BLOCK
    return (math.log2(sh.BLOCK_P * sh.CG_PAD) + sh.TILES + math.log2(final) + math.ceil(sh.S / final)
            + shape[0])


def check(shape, groups, dtype, device, act=True, eps=1e-6, seed=0, offset=0.0, channels_last=True, param_dtype=None):
    x, w, b, dy = make(shape, groups, dtype, device, seed, offset, channels_last, param_dtype)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    y = gn().group_norm_silu_triton(x, groups, w, b, eps, act)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    ry, rdx, rdw, rdb, abs_dw, abs_db = reference(x, groups, w, b, dy, eps, act)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.movedim(1, -1).is_contiguous() and dx.movedim(1, -1).is_contiguous()  # channels-last out
    assert dx.dtype == dtype and dw.dtype == w.dtype and db.dtype == b.dtype
    x64 = x.detach().double()
    std = x64.reshape(shape[0], groups, -1).var(-1, unbiased=False).add(eps).sqrt()
    amplification = max(1.0, float(x64.abs().max() / std.min()))
    k32 = (depth(shape, groups) + 8) * U32 * amplification
    u = out_u(dtype)
    for name, got, ref in (("y", y, ry), ("dx", dx, rdx)):
        err = (got.detach().double() - ref).abs()
        bound = u * ref.abs() + k32 * float(ref.abs().max())
        excess = float((err - bound).max())
        assert (err <= bound).all(), f"{name}: max error {float(err.max()):.3g}, worst excess {excess:.3g}"
    for name, got, ref in (("dw", dw, rdw), ("db", db, rdb)):
        err = (got.double() - ref).abs()
        bound = out_u(got.dtype) * ref.abs() + k32 * (abs_dw + abs_db)  # an xhat error reaches dw through sum |dz|
        assert (err <= bound).all(), f"{name}: max error {float(err.max()):.3g}"
    return y, dx, dw, db


@pytest.fixture(params=["default", "small-tiles"])
def geometry(request, monkeypatch):
    """'small-tiles' shrinks the tiles and the program count so the small test shapes walk several tiles per
    program, several slices per sample and several finalize chunks, with short last ones."""
    if request.param == "small-tiles":
        monkeypatch.setattr(gn(), "TILE_ELEMENTS", 128)
        monkeypatch.setattr(gn(), "TARGET_PROGRAMS", 6)
        monkeypatch.setattr(gn(), "_FINAL_BLOCK", 2)
    return request.param


# (N, C, H, W), groups: the SD VAE's 32 groups at small widths; H*W odd and prime; C/G = 3 (not a power of 2),
# C/G = 1; one pixel (variance 0: rstd = 1/sqrt(eps)).
SHAPES = [((2, 64, 8, 8), 8), ((2, 64, 8, 8), 32), ((2, 64, 5, 7), 16), ((1, 96, 3, 5), 32), ((2, 32, 9, 9), 32),
          ((3, 32, 1, 1), 8)]


@pytest.mark.parametrize("shape,groups", SHAPES)
@pytest.mark.parametrize("act", [True, False])
def test_float32_matches_reference(device, geometry, shape, groups, act):
    check(shape, groups, torch.float32, device, act=act, seed=sum(shape) + groups)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,groups", [((2, 64, 8, 8), 32), ((2, 64, 5, 7), 8)])
def test_half_precision_matches_reference(device, geometry, dtype, shape, groups):
    check(shape, groups, dtype, device, seed=groups)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_large_mean_keeps_the_variance(device, geometry, dtype):
    # mean 300, std 2: a float32 sum of squares would lose about 14 of its 24 bits to cancellation.
    check((2, 64, 7, 9), 32, dtype, device, offset=300.0, seed=5)


def test_other_layouts_and_ranks(device):
    # an NCHW-contiguous input is copied once and gives the same values; [N, C, L] (the attention's view)
    # and [N, C, D, H, W] work too.
    check((2, 64, 5, 7), 32, torch.float32, device, channels_last=False, seed=6)
    check((2, 64, 35), 32, torch.float32, device, seed=7)
    check((2, 32, 3, 4, 5), 8, torch.float32, device, seed=8)


def test_parameters_in_float32_with_half_activations(device):
    # autocast-style: fp16 activations, fp32 parameters; the parameter gradients stay float32 (checked in check())
    y, dx, dw, db = check((2, 64, 6, 6), 32, torch.float16, device, seed=9, param_dtype=torch.float32)
    assert y.dtype == dx.dtype == torch.float16 and dw.dtype == db.dtype == torch.float32


def test_deterministic(device):
    outs = [check((2, 64, 5, 7), 16, torch.float16, device, seed=10) for _ in range(2)]
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_bad_groups_and_parameters_say_what_is_wrong(device):
    x, w, b, _ = make((1, 48, 2, 2), 8, torch.float32, device)
    with pytest.raises(ValueError, match="must divide the 48 channels"):
        gn().group_norm_silu_triton(x, 32, w, b)
    with pytest.raises(ValueError, match="must hold 48 values"):
        gn().group_norm_silu_triton(x, 8, w[:4], b)


# ------------------------------------------------------------------------------------------- the encoder swap
def tiny_vae(seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # two down blocks of 32 and 64 channels (C/G = 4 and 8 with 8 groups, as SD's 128..512 with 32), the mid
    # block's attention, random weights
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
                         latent_channels=4, norm_num_groups=8).eval()


def encode_with_grads(encoder, x):
    x = x.clone().requires_grad_()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # on CUDA, TF32 would round 1e-6 differences up
        z = encoder(x)
    g = torch.Generator().manual_seed(1)
    dz = torch.randn(z.shape, generator=g).to(z.device)
    params = [p for n, p in encoder.named_parameters() if "norm" in n]
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        grads = torch.autograd.grad(z, [x, *params], dz)
    return z.detach(), grads


def test_fused_encoder_gives_the_same_latents_and_gradients(device):
    from splatgen.guidance.fused_norm import FusedGroupNorm, fuse_encoder_norms

    vae = tiny_vae().to(device)
    x = torch.rand(2, 3, 18, 14, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    ref_z, ref_grads = encode_with_grads(vae.encoder, x)
    n = fuse_encoder_norms(vae.encoder)
    fused = [m for m in vae.encoder.modules() if isinstance(m, FusedGroupNorm)]
    # every GroupNorm of the encoder is fused (resnets, attention, output) and no SiLU is left outside them
    assert n == len(fused) > 0
    assert not [m for m in vae.encoder.modules() if type(m) is torch.nn.GroupNorm]
    assert not [m for m in vae.encoder.modules() if isinstance(m, torch.nn.SiLU)]
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append(a[0].movedim(1, -1).is_contiguous())) for m in fused]
    z, grads = encode_with_grads(vae.encoder, x)
    for h in hooks:
        h.remove()
    assert seen and all(seen), "a fused norm was handed NCHW memory (the encoder is not channels-last throughout)"
    # Each norm agrees with the reference to about 1e-6 of its outputs' scale (tests above); through the
    # encoder's ~10 layers (gains of order 1) that stays well inside 1e-5 of the latents' and gradients' scale.
    for got, ref in zip((z, *grads), (ref_z, *ref_grads)):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    assert vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_config_switch_fuses_the_built_guidance(device, tmp_path):
    from splatgen.components import build_guidance
    from splatgen.config import Config, GuidanceConfig
    from splatgen.guidance.fused_norm import FusedGroupNorm
    from splatgen.guidance.tiny import make_tiny_sd

    folder = make_tiny_sd(tmp_path / "sd")
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    latents = []
    for fused in (False, True):
        cfg = Config(guidance=GuidanceConfig(type="stable-diffusion", model=str(folder), dtype="fp32",
                                             fused_group_norm=fused))
        g = build_guidance(cfg, device)
        assert any(isinstance(m, FusedGroupNorm) for m in g.vae.encoder.modules()) == fused
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            latents.append(g.encode(images.to(device)).detach())
    torch.testing.assert_close(latents[1], latents[0], rtol=0, atol=1e-5 * float(latents[0].abs().max()))


def test_config_switch_without_triton_device_says_so(tmp_path, monkeypatch):
    import splatgen.kernels_glue as glue
    from splatgen.components import build_guidance
    from splatgen.config import Config, GuidanceConfig
    from splatgen.errors import ConfigError
    from splatgen.guidance.tiny import make_tiny_sd

    monkeypatch.setattr(glue, "_interpreter_requested", lambda: False)
    cfg = Config(guidance=GuidanceConfig(type="stable-diffusion", model=str(make_tiny_sd(tmp_path / "sd")),
                                         fused_group_norm=True))
    with pytest.raises(ConfigError, match=r"guidance.fused_group_norm=true needs Triton on a CUDA device"):
        build_guidance(cfg, "cpu")


def test_benchmark_small_runs(tmp_path):
    """``benchmarks/perf/group_norm.py --small`` (the GPU benchmark's smoke test) runs and writes its JSON."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "gn.json"
    r = subprocess.run([sys.executable, str(root / "benchmarks/perf/group_norm.py"), "--small", "--skip-encoder",
                        "--warmup", "0", "--reps", "1", "--out", str(out)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {row["op"] for row in result["ops"]} == {"torch-nchw", "torch-channels-last", "fused"}
    assert result["environment"]["command"].startswith("python") and "device" in result["environment"]


def test_fused_norm_under_torch_compile(device):
    # guidance.compile='vae' with the swap: Dynamo must run the fused norm eagerly (it cannot trace the launcher)
    from splatgen.guidance.fused_norm import FusedGroupNorm

    norm = FusedGroupNorm(torch.nn.GroupNorm(8, 32).to(device), True)
    x = torch.randn(2, 32, 5, 5, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    compiled = torch.compile(lambda t: norm(t) * 2.0, backend="eager")
    y = compiled(x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    ref = norm(x) * 2.0
    (ref_gx,) = torch.autograd.grad(ref.sum(), x)
    assert torch.equal(y, ref) and torch.equal(gx, ref_gx)
