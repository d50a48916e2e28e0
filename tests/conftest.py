"""Test-wide setup that must run before anything imports Triton (and where the tests keep their caches).

Triton chooses between compiling a kernel and interpreting it when ``@triton.jit`` decorates it, from the
environment variable ``TRITON_INTERPRET``. Without a GPU the kernels in ``splatgen_kernels`` can only run in
the interpreter, so set it here, before any test module is imported. With a GPU it is left alone so the
kernel tests exercise the compiled kernels.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The evaluator's on-disk caption cache (splatgen.world.clip_eval_cache) goes to a folder of this test session,
# never to the user's cache folder; subprocesses inherit it. A test that wants its own sets the variable itself.
if "SPLATGEN_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SPLATGEN_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="splatgen-test-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
