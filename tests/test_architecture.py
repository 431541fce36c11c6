"""The pipeline's shape, read from the code (docs/architecture.md): each stage a folder, imports
between folders in one direction, the command line over the library's faces only."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "infergy"
MAX_LINES = 450  # a module past this holds more than one idea
MAX_FACE_LINES = 50  # an __init__.py is a face: a docstring and re-exports
MAX_FOLDER_CHAIN = 6  # the longest chain of folders importing one another


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _stage(module: str) -> str:
    """The folder (or top-level module) of `module`: infergy.run.sweep.worker -> run."""
    return module.split(".")[1] if "." in module else module


def _imports(module: str) -> list[tuple[str, bool]]:
    """The infergy modules `module` imports: (name, at the top of the file), leaving out
    those only a type checker reads."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    checking = {id(n) for node in tree.body if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in checking or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        found += [(name, id(node) in top) for name in names
                  if name in MODULES and name != module]
    return found


def _folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        if module in ("infergy", "infergy.__main__"):
            continue
        for name, _ in _imports(module):
            if name != "infergy" and _stage(name) != _stage(module):
                graph.setdefault(_stage(module), set()).add(_stage(name))
    return graph


def test_no_import_cycle_between_folders():
    graph = _folder_graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(stage: str, path: list[str]) -> None:
        seen[stage] = 1
        for nxt in sorted(graph.get(stage, ())):
            assert seen.get(nxt) != 1, f"import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[stage] = 2

    for stage in sorted(graph):
        if stage not in seen:
            visit(stage, [stage])


def test_the_longest_chain_of_folders_is_short():
    graph = _folder_graph()

    @functools.cache
    def chain(stage: str) -> tuple[str, ...]:
        return (stage, *max((chain(n) for n in graph.get(stage, ())), key=len, default=()))

    longest = max((chain(s) for s in graph), key=len)
    assert len(longest) <= MAX_FOLDER_CHAIN, " -> ".join(longest)


def test_the_command_line_imports_only_the_library_faces():
    for module in (m for m in MODULES if _stage(m) == "cli"):
        for name, _ in _imports(module):
            assert _stage(name) == "cli" or name.count(".") <= 1, (
                f"{module} imports {name}: import it from infergy.{_stage(name)}")


def test_infergy_modules_are_imported_at_the_top_but_within_a_folder():
    """The real import graph is visible at the top of each file; only a folder's own modules
    may be imported late, to break a cycle inside it."""
    for module in MODULES:
        for name, at_top in _imports(module):
            assert at_top or _stage(name) == _stage(module), (
                f"{module} imports {name} inside a function")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_hold_one_idea_and_faces_stay_faces(module):
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    limit = MAX_FACE_LINES if path.name == "__init__.py" else MAX_LINES
    assert lines <= limit, f"{path.relative_to(PACKAGE)}: {lines} lines (at most {limit})"
