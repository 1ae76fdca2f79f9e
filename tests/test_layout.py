"""The package layout shows the architecture (issue 14): ``sim`` is the simulation core and
never imports the command line or the studies (``dynosim``), the environments
(``dynosim_gym``) or the agents; and no package has an import circle, counting imports made
inside functions (a lazy import still ties two modules together).

The graph is read from the source with :mod:`ast`, so the test needs no optional dependency;
imports under ``if TYPE_CHECKING:`` are ignored (they never run).
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "dynosim", "dynosim_gym", "agents")
# what each package may import among ours (the architecture, top to bottom)
ALLOWED = {"sim": {"sim"},
           "dynosim_gym": {"sim", "dynosim_gym"},
           "agents": {"sim", "dynosim_gym", "agents", "dynosim"},
           "dynosim": {"sim", "dynosim", "dynosim_gym", "agents"}}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """Our modules that ``name`` imports anywhere in its body (parents' ``__init__`` too)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    pkg = base[:len(base) - (child.level - 1)]
                    mod = ".".join(pkg + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in child.names)   # `from . import x`
            visit(child)
    visit(tree)
    ours: set[str] = set()
    for mod in found:
        while mod and mod not in MODULES:      # `from pkg.mod import attr` -> pkg.mod
            mod = mod.rpartition(".")[0]
        while mod:                            # importing a.b.c runs a and a.b first
            if mod != name:
                ours.add(mod)
            mod = mod.rpartition(".")[0]
    return {m for m in ours if not name.startswith(m + ".") or m == name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_graph_is_read():
    """A test that can fail: the reader finds known edges (lazy and relative ones too)."""
    assert "sim.simulator" in GRAPH["sim.config"]
    assert "sim.engines.vllm" in GRAPH["sim.engine"]          # imported inside a function
    assert "sim.engines.base" in GRAPH["sim.engines.vllm"]    # `from .base import ...`


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_import_circles(pkg):
    sub = {m: {d for d in deps if d.split(".")[0] == pkg}
           for m, deps in GRAPH.items() if m.split(".")[0] == pkg}
    try:
        tuple(graphlib.TopologicalSorter(sub).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle in {pkg}: {' -> '.join(exc.args[1])}")


def test_no_circles_across_packages():
    try:
        tuple(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_layers(name):
    """The core never imports the CLI, the studies, the envs or the agents."""
    pkg = name.split(".")[0]
    bad = sorted(d for d in GRAPH[name] if d.split(".")[0] not in ALLOWED[pkg])
    assert not bad, f"{name} imports {bad}"
