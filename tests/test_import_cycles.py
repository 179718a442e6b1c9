"""No two modules of tlytics import each other, directly or around a longer loop: each idea
has one owner, and its owner does not depend back on its users."""

from __future__ import annotations

import ast
from pathlib import Path

import tlytics

PACKAGE_DIR = Path(tlytics.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The tlytics modules `path` imports anywhere in it (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    paths = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    graph = {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                # A package's __init__ importing its own submodules is how re-exports work,
                # not a dependency of those submodules on it.
                todo.extend(graph.get(current, ()))
        return False

    cycles = sorted(
        (name, imported)
        for name, imported_set in graph.items()
        for imported in imported_set
        if not imported.startswith(name + ".") and not name.startswith(imported + ".") and reaches(imported, name)
    )
    assert cycles == []
