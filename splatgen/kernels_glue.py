"""The trainer's door to the two hot paths: the SDS gradient and densification, in PyTorch or Triton.

``backend`` is ``"torch"`` (the references in :mod:`splatgen.sds` and :mod:`splatgen.densify`) or
``"triton"`` (the kernels in ``splatgen_kernels``, a top-level package that imports nothing from splatgen).
:func:`resolve_kernel_backend` turns the config value (``densify.backend``: 'auto', 'torch' or 'triton') into
one of them once; the other functions dispatch on it with a plain ``if``. Triton is imported only when the
Triton backend is actually used, so importing this module stays cheap and works without Triton.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .errors import ConfigError

BACKENDS = ("auto", "torch", "triton")


def _triton_importable() -> bool:
    """Whether ``import triton`` works (imports it: call only where Triton is about to be used)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install (e.g. a driver mismatch) must not stop a run that can use torch
        return False
    return True


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def sds_backend_available(device: Union[torch.device, str]) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA with Triton installed, or any device under
    Triton's interpreter (``TRITON_INTERPRET=1``, slow: for tests)."""
    if torch.device(device).type != "cuda" and not _interpreter_requested():
        return False
    return _triton_importable()


def resolve_kernel_backend(name: str, device: Union[torch.device, str]) -> str:
    """'auto' -> 'triton' on CUDA when Triton is installed, else 'torch'; 'torch' and 'triton' as asked.

    Raises:
        ConfigError: ``name`` is not one of 'auto', 'torch', 'triton', or 'triton' was asked for where the
            kernels cannot run.
    """
    device = torch.device(device)
    if name not in BACKENDS:
        raise ConfigError(f"kernel backend {name!r} is not allowed; choose one of {list(BACKENDS)}")
    if name == "torch":
        return "torch"
    if name == "auto":
        return "triton" if device.type == "cuda" and _triton_importable() else "torch"  # short-circuit: no import on CPU
    if device.type != "cuda" and not _interpreter_requested():
        raise ConfigError(
            f"densify.backend='triton' needs a CUDA device but the run is on {device}; use 'auto' or 'torch' "
            "(or set TRITON_INTERPRET=1 before starting Python to run the kernels in Triton's slow interpreter)"
        )
    if not _triton_importable():
        raise ConfigError("densify.backend='triton' needs the triton package; install it or use 'torch' / 'auto'")
    return "triton"


def sds_loss(
    backend: str,
    x0: Tensor,
    eps_pred: Tensor,
    noise: Tensor,
    weight: Tensor,
    guidance_scale: float,
    grad_clip: float = 0.0,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """SDS loss on the rendered latents / pixels ``x0`` [B, ...] whose gradient is the SDS gradient.

    Args:
        eps_pred: [2B, ...] UNet prediction (unconditional half first). noise: [B, ...]. weight: [B] w(t).

    Returns:
        ``(loss, stats)``: ``loss`` a 0-dim float32 tensor (0.5 ||grad||^2), ``stats`` with ``grad_norm`` and
        ``num_nonfinite`` as 0-dim tensors on the device (nothing is synchronised).
    """
    if backend == "triton":
        from splatgen_kernels.sds import sds_loss_triton

        return sds_loss_triton(x0, eps_pred, noise, weight, guidance_scale, grad_clip)
    assert backend == "torch", f"unresolved kernel backend {backend!r}"
    from . import sds

    grad, stats = sds.sds_gradient(eps_pred, noise, weight, guidance_scale, grad_clip)
    return sds.sds_loss(x0, grad), stats


def accumulate_stats(backend: str, stats, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
    """Add one step's densification statistics to ``stats`` (a ``DensifyStats``) in place.

    means2d_grad: [B, N, 2] (pixels); radii: [B, N], 0 where not visible.
    """
    if backend == "triton":
        from splatgen_kernels.densify import accumulate_stats_triton

        accumulate_stats_triton(stats.grad2d_sum, stats.count, stats.max_radii, means2d_grad, radii, width, height)
        return
    assert backend == "torch", f"unresolved kernel backend {backend!r}"
    from .densify import accumulate_stats as reference

    reference(stats, means2d_grad, radii, width, height)


def densify_step(
    backend: str, model, stats, params, generator_or_seed: Optional[Union[torch.Generator, int]] = None
) -> Dict[str, int]:
    """One densification step (decide, then clone / split / prune with the optimizer state).

    ``generator_or_seed`` drives the split children's samples: the reference draws them from a CPU
    generator; the Triton kernel takes an int seed, drawn here from the generator so a run stays reproducible.
    Returns ``{"cloned", "split", "pruned", "total"}``.
    """
    if backend == "triton":
        from splatgen_kernels.densify import densify_step_triton

        if isinstance(generator_or_seed, torch.Generator):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator_or_seed))
        elif generator_or_seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        else:
            seed = int(generator_or_seed)
        return densify_step_triton(model, stats, params, seed)
    assert backend == "torch", f"unresolved kernel backend {backend!r}"
    from .densify import densify_step as reference

    gen = generator_or_seed
    if gen is not None and not isinstance(gen, torch.Generator):
        gen = torch.Generator().manual_seed(int(gen))
    return reference(model, stats, params, gen)
