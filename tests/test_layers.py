"""The package's layers, checked by walking every import with ``ast`` (README "Layout").

A module may import its own layer and the layers below it, never one above; and no chain of
imports (module-level or inside functions) leads from a module back to itself.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. "zoo" alone is the ground: zoo/__init__.py, errors.py, fileio.py, console.py, paths.py.
LAYERS = ["zoo", "ensembles", "zoo.data", "zoo.models", "zoo.store", "zoo.evaluate", "zoo.report",
          "zoo.train", "zoo.tune", "zoo.serve", "zoo.cli"]
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py", "fileio.py", "console.py", "paths.py"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    files = [p for pkg in ("zoo", "ensembles") for p in (ROOT / pkg).rglob("*.py")]
    return {module_name(p): p for p in files}


def layer(module: str) -> int:
    if module == "zoo.__main__":
        return LAYERS.index("zoo.cli")
    return max(i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + "."))


def imports(path: Path, module: str, known: dict[str, Path]) -> set[str]:
    """Project modules that ``module`` imports (``from a import b`` counts b when it is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known and name != module}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_top_level_of_zoo_holds_only_ground_modules() -> None:
    assert {p.name for p in (ROOT / "zoo").glob("*.py")} <= TOP_LEVEL


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_lower_layer_imports_a_higher_one(module: str) -> None:
    higher = [dep for dep in graph()[module] if layer(dep) > layer(module)]
    assert not higher, f"{module} (layer {LAYERS[layer(module)]}) imports higher layers: {higher}"


def test_no_import_circle() -> None:
    deps, state, path = graph(), {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for dep in sorted(deps[node]):
            if state.get(dep) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = "done"

    for node in sorted(deps):
        if node not in state:
            visit(node)
