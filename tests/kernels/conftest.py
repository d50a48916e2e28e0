"""Shared setup of the kernel tests.

On a machine without CUDA the Triton kernels run in Triton's interpreter, which must be chosen before the
kernel modules are imported (``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` first; repeated here for runs
that point pytest at this folder with another rootdir). With CUDA the same tests run the compiled kernels on
the GPU, at the same small sizes; ``test_kernels_gpu.py`` adds the large ones.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from _paths import ensure_kernels_importable  # noqa: E402

ensure_kernels_importable()


def kernel_device() -> str:
    """'cuda' for compiled kernels, 'cpu' under the interpreter; skips when neither can run."""
    pytest.importorskip("triton")
    from splatgen_kernels._utils import is_interpreted
    from splatgen_kernels.sds import _sds_grad_kernel

    if is_interpreted(_sds_grad_kernel):
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip(
        "Triton was imported without TRITON_INTERPRET=1 on a machine without CUDA, so its kernels cannot run; "
        "run pytest from the repository root (tests/conftest.py sets it) or export TRITON_INTERPRET=1"
    )


@pytest.fixture
def device() -> str:
    return kernel_device()
