"""The package's layers import only downward (docs/DESIGN.md draws them), and no module imports itself
through others. Read from the source with :mod:`ast`, function-local imports included: a lazy import that
points upward is still a back edge. Inside a layer the components are ordered too, and a component imports
only those listed before it (``render`` draws Gaussians and knows nothing of the NeRF). Dynamic imports
(``importlib.import_module``, ``__import__``) are followed like the others; one whose target the test cannot
read is refused.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "splatgen"

#: bottom to top, and inside each layer bottom to top: a component imports its own modules, the components
#: listed before it in its layer and the layers below.
LAYERS: List[Tuple[str, List[str]]] = [
    ("foundation", ["errors", "resources", "configs", "cameras", "fileio", "config", "devices"]),
    ("model and ops", ["sds", "schedules", "gaussians", "render", "densify", "kernels_glue", "nerf"]),
    ("guidance and representations", ["guidance", "representation"]),
    ("trainer", ["trainer"]),
    ("run folder and exporters", ["export", "rundir"]),
    ("known-answer world", ["world"]),
    ("bundled prior", ["prior"]),
    ("wiring: API and command line", ["viewer", "components", "api", "batch", "studio", "__init__", "cli",
                                      "__main__"]),
]
#: component -> (layer, place in the layer): a component imports only what sorts before it.
PLACE: Dict[str, Tuple[int, int]] = {name: (i, j) for i, (_, names) in enumerate(LAYERS) for j, name in enumerate(names)}
LAYER_OF: Dict[str, int] = {name: i for name, (i, _) in PLACE.items()}
#: the calls that import a module named by a value: followed when the name can be read from the source.
DYNAMIC_IMPORTS = {"import_module", "__import__"}


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
    """The splatgen modules ``name`` imports (anywhere in the file, dynamic imports included), as dotted names."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(), str(path))
    found: Set[str] = set()
    targets = [_relative(package, n) for n in _dynamic_imports(tree)[0]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _relative(package, "." * node.level + (node.module or "")) if node.level else node.module or ""
            # `from pkg import submodule` imports the submodule; `from mod import name` the module
            targets += [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
    for t in targets:
        while t and t not in known:
            t = t.rsplit(".", 1)[0] if "." in t else ""
        if t and t != name:
            found.add(t)
    return found


def _relative(package: str, target: str) -> str:
    """``target`` (``.x``, ``..x``, or absolute) as seen from ``package``, as Python resolves it."""
    level = len(target) - len(target.lstrip("."))
    if not level:
        return target
    base = package.split(".")
    return ".".join(base[: len(base) - (level - 1)] + ([target[level:]] if target[level:] else []))


def _dynamic_imports(tree: ast.Module) -> Tuple[List[str], List[int]]:
    """The module names the dynamic imports of a file load, where the source says them: a string, or the
    string values of a module-level dict the call indexes (``import_module(_LAZY[name], __name__)``, the lazy
    attributes of :mod:`splatgen.world`); and the lines of the dynamic imports whose target it does not say."""
    tables: Dict[str, List[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            values = [v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if len(values) == len(node.value.values):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(t, ast.Name):
                        tables[t.id] = values
    names: List[str] = []
    unread: List[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if called not in DYNAMIC_IMPORTS:
            continue
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.append(arg.value)
        elif isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name) and arg.value.id in tables:
            names += tables[arg.value.id]
        else:
            unread.append(node.lineno)
    return names, unread


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = sorted({_component(m) for m in _modules()} - set(LAYER_OF))
    assert not missing, f"put these modules in a layer of tests/test_layers.py (and docs/DESIGN.md): {missing}"


def _against_the_layers(graph: Dict[str, Set[str]]) -> List[str]:
    """The imports of ``graph`` that point up: to a higher layer, or to a component after it in its layer."""
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            a, b = _component(module), _component(target)
            if a in PLACE and b in PLACE and a != b and PLACE[b] > PLACE[a]:
                where = (f"after {a} in the layer {LAYERS[PLACE[a][0]][0]!r}" if LAYER_OF[a] == LAYER_OF[b]
                         else f"in {LAYERS[LAYER_OF[b]][0]!r}, above {LAYERS[LAYER_OF[a]][0]!r}")
                wrong.append(f"{module} imports {target} ({b} is {where})")
    return sorted(wrong)


def test_the_design_notes_draw_these_layers():
    """docs/DESIGN.md's drawing names every component (``name.py``, ``name/``, or a name before its column of
    notes) in the order of :data:`LAYERS`: the top layer first, each layer's components bottom to top."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    drawing = text.split("## Layers", 1)[1].split("```")[1]
    named = re.findall(r"(?<![\w.])([a-z_]+)(?:\.py|/| {2})", drawing)
    order = list(dict.fromkeys(n for n in named if n in PLACE))
    expected = [c for _, names in reversed(LAYERS) for c in names if (PKG / c).is_dir() or (PKG / f"{c}.py").is_file()]
    assert order == expected, f"docs/DESIGN.md draws {order}, tests/test_layers.py orders {expected}"


def test_imports_point_only_downward():
    wrong = _against_the_layers(_graph())
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import_inside_a_layer():
    """``render`` importing ``nerf`` (same layer, listed after it) and ``api`` importing ``cli`` are refused;
    ``nerf`` importing ``render`` and ``cli`` importing ``api`` are not."""
    assert len(_against_the_layers({"splatgen.render.torch_backend": {"splatgen.nerf.field"},
                                    "splatgen.api": {"splatgen.cli"}})) == 2
    assert not _against_the_layers({"splatgen.nerf.field": {"splatgen.render"}, "splatgen.cli": {"splatgen.api"}})


def test_dynamic_imports_are_followed(tmp_path):
    known = set(_modules())
    # The world's lazy attributes (import_module(_LAZY[name], __name__)) are edges like any import.
    assert {"splatgen.world.oracle", "splatgen.world.metrics", "splatgen.world.raycast"} <= \
        _imports("splatgen.world", PKG / "world" / "__init__.py", known)
    src = tmp_path / "torch_backend.py"
    src.write_text("import importlib\n\ndef f():\n    importlib.import_module('..nerf.field', __package__)\n"
                   "    return __import__('splatgen.trainer')\n")
    found = _imports("splatgen.render.torch_backend", src, known)
    assert {"splatgen.trainer", "splatgen.nerf.field"} <= found
    assert len(_against_the_layers({"splatgen.render.torch_backend": found})) == 2


def test_every_dynamic_import_names_its_target():
    """A dynamic import whose target the source does not say would hide an edge from these tests."""
    unread = {str(p.relative_to(ROOT)): lines for p in sorted(PKG.rglob("*.py"))
              if (lines := _dynamic_imports(ast.parse(p.read_text()))[1])}
    assert not unread, f"dynamic imports of a computed name (give it as a string, or a dict of strings): {unread}"
    code = "import importlib\nname = 'splatgen.' + 'api'\nimportlib.import_module(name)\n"
    assert _dynamic_imports(ast.parse(code)) == ([], [3])


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
