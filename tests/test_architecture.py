"""The package's shape: imports point down the layers, never in a circle; modules and functions stay small.

Imports are read from the source: every `import`, inside functions too, so a cycle closed through a late
import is caught like any other. Importing `a.b.c` also runs `a/b/__init__.py`: that counts as importing what
the package imports when it loads (its top-level imports), while what it re-exports lazily (a module
`__getattr__`, PEP 562, and the modules it names for `import_module`) counts only for code that imports the
package itself.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lepton_ai"

# Lowest first: a module may import its own layer or one below, never one above.
LAYERS: tuple[frozenset[str], ...] = (
    # foundations every layer uses
    frozenset({"errors", "version", "config", "machine", "device", "cluster", "lazy"}),
    # storage: the registry and the artifact store
    frozenset({"store"}),
    # data sets, their checks and batching
    frozenset({"data"}),
    # compute (models, training, privacy, compression) and network (serving, its client), side by side
    frozenset({"models", "train", "privacy", "ssl", "explain", "compress", "serve", "client"}),
    # management: the scheduler, deployment beyond one machine, and the command line over all of it
    frozenset({"jobs"}),
    frozenset({"deploy"}),
    # the control plane: the REST API and dashboard over all of the above
    frozenset({"control"}),
    frozenset({"cli"}),
)
MAX_MODULE_LINES = 500
# The node of a package's top-level imports: what importing one of its modules runs.
LOADING = ":loading"
# Lines of a function's body (its signature and docstring aside: a typer command declares its options there).
MAX_BODY_LINES = 80


class Module(NamedTuple):
    """One module of the package: its dotted name, file, and whether it is a package's __init__."""

    name: str
    path: Path
    is_package: bool


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


MODULES = _modules()


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: Module, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
        ]
    for name in names:
        known = _known(name)
        if known is None:
            continue
        yield known
        # importing a.b.c runs a/b/__init__ first (its top-level imports), unless the importer lives in a.b
        parts = known.split(".")
        packages = (".".join(parts[:i]) for i in range(1, len(parts)))
        yield from (p + LOADING for p in packages if not module.name.startswith(p + "."))


def _graph() -> dict[str, set[str]]:
    """Return each module's imports; a package also has a node `NAME:loading`, what loading it imports."""
    graph: dict[str, set[str]] = {}
    for module in MODULES.values():
        tree = ast.parse(module.path.read_text(), str(module.path))
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[module.name] = {t for node in imports for t in _targets(module, node) if t != module.name}
        if module.is_package:
            graph[module.name] |= _lazy_exports(module, tree)
            top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            graph[module.name + LOADING] = {t for node in top for t in _targets(module, node)}
    return graph


def _lazy_exports(package: Module, tree: ast.Module) -> set[str]:
    """Return the modules a package's `__init__` names as strings (what `import_module` loads lazily)."""
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return {
        m
        for name in names
        # absolute ("lepton_ai.train.job"), or relative to the package (".federated", or "federated")
        for m in (name, f"{package.name}.{name.lstrip('.')}")
        if m in MODULES and m != package.name
    }


def _layer(module: str) -> int:
    parts = module.removesuffix(LOADING).split(".")
    if len(parts) == 1:
        # the root package: the public facade over every layer
        return len(LAYERS)
    for i, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return i
    raise AssertionError(f"{module} is in no layer: add lepton_ai.{parts[1]} to LAYERS in {__file__}")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    described = [
        " <-> ".join(c) + ": " + ", ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in _cycles(graph)
    ]
    assert not described, "import cycles:\n" + "\n".join(described)


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, targets in sorted(_graph().items())
        for b in sorted(targets)
        if _layer(b) > _layer(a)
    ]
    assert not upward, "imports that reach up a layer:\n" + "\n".join(upward)


def test_the_checker_sees_late_and_package_imports() -> None:
    graph = _graph()
    # a late import inside a function counts, as does the package __init__ a submodule import runs
    assert "lepton_ai.store" in graph["lepton_ai.models.lepton_model"]
    assert {"lepton_ai.store:loading", "lepton_ai.store.db"} <= graph["lepton_ai.jobs.queue"]
    assert "lepton_ai.store.registry" in graph["lepton_ai.store:loading"]
    # a lazy re-export (here by name, for import_module) is the package's, not what loading it runs
    assert "lepton_ai.train.job" in graph["lepton_ai.train"]
    assert "lepton_ai.privacy.federated" in graph["lepton_ai.privacy"]
    assert "lepton_ai.train.job" not in graph["lepton_ai.train:loading"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_stay_small() -> None:
    long = [
        f"{m.path.relative_to(PACKAGE.parent)}: {n} lines"
        for m in MODULES.values()
        if (n := len(m.path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = fn.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
        body = body[1:]
    return (fn.end_lineno or fn.lineno) - body[0].lineno + 1


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_functions_stay_short(module: str) -> None:
    tree = ast.parse(MODULES[module].path.read_text())
    long = [
        f"{fn.name} (line {fn.lineno}): {n} lines"
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n := _body_lines(fn)) > MAX_BODY_LINES
    ]
    assert not long, f"functions in {module} over {MAX_BODY_LINES} lines:\n" + "\n".join(long)
