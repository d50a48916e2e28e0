"""The package's layers import only downward (docs/DESIGN.md draws them), and no module imports itself
through others. Read from the source with :mod:`ast`, function-local imports included: a lazy import that
points upward is still a back edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "splatgen"

#: bottom to top; a module may import its own layer and the layers below it.
LAYERS: List[tuple[str, Set[str]]] = [
    ("foundation", {"errors", "config", "cameras", "resources", "fileio", "configs"}),
    ("model and ops", {"gaussians", "render", "sds", "densify", "schedules", "kernels_glue", "nerf"}),
    ("guidance and representations", {"guidance", "representation"}),
    ("trainer", {"trainer"}),
    ("run folder and exporters", {"rundir", "export"}),
    ("known-answer world", {"world"}),
    ("bundled prior", {"prior"}),
    ("wiring: API and command line", {"components", "api", "batch", "cli", "viewer", "studio", "__init__", "__main__"}),
]
LAYER_OF: Dict[str, int] = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def _modules() -> Dict[str, Path]:
    """Dotted name -> file for every module of the package."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The splatgen modules ``name`` imports (anywhere in the file), as dotted names."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import submodule` imports the submodule; `from mod import name` the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = sorted({_component(m) for m in _modules()} - set(LAYER_OF))
    assert not missing, f"put these modules in a layer of tests/test_layers.py (and docs/DESIGN.md): {missing}"


def test_imports_point_only_downward():
    back_edges = []
    for module, targets in _graph().items():
        for target in targets:
            lo, hi = LAYER_OF.get(_component(module)), LAYER_OF.get(_component(target))
            if lo is not None and hi is not None and hi > lo:
                back_edges.append(f"{module} ({LAYERS[lo][0]}) imports {target} ({LAYERS[hi][0]})")
    assert not back_edges, "imports against the layers:\n" + "\n".join(sorted(back_edges))


def test_no_import_cycles():
    graph = _graph()
    # Package __init__ files that re-export their submodules are not cycles: a submodule importing a sibling
    # through the package is. Drop the package -> own-submodule edges before searching.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _top_level_imports(path: Path) -> Set[str]:
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_kernels_the_package_and_the_tooling_stay_apart():
    """``triton_kernels/`` imports nothing of splatgen; the installed package imports none of the repository's
    tooling (the prior's training code, tests, benchmarks), which a wheel does not carry."""
    for path in (ROOT / "triton_kernels").rglob("*.py"):
        assert "splatgen" not in _top_level_imports(path), f"{path} imports splatgen"
    for path in PKG.rglob("*.py"):
        bad = _top_level_imports(path) & {"prior_training", "tests", "benchmarks", "common"}
        assert not bad, f"{path} imports {bad}, which is not installed with the package"


def test_light_imports():
    """``import splatgen`` (the CLI's first import) loads no torch; the world's grammar loads no guidance."""
    code = (
        "import sys, splatgen; assert 'torch' not in sys.modules, 'splatgen imports torch';"
        "import splatgen.world.grammar;"
        "bad = [m for m in ('splatgen.guidance', 'diffusers', 'splatgen.trainer') if m in sys.modules];"
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
