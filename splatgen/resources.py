"""Where the files that ship inside the package are: the bundled YAML configs and the bundled prior.

Both are found through :mod:`importlib.resources`, so they are found the same way in an editable checkout,
an installed wheel or a zip: the configs are the package ``splatgen.configs`` (the repository's ``configs/``
folder, mapped there by ``pyproject.toml``), the prior lives in ``splatgen/assets/prior``. A checkout that is
not installed at all (put on ``PYTHONPATH``, as the GPU machine's scripts do) has no ``splatgen.configs``;
there the repository's ``configs/`` folder beside the package is read instead.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import List, Optional

CONFIG_PACKAGE = "splatgen.configs"


def _config_root():  # a Traversable (a Path for the fallback)
    try:
        return resources.files(CONFIG_PACKAGE)
    except ModuleNotFoundError:  # a plain checkout on PYTHONPATH, not installed
        return Path(__file__).resolve().parent.parent / "configs"


def config_names() -> List[str]:
    """Names of the bundled configs (``default``, ``sd21``, ...), sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _config_root().iterdir() if p.name.endswith(".yaml"))


def bundled_config_text(name: str) -> Optional[str]:
    """The YAML text of a bundled config by name (with or without ``.yaml``), or None if there is none."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if "/" in stem or "\\" in stem or stem not in config_names():
        return None
    return (_config_root() / f"{stem}.yaml").read_text(encoding="utf-8")


def bundled_prior_path() -> Path:
    """``splatgen/assets/prior`` inside the installed package (it may not exist in a stripped install)."""
    return Path(str(resources.files("splatgen"))) / "assets" / "prior"
