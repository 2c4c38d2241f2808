"""The package's layering, read from the source: no import circles between modules, and no
library module reaches into the command-line layer (``whispdiar.cli``)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "whispdiar"
CLI = "whispdiar.cli"  # the command-line front end: typer commands, progress, signals, batch/live loops


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules of the package that ``path`` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                if f"{target}.{alias.name}" in known:
                    out.add(f"{target}.{alias.name}")
            if target in known:
                out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
    out.discard(name)
    return out


def test_no_module_imports_the_command_line_layer() -> None:
    offenders = {
        name: sorted(i for i in imports(path, top_level_only=False) if i == CLI or i.startswith(CLI + "."))
        for name, path in modules().items()
        if not (name == CLI or name.startswith(CLI + ".") or name == "whispdiar.__main__")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_circles() -> None:
    # Module-level imports only: an import inside a function runs after both modules exist.
    # A package's __init__ re-exporting its own modules is not a circle.
    graph = {name: imports(path, top_level_only=True) for name, path in modules().items()}
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.endswith("__init__") or t.startswith(name + "."))}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert cycles == []


def test_the_import_reader_sees_what_modules_import() -> None:
    # What the two checks above rely on: relative, absolute and `from . import module` forms.
    assert {"whispdiar.models", "whispdiar.outputs.destination"} <= imports(PKG / "cli.py", top_level_only=True)
    assert "whispdiar.diarization.clustering" in imports(PKG / "diarization" / "diarizer.py", top_level_only=True)
    assert "whispdiar.speakers.store" in imports(PKG / "speakers" / "memory.py", top_level_only=False)
