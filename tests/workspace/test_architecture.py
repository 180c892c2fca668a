"""The workflow layer's shape: no import cycles among parallelrun's modules reachable from workspace/, and
no imports of parallelrun modules inside functions there (the way cycles used to be held open)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "parallelrun"
AREA = [SRC / "workspace", SRC / "azureml_shim"]


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    names = [f"{base}.{a.name}" for a in node.names]
    return [base, *names]


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    module = _module(path)
    found: set[str] = set()
    for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are not imports at run time
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, node, path.name == "__init__.py"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {f for f in found if f.startswith("parallelrun")}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in SRC.rglob("*.py") if "azureml_shim/azureml" not in str(p)}
    graph = {}
    for mod, path in files.items():
        graph[mod] = {t for t in _top_level_imports(path) if t in files and t != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith("parallelrun") and nxt.rsplit(".", 1)[0] == node:
                continue  # a package importing its own submodule
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles_through_the_workflow_layer() -> None:
    graph = _graph()
    # A submodule always imports its package first; drop package -> own-submodule edges, which are how
    # __init__ files re-export.
    for mod in graph:
        graph[mod] = {t for t in graph[mod] if not t.startswith(mod + ".")}
    cycles = [c for c in _cycles(graph) if any(m.startswith(("parallelrun.workspace", "parallelrun.azureml_shim"))
                                               for m in c)]
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_no_parallelrun_imports_inside_functions() -> None:
    offenders = []
    for area in AREA:
        for path in area.rglob("*.py"):
            if "azureml_shim/azureml" in str(path):
                continue  # the stand-in modules run inside workers, importing parallelrun on demand
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level > 0 or (inner.module or "").startswith(
                            "parallelrun")):
                        offenders.append(f"{path.relative_to(SRC)}:{inner.lineno} in {node.name}()")
    assert offenders == [], offenders
