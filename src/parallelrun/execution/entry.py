"""Loading the user's entry script and calling it, with the user's own traceback on failure.

The driver checks a script statically (``check_entry_script``: it parses, defines ``run``) without
executing it, so a syntax error or a missing ``run`` is a usage error before any worker starts. Workers
load it for real (``load_entry_script``) and call ``init``/``run``/``shutdown`` through ``EntryPoints``.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import EntryScriptError, UserCodeError
from .migration_hints import migration_hint

_OUR_DIR = str(Path(__file__).resolve().parent.parent)


def check_entry_script(path: Path) -> None:
    """Parse the script without running it; raise EntryScriptError on a syntax error or a missing run()."""
    if not path.is_file():
        raise EntryScriptError(
            f"entry script {path} does not exist. entry_script is relative to source_directory "
            "(or to the job file's folder when source_directory is not set)."
        )
    raw = path.read_bytes()
    source = raw.decode("utf-8", "replace")  # for showing a line; parsing honours a PEP 263 coding line
    try:
        tree = ast.parse(raw, filename=str(path))
    except (SyntaxError, ValueError) as e:  # ValueError: NUL bytes, on some Python versions
        detail = "".join(traceback.format_exception_only(type(e), e))
        raise EntryScriptError(f"entry script {path} has a syntax error:\n{detail}") from None
    bindings = list(_bindings_of_run(tree.body))
    if not bindings:
        raise EntryScriptError(
            f"entry script {path} defines no run() function. Add:\n\n"
            "    def init():\n        ...  # load the model once per worker\n\n"
            "    def run(mini_batch):\n        return [...]  # one element per succeeded item\n"
        )
    line, value, nested = bindings[-1]  # the last one in the file is the one workers will call
    # Only an unconditional binding is certain; `except ImportError: run = None` may never happen.
    if value is not None and not nested and isinstance(value, _NOT_CALLABLE):
        shown = ast.get_source_segment(source, value) or type(value).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise EntryScriptError(
            f"entry script {path}, line {line}: run is {shown}, not a function: workers call "
            "run(mini_batch) for every mini-batch. Define it as:\n\n"
            "    def run(mini_batch):\n        return [...]  # one element per succeeded item\n"
        )


# Expressions whose value can never be called: a literal, a container, a comprehension, an f-string.
_NOT_CALLABLE = (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.JoinedStr, ast.ListComp, ast.SetComp,
                 ast.DictComp, ast.GeneratorExp)


def _bindings_of_run(body: list[ast.stmt], nested: bool = False) -> Iterator[tuple[int, ast.expr | None, bool]]:
    """Every module-level binding of the name ``run``, in file order: (line, assigned value or None, nested).

    None stands for a binding we cannot judge statically but that may well be callable (def, class,
    import, a call's result). Blocks run at import (if/try/with/for/while/match) count, as ``nested``;
    function bodies do not.
    """
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "run":
                yield node.lineno, None, nested
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id == "run":
                    yield node.lineno, node.value, nested
                elif isinstance(t, (ast.Tuple, ast.List)) and any(
                        isinstance(e, ast.Name) and e.id == "run" for e in t.elts):
                    yield node.lineno, None, nested
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "run":
            if node.value is not None:
                yield node.lineno, node.value, nested
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            if any((a.asname or a.name).split(".")[0] == "run" for a in node.names):
                yield node.lineno, None, nested
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for inner in getattr(node, field, None) or []:
                    if isinstance(inner, ast.stmt):
                        yield from _bindings_of_run([inner], True)
                    else:  # an except handler or a match case: statements in its body
                        yield from _bindings_of_run(inner.body, True)


def user_traceback(exc: BaseException) -> str:
    """Format an exception keeping only the user's frames (not parallelrun's own)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OUR_DIR):
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines)


def to_user_error(exc: BaseException) -> UserCodeError:
    # A v1 script failing inside pandas 3 gets a hint on how to run it unchanged (pin pandas<3).
    return UserCodeError(type(exc).__name__, str(exc), user_traceback(exc) + migration_hint(exc))


@dataclass
class EntryPoints:
    module: ModuleType
    init: Callable[[], Any] | None
    run: Callable[..., Any]
    shutdown: Callable[[], Any] | None
    run_takes_context: bool


def load_entry_script(path: Path) -> EntryPoints:
    """Import the script as module ``entry_script`` (its own traceback on failure)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise EntryScriptError(f"cannot load entry script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)  # user code: its exceptions propagate with its frames
    run = getattr(module, "run", None)
    if not callable(run):
        raise EntryScriptError(f"entry script {path} defines no callable run(mini_batch)")
    takes_context = False
    try:
        params = [
            p for p in inspect.signature(run).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        takes_context = len(params) >= 2 or any(
            p.kind == p.VAR_POSITIONAL for p in inspect.signature(run).parameters.values()
        )
    except (TypeError, ValueError):
        pass
    init = getattr(module, "init", None)
    shutdown = getattr(module, "shutdown", None)
    return EntryPoints(
        module,
        init if callable(init) else None,
        run,
        shutdown if callable(shutdown) else None,
        takes_context,
    )


@dataclass(frozen=True)
class MiniBatchContext:
    """The optional second argument of ``run(mini_batch, mini_batch_context)``."""

    minibatch_index: int
    partition_key_value: dict[str, Any] | None = None
    dataset: str | None = None
