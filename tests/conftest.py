"""Test-wide setup that must run before anything imports Triton.

Triton chooses between compiling a kernel and interpreting it when ``@triton.jit`` decorates it, from the
environment variable ``TRITON_INTERPRET``. Without a GPU the kernels in ``splatgen_kernels`` can only run in
the interpreter, so set it here, before any test module is imported. With a GPU it is left alone so the
kernel tests exercise the compiled kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
