"""``${{...}}`` expressions of Azure ML v2 YAML: parsing and checking them.

The forms understood are Azure's: ``${{inputs.x}}`` and ``${{outputs.x}}`` (the job's own),
``${{parent.inputs.x}}``, ``${{parent.outputs.x}}`` and ``${{parent.jobs.<job>.outputs.<x>}}`` (in a
pipeline's child job), ``${{name}}`` (the run's name, known when it starts) and
``${{default_datastore}}``. What an expression *means* is up to the compiler; this module only splits a
string into text and references, and says, with a close match, when a reference names nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import JobSpecError

_EXPR = re.compile(r"\$\{\{\s*([^{}]*?)\s*\}\}")
_FORMS = ("inputs.<name>", "outputs.<name>", "parent.inputs.<name>", "parent.outputs.<name>",
          "parent.jobs.<job>.outputs.<name>", "name", "default_datastore")


class BindingError(ValueError):
    """An expression that is malformed or names nothing; the message says which and what exists."""


@dataclass(frozen=True)
class Ref:
    """One ``${{...}}`` reference; ``parts`` is the dotted path (``("parent", "jobs", "prep", ...)``)."""

    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        return "${{" + ".".join(self.parts) + "}}"

    @property
    def kind(self) -> str:
        """``inputs``, ``outputs``, ``parent.inputs``, ``parent.outputs``, ``parent.jobs``, ``name`` or
        ``default_datastore``."""
        return ".".join(self.parts[:2]) if self.parts[0] == "parent" else self.parts[0]

    @property
    def key(self) -> str:
        """The name referenced (the input or output name)."""
        return self.parts[-1]


def _parse_ref(inner: str) -> Ref:
    parts = tuple(p.strip() for p in inner.split("."))
    ok = (
        (len(parts) == 2 and parts[0] in ("inputs", "outputs"))
        or (len(parts) == 3 and parts[0] == "parent" and parts[1] in ("inputs", "outputs"))
        or (len(parts) == 5 and parts[:2] == ("parent", "jobs") and parts[3] == "outputs")
        or parts in (("name",), ("default_datastore",))
    )
    if not ok or not all(parts):
        raise BindingError(f"${{{{{inner}}}}} is not an expression this runner understands; the forms are "
                           + ", ".join("${{" + f + "}}" for f in _FORMS) + ".")
    return Ref(parts)


def split(text: str) -> list[str | Ref]:
    """``"--model ${{inputs.m}}/x"`` -> ``["--model ", Ref(("inputs", "m")), "/x"]`` (empty text dropped)."""
    out: list[str | Ref] = []
    pos = 0
    for m in _EXPR.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        out.append(_parse_ref(m.group(1)))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    if any("${{" in p for p in out if isinstance(p, str)):
        raise BindingError(f"{text!r} has an unclosed '${{{{'; an expression looks like ${{{{inputs.data}}}}.")
    return out


def whole(text: object) -> Ref | None:
    """The reference when ``text`` is exactly one expression, else None."""
    if not isinstance(text, str):
        return None
    parts = split(text.strip())
    return parts[0] if len(parts) == 1 and isinstance(parts[0], Ref) else None


def refs(text: str) -> list[Ref]:
    return [p for p in split(text) if isinstance(p, Ref)]


def check_name(ref: Ref, known: Iterable[str], what: str) -> None:
    """Raise BindingError when ``ref.key`` is not among ``known`` (``what``: "an input of job 'score'")."""
    names = sorted(known)
    if ref.key in names:
        return
    close = difflib.get_close_matches(ref.key, names, n=1)
    hint = f" Did you mean ${{{{{'.'.join((*ref.parts[:-1], close[0]))}}}}}?" if close else ""
    listed = ", ".join(names) if names else "none"
    raise BindingError(f"{ref.text} is unbound: {ref.key!r} is not {what} (those are: {listed}).{hint}")


def order_jobs(jobs: dict[str, Any]) -> list[str]:
    """Job keys with every producer of ``${{parent.jobs.<key>...}}`` before its consumers."""
    deps: dict[str, set[str]] = {}
    for key, job in jobs.items():
        texts = [v if isinstance(v, str) else getattr(v, "path", None) for v in job.inputs.values()]
        deps[key] = {r.parts[2] for t in texts if isinstance(t, str) and "${{" in t
                     for r in _safe_refs(t) if r.kind == "parent.jobs" and r.parts[2] in jobs}
    ordered: list[str] = []
    for _ in range(len(jobs) + 1):  # bounded: each pass places at least one job unless there is a cycle
        ready = [k for k in jobs if k not in ordered and deps[k] <= set(ordered)]
        if not ready:
            break
        ordered.extend(ready)
    if len(ordered) < len(jobs):
        rest = [k for k in jobs if k not in ordered]
        raise JobSpecError([f"jobs: {', '.join(rest)} read each other's outputs in a cycle; a job cannot read "
                            "(directly or through other jobs) an output it writes"], "Azure ML pipeline")
    return ordered


def _safe_refs(text: str) -> list[Ref]:
    try:
        return refs(text)
    except BindingError:
        return []  # reported when the input is resolved
