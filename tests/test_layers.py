"""The import graph of our packages: every module in one layer, imports only downwards or within a layer, no circle.

``LAYERS`` is where the layers are written down (docs/api.md, "Layout", points here). Imports are read from the source
(every ``import`` statement, those inside functions too), so a lazy import cannot hide an arrow; the framework
packages are reached from ``shared`` only through ``shared.frameworks``' loader, by name, which is no import.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "pytorch_impl", "tensorflow_impl", "jax_impl")

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors and the version", ("shared.errors", "shared.version")),
    ("model description", ("shared.spec", "shared.recipe", "shared.datasets", "shared.preprocessing")),
    ("weights", ("shared.weights", "shared.infer")),
    ("parity rule and report data", ("shared.parity.rule", "shared.parity.report")),
    ("framework seam: the Protocols, the one loader, replica launch",
     ("shared.contract", "shared.frameworks", "shared.parallel")),
    ("file formats", ("shared.checkpoint", "shared.checkpoint.*", "shared.libraries", "shared.libraries.*")),
    ("frameworks", ("pytorch_impl", "pytorch_impl.*", "tensorflow_impl", "tensorflow_impl.*", "jax_impl", "jax_impl.*")),
    ("orchestration", ("shared.convert", "shared.train", "shared.summary", "shared.bench", "shared.parity",
                       "shared.parity.inputs", "shared.parity.floor", "shared.parity.eval", "shared.parity.steps",
                       "shared.parity.training", "shared.parity.lockstep", "shared.parity.image")),
    ("rendering: the command line and the pytest helper", ("shared.cli", "shared.cli.*", "shared.testing")),
    ("the package's public names", ("shared",)),
]


def modules() -> dict[str, Path]:
    """Every module of our packages by dotted name (a package by its own name, from its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ours (``known``) that module ``name`` imports anywhere in its ``source``."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b` names the module a.b where there is one, else a's attribute b
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a module of ours below a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def layer_of(name: str) -> int:
    matches = [i for i, (_, patterns) in enumerate(LAYERS) if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    # an exact name wins over a pattern: shared.parity.rule sits below the shared.parity package that re-exports it
    exact = [i for i, (_, patterns) in enumerate(LAYERS) if name in patterns]
    return (exact or matches or [-1])[0]


GRAPH = {name: imports(name, path.read_text(), path.name == "__init__.py", set(modules()))
         for name, path in modules().items()}


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer to a higher one."""
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_every_module_has_one_layer():
    for name in GRAPH:
        exact = [label for label, patterns in LAYERS if name in patterns]
        matches = [label for label, patterns in LAYERS if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        assert len(exact) == 1 or (not exact and len(matches) == 1), f"{name}: layers {exact or matches}"


def test_no_import_goes_up_a_layer():
    found = upward(GRAPH)
    assert not found, "imports from a lower layer to a higher one:\n" + "\n".join(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert cycles(GRAPH) == []


def test_shared_never_imports_a_framework_package():
    frameworks = [f"{a} -> {b}" for a, targets in GRAPH.items() if a.split(".")[0] == "shared"
                  for b in targets if b.split(".")[0] != "shared"]
    assert not frameworks, frameworks


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_check_can_fail(graph, expected):
    assert cycles(graph) == expected


def test_the_layer_check_can_fail():
    """A lazy import inside a function is an import: the upward arrow parity.py once had (the rule's module
    reaching into training orchestration for ``fact_of``) is found."""
    lazy = "def rows():\n    from .training import fact_of\n"
    graph = {"shared.parity.report": imports("shared.parity.report", lazy, False, set(modules()))}
    assert graph["shared.parity.report"] == {"shared.parity.training"}
    assert upward(graph) == ["shared.parity.report (parity rule and report data) -> shared.parity.training (orchestration)"]
