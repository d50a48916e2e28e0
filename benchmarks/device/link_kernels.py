"""Make ``import splatgen_kernels`` find the repository's ``triton_kernels/`` folder without installing.

An editable install maps the folder to that import name (pyproject.toml, package-dir); on the GPU machine we
run from a plain checkout, so write a one-line shim package into the given site folder.
"""

import sys
from pathlib import Path

site = Path(sys.argv[1])
repo = Path(__file__).resolve().parents[2]
pkg = site / "splatgen_kernels"
pkg.mkdir(parents=True, exist_ok=True)
(pkg / "__init__.py").write_text(
    f"__path__ = [{str(repo / 'triton_kernels')!r}]\n"
    f"exec(compile(open(__path__[0] + '/__init__.py').read(), __path__[0] + '/__init__.py', 'exec'))\n"
)
