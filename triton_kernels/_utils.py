"""Small helpers shared by the kernel files (no kernels here).

Triton compiles kernels for CUDA; on a machine without a GPU it can only run them through its interpreter,
which is chosen when ``@triton.jit`` decorates a function (``TRITON_INTERPRET=1`` must be set before the kernel
modules are imported). :func:`check_launchable` turns the obscure failure of a compiled kernel handed CPU
tensors into a message that says what to do.
"""

from __future__ import annotations

from torch import Tensor


def is_interpreted(kernel) -> bool:
    """True when ``kernel`` was decorated under ``TRITON_INTERPRET=1`` (runs on CPU tensors)."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_launchable(kernel, *tensors: Tensor) -> None:
    """Raise a clear ``RuntimeError`` when ``kernel`` cannot run on the devices of ``tensors``."""
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise RuntimeError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type == "cpu" and not is_interpreted(kernel):
        raise RuntimeError(
            "the Triton kernels need CUDA tensors; on a CPU-only machine set TRITON_INTERPRET=1 before "
            "splatgen_kernels (or triton) is imported to run them in Triton's interpreter"
        )


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()
