"""The fused SDS kernel against the PyTorch reference (``splatgen.sds``).

Tolerances. The kernel upcasts every input to float32 and applies the reference's element-wise operations in
the reference's order, without FMA contraction, so the gradient must be *bit-identical* for every input dtype:
those tests use ``torch.equal``. Only the reductions differ in order. For them we compare with the exact
value computed in float64 from that (identical) gradient. With u = 2^-24 the unit roundoff of float32, for
sums of non-negative terms a summation tree of depth d has relative error at most d u. Each square is rounded
once (u); a block of 2048 is summed by ``tl.sum`` in a tree of depth at most 15 on a GPU (8 elements per thread
added in sequence, 5 warp-shuffle levels, 3 levels across the 8 warps; 11 in the interpreter); the partials are
added in float64 (negligible) and the result is rounded to float32 once (u). So the sum of squares is within
17 u, the loss (half of it) too, and the norm (its square root) within 8.5 u + u < 10 u.
"""

import pytest
import torch

from splatgen.sds import sds_gradient, sds_loss

U = 2.0**-24
NORM_RTOL = 10 * U
LOSS_RTOL = 17 * U
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_inputs(shape, dtype, device, seed=0, noise_dtype=None):
    g = torch.Generator().manual_seed(seed)
    B = shape[0]
    eps = torch.randn((2 * B, *shape[1:]), generator=g).to(dtype)
    noise = torch.randn(shape, generator=g).to(noise_dtype or dtype)
    weight = torch.rand(B, generator=g) * 2.0  # a different w(t) per sample (per-view timesteps)
    return eps.to(device), noise.to(device), weight.to(device)


def exact_norm(grad):
    return grad.double().pow(2).sum().sqrt()


def check_against_reference(eps, noise, weight, s, clip, **kw):
    from splatgen_kernels.sds import sds_gradient_triton

    grad, stats = sds_gradient_triton(eps, noise, weight, s, clip, **kw)
    ref, ref_stats = sds_gradient(eps, noise, weight, s, clip)
    assert grad.dtype == torch.float32 and grad.shape == noise.shape
    assert torch.equal(grad, ref), f"max diff {(grad - ref).abs().max().item()}"
    assert stats["num_nonfinite"].dtype == torch.int64 and stats["num_nonfinite"].dim() == 0
    assert int(stats["num_nonfinite"]) == int(ref_stats["num_nonfinite"])
    assert stats["grad_norm"].dtype == torch.float32 and stats["grad_norm"].dim() == 0
    true = exact_norm(ref)
    assert abs(float(stats["grad_norm"]) - float(true)) <= NORM_RTOL * float(true)
    return grad, stats


# element counts per sample: 1, 7, one block minus/plus one, several blocks not a multiple of the block
SHAPES = [(1, 1), (1, 7), (2, 2047), (2, 2049), (3, 4, 17, 19), (2, 4, 32, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_gradient_matches_reference_bitwise(device, dtype, shape, clip):
    eps, noise, weight = make_inputs(shape, dtype, device, seed=sum(shape))
    check_against_reference(eps, noise, weight, 7.5, clip)


@pytest.mark.parametrize("s", [0.0, 1.0, 100.0])
def test_guidance_scales(device, s):
    # s = 100 (DreamFusion) amplifies cond - uncond: the bitwise check covers the cancellation as well.
    eps, noise, weight = make_inputs((2, 4, 8, 8), torch.float16, device, seed=3)
    check_against_reference(eps, noise, weight, s, 0.0)


def test_per_sample_weights_scale_each_sample(device):
    from splatgen_kernels.sds import sds_gradient_triton

    eps, noise, _ = make_inputs((3, 4, 5, 5), torch.float32, device, seed=4)
    weight = torch.tensor([0.0, 1.0, -2.5], device=device)
    grad, _ = sds_gradient_triton(eps, noise, weight, 7.5)
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))
    unit, _ = sds_gradient_triton(eps, noise, torch.ones(3, device=device), 7.5)
    assert torch.equal(grad[1], unit[1])
    assert torch.equal(grad[2], -2.5 * unit[2])  # exact: w * (...) is one rounding either way
    check_against_reference(eps, noise, weight, 7.5, 0.0)


@pytest.mark.parametrize("clip", [0.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_inputs_are_zeroed_and_counted(device, dtype, clip):
    eps, noise, weight = make_inputs((2, 3, 20, 21), dtype, device, seed=5)
    M = noise[0].numel()
    e, n = eps.view(-1), noise.view(-1)
    e[0] = float("nan")  # uncond half, sample 0
    e[2 * M + 5] = float("inf")  # cond half, sample 0
    e[3 * M - 1] = float("-inf")  # cond half, sample 0, last element
    e[M + 7] = float("nan")
    n[11] = float("inf")
    n[M + 1000] = float("-inf")
    n[M + 1001] = float("nan")
    grad, stats = check_against_reference(eps, noise, weight, 7.5, clip)
    assert torch.isfinite(grad).all()
    # With clipping, +-Inf clamps to +-clip (torch.clamp) and only NaN counts; without, every one counts.
    assert int(stats["num_nonfinite"]) > 0


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's inf * 0
def test_nonfinite_weight(device):
    eps, noise, _ = make_inputs((3, 1000), torch.float32, device, seed=6)
    weight = torch.tensor([float("inf"), float("nan"), 1.0], device=device)
    # sample 0: inf * (eps_hat - noise) is +-inf (NaN where that is 0); sample 1: NaN everywhere
    grad, stats = check_against_reference(eps, noise, weight, 7.5, 0.0)
    assert int(stats["num_nonfinite"]) == 2000
    assert torch.equal(grad[:2], torch.zeros_like(grad[:2]))


def test_mixed_input_dtypes_and_noncontiguous(device):
    g = torch.Generator().manual_seed(7)
    # eps as a channels-last view, noise as a transposed fp32 view, weight in float64.
    eps = torch.randn(4, 6, 9, 4, generator=g).to(torch.bfloat16).permute(0, 3, 1, 2).to(device)
    noise = torch.randn(2, 4, 9, 6, generator=g).transpose(2, 3).to(device)
    weight = torch.rand(2, generator=g, dtype=torch.float64).to(device)
    assert not eps.is_contiguous() and not noise.is_contiguous()
    check_against_reference(eps, noise, weight, 7.5, 0.0)


def test_empty_inputs(device):
    from splatgen_kernels.sds import sds_gradient_triton, sds_loss_triton

    for shape in [(0, 4, 8, 8), (2, 0)]:
        eps, noise, weight = make_inputs(shape, torch.float16, device)
        grad, stats = sds_gradient_triton(eps, noise, weight, 7.5)
        assert grad.shape == noise.shape and grad.dtype == torch.float32
        assert float(stats["grad_norm"]) == 0.0 and int(stats["num_nonfinite"]) == 0
        x0 = torch.zeros(shape, device=device, requires_grad=True)
        loss, _ = sds_loss_triton(x0, eps, noise, weight, 7.5)
        loss.backward()
        assert float(loss.detach()) == 0.0 and x0.grad.shape == x0.shape


def test_block_size_and_repeat_determinism(device):
    from splatgen_kernels.sds import sds_gradient_triton

    eps, noise, weight = make_inputs((2, 4, 40, 40), torch.float16, device, seed=8)
    g1, s1 = sds_gradient_triton(eps, noise, weight, 7.5)
    g2, s2 = sds_gradient_triton(eps, noise, weight, 7.5)
    assert torch.equal(g1, g2) and torch.equal(s1["grad_norm"], s2["grad_norm"])  # no atomics: deterministic
    g3, _ = sds_gradient_triton(eps, noise, weight, 7.5, block_size=512, num_warps=4)
    assert torch.equal(g1, g3)


def test_shape_errors(device):
    from splatgen_kernels.sds import sds_gradient_triton, sds_loss_triton

    eps, noise, weight = make_inputs((2, 3, 4), torch.float32, device)
    with pytest.raises(ValueError, match=r"\[2B"):
        sds_gradient_triton(eps[:3], noise, weight, 7.5)
    with pytest.raises(ValueError, match="one value per sample"):
        sds_gradient_triton(eps, noise, weight[:1], 7.5)
    with pytest.raises(ValueError, match="same shape"):
        sds_loss_triton(torch.zeros(2, 3, 5, device=device), eps, noise, weight, 7.5)


@pytest.mark.parametrize("x_dtype", DTYPES)
def test_loss_gradient_is_the_sds_gradient(device, x_dtype):
    from splatgen_kernels.sds import sds_loss_triton

    eps, noise, weight = make_inputs((2, 4, 16, 17), torch.float16, device, seed=9)
    eps.view(-1)[3] = float("nan")
    x0 = torch.randn(noise.shape, generator=torch.Generator().manual_seed(1)).to(device, x_dtype).requires_grad_(True)
    loss, stats = sds_loss_triton(x0, eps, noise, weight, 7.5, 0.0)
    ref_grad, _ = sds_gradient(eps, noise, weight, 7.5)
    assert loss.dtype == torch.float32 and loss.dim() == 0 and loss.requires_grad
    assert not stats["grad_norm"].requires_grad
    (3.0 * loss).backward()
    # d(3 loss)/dx0 = 3 * grad, one float32 rounding then the cast to x0's dtype, exactly as torch does it.
    assert x0.grad.dtype == x_dtype
    assert torch.equal(x0.grad, (3.0 * ref_grad).to(x_dtype))
    # Value: 0.5 ||grad||^2, within the reduction bound of the module docstring.
    true = 0.5 * ref_grad.double().pow(2).sum()
    assert abs(float(loss.detach()) - float(true)) <= LOSS_RTOL * float(true)


def test_loss_matches_reference_loss(device):
    """The reference loss ``0.5 ||x0 - stopgrad(x0 - grad)||^2`` carries the rounding of ``x0 - (x0 - grad)``:
    per element |error| <= u (|x0 - grad| + |grad|) + O(u^2). The fused loss has none of it, so it is *closer*
    to the exact gradient; the two agree within that bound."""
    from splatgen_kernels.sds import sds_loss_triton

    eps, noise, weight = make_inputs((2, 4, 16, 16), torch.float32, device, seed=10)
    x0 = torch.randn(noise.shape, generator=torch.Generator().manual_seed(2)).to(device).requires_grad_(True)
    x1 = x0.detach().clone().requires_grad_(True)
    loss, _ = sds_loss_triton(x0, eps, noise, weight, 7.5)
    loss.backward()
    grad, _ = sds_gradient(eps, noise, weight, 7.5)
    ref_loss = sds_loss(x1, grad)
    ref_loss.backward()
    bound = 2 * U * ((x1.detach() - grad).abs() + grad.abs())
    assert ((x1.grad - x0.grad).abs() <= bound).all()
    loss_bound = float((grad.double().abs() * bound.double()).sum()) + LOSS_RTOL * float(loss.detach())
    assert abs(float(loss.detach()) - float(ref_loss.detach())) <= loss_bound


def test_large_guidance_fp16_matches(device):
    # The DreamFusion setting (s = 100, fp16 UNet output, fp32 noise), at an SD latent shape.
    eps, _, weight = make_inputs((1, 4, 64, 64), torch.float16, device, seed=11)
    noise = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(12)).to(device)
    check_against_reference(eps, noise, weight, 100.0, 0.0)
