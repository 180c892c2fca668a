"""Listing input files lazily and in a deterministic order.

A folder is walked depth-first with each directory's entries sorted by name, so a million files never
need a million objects in memory at once. Only names are kept while a directory is sorted, and a huge
directory is sorted in runs of ``_RUN`` names, each packed into one string, and merged a block of names
at a time: even a flat folder of a million files costs about 15 bytes a name rather than ~200 for a
``DirEntry``.
A glob or a remote URL is listed by its filesystem and sorted. The order is the order of mini-batches and
of the output rows.

``iter_file_chunks`` yields lists (one directory at a time, at most ``_CHUNK`` files): planning a million
files spends most of its time in per-file Python overhead, and lists let the planner hash and cut
mini-batches a directory at a time.
"""

from __future__ import annotations

import bisect
import errno
import glob
import os
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path

from ..errors import DatasetError
from .endpoint import check_endpoint
from .storage import is_url, url_to_fs
from .walk_ahead import Pending, start_early, walk_ahead

GLOB_CHARS = set("*?[")
FileInfo = tuple[str, int, "int | str"]  # (path or URL, size, version: mtime_ns or an etag)

_CHUNK = 4096  # files per yielded list
_RUN = 131072  # names sorted in memory at once before a directory is merged from packed runs
# A directory whose size says it holds more than ~250k entries (ext4/xfs use ~12-32 bytes an entry) is
# listed in packed runs; smaller ones are listed whole, which is faster.
_BIG_DIR = 8 * 1024 * 1024
_SEP = "\0"  # cannot appear in a file name
_BLOCK_CHARS = 64 * 1024  # of a packed run unpacked at a time when merging (a name is 255 bytes at most)
_DIR_FD = os.stat in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


class NoFileMatched(DatasetError):
    """An input path names no file: a glob or a URL that matches nothing, a local path that does not exist.

    The one listing error a caller may reword for its own context (a dataset says how to upload the files).
    Every other ``DatasetError`` of listing (a name that is not valid UTF-8, a link that loops, a folder it
    may not list) carries its own reason and advice, which must reach the user as they are.
    """


def _packed(names: list[str]) -> str:
    names.sort()
    return _SEP.join(names)


class _Run:
    """A packed run read a block of names at a time: ``block`` holds the names not yet merged."""

    __slots__ = ("text", "pos", "block")

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0
        self.block: list[str] = []
        self.refill()

    @property
    def last(self) -> bool:
        """No name of this run is left beyond ``block``."""
        return self.pos >= len(self.text)

    def refill(self) -> None:
        text, pos = self.text, self.pos
        end = pos + _BLOCK_CHARS
        if end >= len(text):  # the rest of the run
            self.block = text[pos:].split(_SEP) if pos < len(text) else []
            self.pos = len(text)
            return
        # A name is at most 255 bytes, so a block of _BLOCK_CHARS always holds a separator: cut after the
        # last one and leave the partial name at the end for the next block.
        cut = text.rindex(_SEP, pos, end)
        self.block = text[pos:cut].split(_SEP)
        self.pos = cut + 1


def _merge(runs: list[str]) -> Iterator[str]:
    """The names of the sorted packed ``runs``, in sorted order, a block at a time.

    Each round emits every loaded name up to the smallest last name among the blocks of runs that have
    more to load: no name still unloaded sorts before it (it follows its own run's block, which ends at
    or after that bound). Those names are sorted together in C (Timsort merges their sorted runs), which
    costs a fraction of a per-name ``heapq.merge`` of generators.
    """
    live = [r for r in map(_Run, runs) if r.block]
    while live:
        more = [r.block[-1] for r in live if not r.last]
        out: list[str] = []
        if not more:  # every run is on its last block
            for r in live:
                out += r.block
            live = []
        else:
            bound = min(more)
            for r in live:
                k = bisect.bisect_right(r.block, bound)
                out += r.block[:k]
                del r.block[:k]
                if not r.block and not r.last:
                    r.refill()
            live = [r for r in live if r.block]
        out.sort()
        yield from out


def _sorted_names(top: str, fd: int | None) -> Iterator[str]:
    """The names in directory ``top`` (open as ``fd``), sorted."""
    size = os.fstat(fd).st_size if fd is not None else 0
    if size <= _BIG_DIR:
        return iter(sorted(os.listdir(fd if fd is not None else top)))
    # A huge flat folder: sort it in runs packed into one string each (~15 bytes a name), then merge.
    runs: list[str] = []
    names: list[str] = []
    with os.scandir(top) as it:
        for e in it:
            names.append(e.name)
            if len(names) >= _RUN:
                runs.append(_packed(names))
                names = []
    if names:
        runs.append(_packed(names))
    return _merge(runs)


class TreeWalk:
    """The walk of one folder tree, one folder at a time: lists of (path, size, mtime_ns) in sorted tree
    order, following no symlinked folder.

    Each folder's files come in name order, then its subfolders, each in name order. A symlink to a file
    counts as that file; a symlink to a folder is not followed. The walk's whole state is the stack of
    folders still to list, and between two folders it holds nothing open, so ``walk_ahead`` can carry it on
    in a forked child from exactly there.
    """

    def __init__(self, root: str, top: str | None = None) -> None:
        self.root = root
        self._stack = [top or root]

    @property
    def next_folder(self) -> str | None:
        """The folder :meth:`folder` lists next, None once the walk is over."""
        return self._stack[-1] if self._stack else None

    def folder(self) -> Iterator[list[FileInfo]]:
        """The next folder's files, in lists of at most ``_CHUNK``; its subfolders are walked after it."""
        top = self._stack.pop()
        prefix = top if top.endswith(os.sep) else top + os.sep
        chunk: list[FileInfo] = []
        subdirs: list[str] = []
        try:
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY) if _DIR_FD else None
            names = _sorted_names(top, fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as e:  # no permission to list it, an I/O error: the job cannot see its inputs
            raise _unreadable(top, e, "folder") from None
        append = chunk.append
        try:
            for name in names:
                try:
                    # Relative to the open folder: no path walk per file. One stat per entry is the floor
                    # (size and mtime are the fingerprint), so nothing else is asked of the kernel.
                    st = os.stat(name, dir_fd=fd) if fd is not None else os.stat(prefix + name)
                except FileNotFoundError:  # removed while we listed, or a dangling symlink: not an input
                    continue
                except OSError as e:  # a symlink loop (ELOOP), a name too long, an I/O error
                    raise _unreadable(prefix + name, e, "file") from None
                mode = st.st_mode
                if stat_mod.S_ISREG(mode):
                    append((prefix + name, st.st_size, st.st_mtime_ns))
                    if len(chunk) >= _CHUNK:
                        yield chunk
                        chunk = []
                        append = chunk.append
                elif stat_mod.S_ISDIR(mode) and not os.path.islink(prefix + name):
                    subdirs.append(prefix + name)
        finally:
            if fd is not None:
                os.close(fd)
        # Subfolders are listed in name order after this folder's files: pushed in reverse.
        self._stack.extend(reversed(subdirs))
        if chunk:
            yield chunk

    def split(self) -> list[TreeWalk]:
        """The rest of the walk as walks of one subtree each, in walk order (their lists, one walk after the
        other, are this walk's)."""
        return [TreeWalk(self.root, top) for top in reversed(self._stack)]

    def __iter__(self) -> Iterator[list[FileInfo]]:
        while self._stack:
            yield from self.folder()


def iter_file_chunks(path: str, base_dir: Path, storage_options: dict | None = None) -> Iterator[list[FileInfo]]:
    """Like :func:`iter_files`, in lists of up to a few thousand files (cheaper per file).

    Raises :class:`DatasetError` naming the path for an entry the job could not record or read: a name
    that is not valid UTF-8, a symbolic link loop, a folder it may not list.
    """
    for chunk in _chunks(path, base_dir, storage_options, True):
        assert not isinstance(chunk, Pending)  # a waiting walk never yields one
        _check_names(chunk)
        yield chunk


def iter_file_chunks_nowait(path: str, base_dir: Path,
                            storage_options: dict | None = None) -> Iterator[list[FileInfo] | Pending]:
    """:func:`iter_file_chunks` that yields a :class:`Pending` instead of waiting for the processes walking
    a big folder (``walk_ahead``): the caller does other work, or waits on ``Pending.fd``, and iterates on."""
    for chunk in _chunks(path, base_dir, storage_options, False):
        if not isinstance(chunk, Pending):
            _check_names(chunk)
        yield chunk


def walk_early(path: str, base_dir: Path) -> bool:
    """Start walking the input ``path`` in a forked child now if it is a big local folder
    (``walk_ahead.start_early``): its planning later reads the lists this walk gives, listed sooner."""
    if is_url(path) or GLOB_CHARS & set(path):
        return False
    p = _local(path, base_dir)
    return p.is_dir() and start_early(TreeWalk(str(p)))


def _local(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base_dir / p


def _chunks(path: str, base_dir: Path, storage_options: dict | None,
            wait: bool) -> Iterator[list[FileInfo] | Pending]:
    if is_url(path):
        yield from _batched(_iter_remote(path, storage_options))
        return
    p = _local(path, base_dir)
    s = str(p)
    if GLOB_CHARS & set(path):
        matches = sorted(m for m in glob.iglob(s, recursive=True) if os.path.isfile(m))
        if not matches:
            raise NoFileMatched(f"input path {path!r} (resolved to {s}) matches no file. Check the pattern.")
        yield from _batched((m, st.st_size, st.st_mtime_ns) for m in matches for st in (os.stat(m),))
        return
    if p.is_file():
        st = p.stat()
        yield [(s, st.st_size, st.st_mtime_ns)]
        return
    if p.is_dir():
        yield from walk_ahead(TreeWalk(s), wait)  # a big folder or tree is walked by a forked child (walk_ahead.py)
        return
    try:
        os.stat(p)
    except FileNotFoundError:
        pass
    except OSError as e:  # it exists but cannot be followed: a symlink loop, no permission on a parent
        raise _unreadable(s, e, "input path") from None
    raise NoFileMatched(
        f"input path {path!r} does not exist (resolved to {s}). Paths are relative to the job file's folder."
    )


def iter_files(path: str, base_dir: Path, storage_options: dict | None = None) -> Iterator[FileInfo]:
    """Yield (path-or-url, size, version) for one input entry; version is mtime_ns or an etag.

    Raises :class:`NoFileMatched` when the entry matches nothing, :class:`DatasetError` (as
    :func:`iter_file_chunks`) for an entry it cannot record or read.
    """
    for chunk in iter_file_chunks(path, base_dir, storage_options):
        yield from chunk


def _check_names(chunk: list[FileInfo]) -> None:
    """Refuse a name that is not valid UTF-8 (listed as lone surrogates), which no journal or output could hold.

    One encode per chunk: the common case costs one C call for a few thousand names.
    """
    try:
        "".join([p for p, _, _ in chunk]).encode("utf-8")
    except UnicodeEncodeError:
        for p, _, _ in chunk:
            try:
                p.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(p).decode("utf-8", "backslashreplace")
                raise DatasetError(
                    f"input file {shown} has a name that is not valid UTF-8, which the run's journal and output "
                    "cannot record. Rename it (e.g. convmv -f latin1 -t utf-8 --notest <file>) or move it out of "
                    "the inputs, then run the job again (or resume the run).") from None


def _unreadable(path: str, e: OSError, what: str) -> DatasetError:
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")
    if e.errno == errno.ELOOP:
        return DatasetError(f"input {what} {shown} is a symbolic link that loops ({e.strerror}): point it at a "
                            "file or remove it, then run the job again (or resume the run).")
    return DatasetError(f"cannot read input {what} {shown}: {e.strerror or e} (errno {e.errno}). Fix its "
                        "permissions or remove it, then run the job again (or resume the run).")


def _batched(items: Iterator[FileInfo]) -> Iterator[list[FileInfo]]:
    chunk: list[FileInfo] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _iter_remote(url: str, storage_options: dict | None) -> Iterator[FileInfo]:
    # Listing is the first request to an input's store: a dead endpoint fails now, not after the SDK's
    # retries (endpoint.py).
    fs, root = url_to_fs(url, storage_options)  # first: a missing extra says which one to install
    check_endpoint(url, storage_options)
    protocol = url.split("://", 1)[0]
    if GLOB_CHARS & set(root):
        found = fs.glob(root, detail=True)
    elif fs.isfile(root):
        found = {root: fs.info(root)}
    else:
        found = fs.find(root, detail=True)
    entries = sorted((k, v) for k, v in found.items() if v.get("type", "file") == "file")
    if not entries:
        raise NoFileMatched(f"input path {url!r} matches no file in the datastore.")
    for name, info in entries:
        version = info.get("etag") or info.get("ETag") or info.get("last_modified") or info.get("mtime") or ""
        yield f"{protocol}://{name}", int(info.get("size") or 0), str(version)
