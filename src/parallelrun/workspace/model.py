"""Registered models: versioned copies of a file or folder under ``<workspace>/models/<name>/<version>/``.

``Model.register`` copies (or, for a ``.tar.gz``/``.tgz``, safely unpacks) the model into a temporary
folder, then renames it into place and records the version in one catalog transaction, so a version
number never points at a half-copied model. Inside an entry script, ``Model.get_model_path(name)`` reads
the models the step listed from ``$PARALLELRUN_MODELS`` (set by the engine in every worker).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .workspace import Workspace, register_asset

MODELS_ENV = "PARALLELRUN_MODELS"
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class Model:
    """A registered model version. ``Model(ws, name, version=None)`` retrieves one (the latest by default).

    Attributes: ``name``, ``version``, ``path`` (the local path of the registered copy: the file, or the
    folder), ``tags``, ``description``, ``id`` (``"name:version"``), ``created_time``.
    """

    name: str
    version: int
    path: str
    tags: dict[str, str]
    description: str | None
    created_time: float
    workspace: Workspace

    def __init__(self, workspace: Workspace, name: str | None = None, version: int | None = None,
                 id: str | None = None) -> None:
        if id is not None:
            name, _, v = id.partition(":")
            version = int(v) if v else None
        if not name:
            raise UsageError("Model(ws, name) needs a model name (or id='name:version')")
        self._load(workspace, workspace.catalog.lookup("models", name, None if version is None else int(version)))

    def _load(self, ws: Workspace, row: dict[str, Any]) -> None:
        self.workspace = ws
        self.name, self.version = row["name"], int(row["version"])
        self.path = str(ws.path / row["path"])
        self.tags = dict(row.get("tags") or {})
        self.description = row.get("description")
        self.created_time = float(row["created"])

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, version={self.version}, path={self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (other.workspace, other.id) == (self.workspace, self.id)

    def __hash__(self) -> int:
        return hash((self.workspace, self.id))

    # --- registration ---------------------------------------------------------------------------------
    @staticmethod
    def register(workspace: Workspace, model_path: str | os.PathLike[str], model_name: str,
                 tags: dict[str, str] | None = None, description: str | None = None) -> Model:
        """Copy a file or folder into the workspace as the next version of ``model_name``.

        A ``.tar.gz``/``.tgz`` archive is unpacked into a folder named after it (``model.tar.gz`` ->
        ``model/``); members with absolute paths, ``..``, links leading outside, or device files are refused.
        """
        _check_name(model_name)
        src = Path(model_path).expanduser().resolve()
        if not src.exists():
            raise UsageError(f"Model.register: {src} does not exist (model_path is relative to {Path.cwd()})")
        base = workspace.path / "models" / model_name
        # Staged next to the models' folders, not inside this model's: a refused or failed registration
        # leaves no (empty) models/<name>/ behind. Same filesystem, so the final rename stays atomic.
        staging = workspace.path / "models" / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            if src.is_file() and src.name.endswith(_ARCHIVE_SUFFIXES):
                stem = src.name[: -len(next(s for s in _ARCHIVE_SUFFIXES if src.name.endswith(s)))] or "model"
                safe_extract(src, staging / stem)
                leaf = stem
            elif src.is_dir():
                shutil.copytree(src, staging / src.name, symlinks=False)
                leaf = src.name
            else:
                shutil.copy2(src, staging / src.name)
                leaf = src.name
            with workspace.catalog.connect(write=True) as db:
                row = db.execute("SELECT MAX(version) AS v FROM models WHERE name = ?", (model_name,)).fetchone()
                version = int(row["v"] or 0) + 1
                final = base / str(version)
                base.mkdir(exist_ok=True)
                if final.exists():  # left by a registration that crashed before recording itself
                    shutil.rmtree(final)
                os.replace(staging, final)
                workspace.catalog.add_version(db, "models", model_name, {
                    "path": str(final.relative_to(workspace.path) / leaf), "tags": dict(tags or {}),
                    "description": description})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Model(workspace, model_name, version)

    @staticmethod
    def list(workspace: Workspace, name: str | None = None, latest: bool = False) -> list[Model]:
        """Registered models (every version, or only the latest of each with ``latest=True``)."""
        out = []
        for row in workspace.catalog.list_versions("models", name):
            m = Model.__new__(Model)
            m._load(workspace, row)
            out.append(m)
        if latest:
            newest = {m.name: m for m in out}
            out = list(newest.values())
        return out

    def download(self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False) -> str:
        """Copy the model to ``target_dir``; returns the copy's path."""
        dest = Path(target_dir).expanduser().resolve() / Path(self.path).name
        if dest.exists() and not exist_ok:
            raise UsageError(f"{dest} already exists; pass exist_ok=True to overwrite it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(self.path).is_dir():
            shutil.copytree(self.path, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(self.path, dest)
        return str(dest)

    # --- lookup from an entry script ------------------------------------------------------------------
    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Workspace | None = None) -> str:
        """The local path of a model.

        In a worker, the models the step listed (``models=[...]``) come from ``$PARALLELRUN_MODELS``, a JSON
        object ``{name: path}`` or ``{"name:version": path}``. Elsewhere, the model is looked up in
        ``_workspace`` or in the workspace ``Workspace.from_config()`` finds.
        """
        listed = os.environ.get(MODELS_ENV)
        if listed is not None and _workspace is None:
            models: dict[str, str] = json.loads(listed or "{}")
            path = _from_listed(models, model_name, version)
            if path is None:
                names = sorted({k.split(":", 1)[0] for k in models})
                want = model_name if version is None else f"{model_name}:{version}"
                raise UsageError(
                    f"model {want!r} is not one of the models this step lists ({', '.join(names) or 'none'}). "
                    f"Add it to the step: ParallelRunStep(..., models=[Model(ws, {model_name!r})])."
                )
            return path
        ws = _workspace or Workspace.from_config()
        return Model(ws, model_name, version).path


def _from_listed(models: dict[str, str], name: str, version: int | None) -> str | None:
    if version is not None and f"{name}:{version}" in models:
        return models[f"{name}:{version}"]
    if name in models:
        return models[name]
    if version is None:
        versions = [(int(v), p) for k, p in models.items() if (parts := k.split(":", 1))[0] == name
                    and len(parts) == 2 and (v := parts[1]).isdigit()]
        if versions:
            return max(versions)[1]
    return None


def _check_name(name: str) -> None:
    if not name or len(name) > 255 or any(c in name for c in "/\\:") or name.startswith("."):
        raise UsageError(f"model name {name!r} is invalid: use letters, digits, '-', '_' and '.', "
                         "not starting with '.' (e.g. 'digits-onnx')")


# --- safe archive unpacking ----------------------------------------------------------------------------
_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit: a longer chain of links is a loop (or an attack)


class _Escape(Exception):
    """A path, followed through the archive's own links, leaves the target folder."""


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar archive into ``dest`` (a new, empty folder), refusing any member that would write outside it.

    Checked before anything is written, by following every member's path through the links the archive
    itself creates (in archive order, as extraction would): absolute names, ``..`` leaving the folder,
    symbolic links whose target ends outside (also through chains such as ``s -> .``, ``s/t -> ..``,
    ``s/t/x``), hard links to anything outside, link loops, and device/FIFO members. This does not rely
    on the standard library's ``filter="data"`` (absent before 3.11.4 and 3.10.12, which ``pyproject``
    allows); where that filter exists it is applied on top.
    """
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            links: dict[tuple[str, ...], str] = {}
            for m in members:
                problem = _member_problem(m, links)
                if problem:
                    raise UsageError(f"refusing to unpack {archive.name}: member {m.name!r} {problem}. "
                                     "Re-create the archive with relative paths inside one folder.")
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            if hasattr(tarfile, "data_filter"):
                tf.extractall(root, members=members, filter="data")
            else:  # old Pythons: our checks above are the protection; drop setuid/setgid/sticky and w for others
                for m in members:
                    m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)
                tf.extractall(root, members=members)
    except tarfile.TarError as e:
        raise UsageError(f"cannot unpack {archive.name}: {type(e).__name__}: {e}") from None


def _member_problem(m: tarfile.TarInfo, links: dict[tuple[str, ...], str]) -> str | None:
    """Why ``m`` must not be extracted, or None; records ``m`` in ``links`` when it is a symbolic link."""
    name = m.name
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if "\\" in name or "\\" in m.linkname:
        # A separator on Windows, a plain character here: refused rather than checked two ways.
        return "holds a backslash (a path separator on Windows)"
    if ".." in name.split("/"):  # tarfile itself cannot create "a/../b"; no archive tool writes such names
        return "contains '..'"
    if m.isdev() or m.isfifo():
        return "is a device or FIFO"
    try:
        # A link member replaces whatever is at its name; any other member is written through a link
        # already there (extraction opens the name, following it).
        where = _resolve(name, links, follow_last=not (m.issym() or m.islnk()))
        if not where and not m.isdir():
            return "would be written over the target folder itself"
        if m.issym():
            target = m.linkname
            if target.startswith("/"):
                return f"is a symbolic link to {m.linkname!r}, outside the target folder"
            try:
                _resolve("/".join((*where[:-1], target)), links, follow_last=True)
            except _Escape:
                return f"is a symbolic link to {m.linkname!r}, which leads outside the target folder"
            links[where] = target
        elif m.islnk():
            target = m.linkname
            if target.startswith("/"):
                return f"is a hard link to {m.linkname!r}, outside the target folder"
            try:
                _resolve(target, links, follow_last=True)
            except _Escape:
                return f"is a hard link to {m.linkname!r}, outside the target folder"
    except _Escape:
        return "would be written outside the target folder (its path, links followed, leaves it)"
    except RecursionError:
        return "is reached through a loop of symbolic links"
    return None


def _resolve(path: str, links: dict[tuple[str, ...], str], follow_last: bool) -> tuple[str, ...]:
    """``path`` (relative to the target folder) with ``.``, ``..`` and the archive's links resolved.

    Raises :class:`_Escape` when any step leaves the folder, RecursionError on a loop of links.
    """
    out: list[str] = []
    todo = [p for p in path.split("/")]
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise _Escape(path)
            out.pop()
            continue
        out.append(part)
        target = links.get(tuple(out))
        if target is not None and (todo or follow_last):
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise RecursionError(path)
            if target.startswith("/"):
                raise _Escape(path)
            out.pop()
            todo = target.split("/") + todo
    return tuple(out)



register_asset("models", lambda ws: {name: Model(ws, name) for name in ws.catalog.names("models")})
