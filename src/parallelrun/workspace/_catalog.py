"""The workspace catalog: one SQLite file, ``<workspace>/catalog.sqlite``.

    meta             key/value (schema version, default datastore)
    datastores       name, type, definition (JSON, no secrets), created
    datasets         name, version, definition (JSON), description, tags (JSON), created
    models           name, version, path (relative to the workspace), tags, description, created
    environments     name, version, definition (JSON), created
    compute_targets  name, type, definition (JSON), created

``Catalog.lookup`` is the one way to fetch a registered object by name: an unknown name raises a
:class:`UsageError` listing what is registered, the closest match ("did you mean"), and how to register
one; an unknown version lists the versions there are.

Secrets never enter this file (see ``_secrets.py``). Every call opens its own short-lived connection, so
a catalog is safe to use from several processes at once (pipelines run in background processes); new
versions are allocated inside ``BEGIN IMMEDIATE`` so two registrations never get the same number.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UsageError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datastores (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, definition TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT NOT NULL, version INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT,
    tags TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '{}',
    description TEXT, created REAL NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS environments (
    name TEXT NOT NULL, version INTEGER NOT NULL, definition TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS compute_targets (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, definition TEXT NOT NULL, created REAL NOT NULL);
"""
VERSIONED = ("datasets", "models", "environments")
# What each table holds, for messages: (the noun, how to register one).
KINDS: dict[str, tuple[str, str]] = {
    "datastores": ("datastore", "Register it with Datastore.register_azure_blob_container(ws, ...), "
                   "Datastore.register_s3_bucket(ws, ...) or Datastore.register_local(ws, name, path)."),
    "datasets": ("dataset", "Register one with Dataset.File.from_files(...).register(ws, name) or "
                 "Dataset.Tabular.from_*_files(...).register(...)"),
    "models": ("model", "Register it with Model.register(ws, model_path='path/to/model', model_name={name!r})."),
    "environments": ("environment", "Register one with Environment(name).register(ws)."),
    "compute_targets": ("compute target", "Create one with ComputeTarget.create(ws, {name!r}, "
                        "RayCompute(address='ray://host:10001')), or use 'local'."),
}


def not_found(table: str, name: str, known: list[str], where: Path, version: int | None = None,
              versions: list[int] | None = None) -> UsageError:
    """The error for a name (or a version) the catalog does not have: what is there, the closest match,
    and how to register one."""
    noun, register = KINDS[table]
    if versions:
        return UsageError(f"{noun} {name!r} has no version {version}; its versions are {versions}")
    close = difflib.get_close_matches(name, known, n=1)
    return UsageError(
        f"no {noun} named {name!r}" + (f" with version {version}" if version is not None else "")
        + f" in workspace {where} (registered: {', '.join(repr(k) for k in known) or 'none'})."
        + (f" Did you mean {close[0]!r}?" if close else "") + " " + register.format(name=name)
    )


class Catalog:
    """Thin access to ``catalog.sqlite``; callers own the meaning of the JSON columns."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def init(self) -> None:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.commit()
        finally:
            db.close()

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed on success, rolled back on error, always closed.

        ``write=True`` takes the write lock at once (``BEGIN IMMEDIATE``), for read-then-write sequences
        such as allocating the next version.
        """
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def lookup(self, table: str, name: str, version: int | None = None) -> dict[str, Any]:
        """The row of ``name`` (its latest version, or ``version``); raises :func:`not_found`'s error."""
        row = self.get_version(table, name, version) if table in VERSIONED else self.get_named(table, name)
        if row is not None:
            return row
        versions = ([int(r["version"]) for r in self.list_versions(table, name)]
                    if table in VERSIONED and version is not None else None)
        raise not_found(table, name, self.names(table), self.path.parent, version, versions)

    # --- meta -----------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self.connect(write=True) as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- named, unversioned rows (datastores, compute targets) ----------------------------------------
    def get_named(self, table: str, name: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute(f"SELECT * FROM {_table(table)} WHERE name = ?", (name,)).fetchone()
        return _row(row)

    def list_named(self, table: str) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute(f"SELECT * FROM {_table(table)} ORDER BY name").fetchall()
        return [_row(r) for r in rows]  # type: ignore[misc]

    def put_named(self, table: str, name: str, type: str, definition: dict[str, Any]) -> None:
        with self.connect(write=True) as db:
            db.execute(f"INSERT OR REPLACE INTO {_table(table)} (name, type, definition, created) "
                       "VALUES (?, ?, ?, ?)", (name, type, _dumps(definition), time.time()))

    def delete_named(self, table: str, name: str) -> None:
        with self.connect(write=True) as db:
            db.execute(f"DELETE FROM {_table(table)} WHERE name = ?", (name,))

    # --- versioned rows (datasets, models, environments) ----------------------------------------------
    def get_version(self, table: str, name: str, version: int | None = None) -> dict[str, Any] | None:
        """One version, or the latest when ``version`` is None."""
        t = _versioned(table)
        with self.connect() as db:
            if version is None:
                row = db.execute(f"SELECT * FROM {t} WHERE name = ? ORDER BY version DESC LIMIT 1",
                                 (name,)).fetchone()
            else:
                row = db.execute(f"SELECT * FROM {t} WHERE name = ? AND version = ?", (name, version)).fetchone()
        return _row(row)

    def list_versions(self, table: str, name: str | None = None) -> list[dict[str, Any]]:
        t = _versioned(table)
        with self.connect() as db:
            if name is None:
                rows = db.execute(f"SELECT * FROM {t} ORDER BY name, version").fetchall()
            else:
                rows = db.execute(f"SELECT * FROM {t} WHERE name = ? ORDER BY version", (name,)).fetchall()
        return [_row(r) for r in rows]  # type: ignore[misc]

    def names(self, table: str) -> list[str]:
        with self.connect() as db:
            rows = db.execute(f"SELECT DISTINCT name FROM {_table(table)} ORDER BY name").fetchall()
        return [str(r["name"]) for r in rows]

    def add_version(self, db: sqlite3.Connection, table: str, name: str, fields: dict[str, Any]) -> int:
        """Insert the next version of ``name`` inside the caller's write transaction; returns its number."""
        t = _versioned(table)
        row = db.execute(f"SELECT MAX(version) AS v FROM {t} WHERE name = ?", (name,)).fetchone()
        version = int(row["v"] or 0) + 1
        cols = {"name": name, "version": version, "created": time.time(), **fields}
        cols = {k: _dumps(v) if isinstance(v, (dict, list)) else v for k, v in cols.items()}
        db.execute(f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   tuple(cols.values()))
        return version


def _table(table: str) -> str:
    if table not in ("datastores", "compute_targets", *VERSIONED):
        raise ValueError(f"unknown catalog table {table!r}")
    return table


def _versioned(table: str) -> str:
    if table not in VERSIONED:
        raise ValueError(f"{table!r} is not a versioned catalog table")
    return table


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    d = dict(row)
    for key in ("definition", "tags"):
        if isinstance(d.get(key), str):
            d[key] = json.loads(d[key])
    return d
