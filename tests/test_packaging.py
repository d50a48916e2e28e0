"""The wheel holds every part of the package: ``pyproject.toml`` lists its packages by hand (the repository's
folders are mapped to other import names), so a new subpackage that is not listed would be left out of the wheel
and an installed splatgen would fail to import it, while the editable checkout works."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info < (3, 11):  # pragma: no cover - tomllib is 3.11+
    pytest.skip("tomllib needs Python 3.11", allow_module_level=True)
import tomllib  # noqa: E402


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _import_name(folder: Path, package_dir: dict) -> str:
    """The import name a repository folder installs as, through ``package-dir``."""
    rel = folder.relative_to(ROOT).as_posix()
    for name, src in sorted(package_dir.items(), key=lambda kv: -len(kv[1])):
        if rel == src or rel.startswith(src + "/"):
            return (name + rel[len(src):].replace("/", ".")).rstrip(".")
    raise AssertionError(f"{rel} is under no package-dir entry")


def test_every_folder_of_python_or_data_is_a_listed_package():
    st = _setuptools()
    listed, package_dir = set(st["packages"]), st["package-dir"]
    wanted = set()
    for src in package_dir.values():
        for folder in [ROOT / src, *(p for p in (ROOT / src).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts or folder.name.startswith("."):
                continue
            if any(f.is_file() and not f.name.endswith(".pyc") for f in folder.iterdir()):
                wanted.add(_import_name(folder, package_dir))
    missing = sorted(wanted - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml (the wheel leaves them out): {missing}"
    folders = {_import_name(p, package_dir) for src in package_dir.values()
               for p in [ROOT / src, *(q for q in (ROOT / src).rglob("*") if q.is_dir())]}
    assert not sorted(listed - folders), "packages listed in pyproject.toml that have no folder"


def test_folders_map_to_their_import_names():
    """The mapping the check above relies on (a repository folder -> the name it installs as)."""
    st = _setuptools()
    wanted = {_import_name(ROOT / "splatgen" / "representation", st["package-dir"])}
    assert wanted == {"splatgen.representation"}
    assert _import_name(ROOT / "triton_kernels", st["package-dir"]) == "splatgen_kernels"
    assert _import_name(ROOT / "configs", st["package-dir"]) == "splatgen.configs"
