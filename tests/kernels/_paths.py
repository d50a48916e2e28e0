"""Make ``splatgen_kernels`` importable from a plain checkout (no ``pip install -e .``, e.g. the GPU machine).

The kernels live in ``triton_kernels/`` and are *installed* under the name ``splatgen_kernels`` (pyproject
``package-dir``); without the install, register the folder under that name. Also puts the repository root on
``sys.path`` for ``splatgen`` itself.
"""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ensure_kernels_importable() -> None:
    if importlib.util.find_spec("splatgen") is None:
        sys.path.insert(0, str(ROOT))
    if importlib.util.find_spec("splatgen_kernels") is None:
        spec = importlib.util.spec_from_file_location(
            "splatgen_kernels", ROOT / "triton_kernels" / "__init__.py", submodule_search_locations=[str(ROOT / "triton_kernels")]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["splatgen_kernels"] = module
        spec.loader.exec_module(module)
