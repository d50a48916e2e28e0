"""Load a gsplat CUDA extension built in an earlier call, so gsplat skips its JIT build.

gsplat first tries ``from gsplat import csrc``; registering the prebuilt module under that name makes the
import succeed. Used only on the GPU machine, when GSPLAT_PREBUILT_SO is set (benchmarks/device/setup.sh).
"""

import os

_so = os.environ.get("GSPLAT_PREBUILT_SO")
if _so and os.path.isfile(_so):
    import importlib.util
    import sys

    import torch  # noqa: F401  (the extension links against libtorch)

    _spec = importlib.util.spec_from_file_location("gsplat_cuda", _so)
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    sys.modules["gsplat.csrc"] = _mod
