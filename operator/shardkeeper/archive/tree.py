"""The one rule for what a backup may hold and a restore may write, and the last step of a restore.

``check_tree`` runs on both sides: on every frozen collection before its node reports SUCCESS (the
agent's backup), and on the node descriptor before a byte is downloaded (the agent's restore); the
unpacker applies ``check_path`` to every archive member too. So a backup never succeeds with an entry
its restore would refuse: it fails first, naming the path.

What a collection may hold (format 2):

    directory      any name; recorded with its mode and mtime, empty ones too
    regular file   dense or sparse (holes kept: the restore writes only the data segments)
    symbolic link  stored as a link with its exact target, never followed; created after every
                   regular file, and no entry may lie below one
    hard link      another name for a regular file of the same collection: stored once

Names: every component 1..255 bytes, any bytes but '/' and NUL (undecodable ones travel as
surrogates, PEP 383); '.' and '..' components never; the whole path at most ``MAX_PATH_BYTES``, which
leaves room under PATH_MAX (4096) for the restore's staging directory. FIFOs, sockets and devices
hold no data: the snapshot leaves them out with a warning (``NodeDescriptor.skipped``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from shardkeeper.api.common import NAME_MAX_BYTES, collection_name_problem
from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.source import Names, PathIndex
from shardkeeper.errors import UnsafeArchiveEntry

_TYPES = tuple(EntryType)
_CODES = {t: i for i, t in enumerate(_TYPES)}
_HARDLINK = _CODES[EntryType.HARDLINK]
#: The longest path (relative to the data root) a backup accepts and a restore writes, in bytes.
MAX_PATH_BYTES = 3072
#: The longest symbolic link target, in bytes (PATH_MAX less the terminating NUL).
MAX_LINK_BYTES = 4095
#: The deepest path accepted, in directories below the collection: deeper than any database keeps,
#: and the standard library's recursive directory functions stay within Python's recursion limit.
MAX_DEPTH = 512
#: Permission bits kept; setuid, setgid and sticky are never recorded nor restored.
MODE_MASK = 0o777


class TreeEntry(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def type(self) -> EntryType: ...

    @property
    def link(self) -> str | None: ...


class StoredEntry(TreeEntry, Protocol):
    """What unpacking and ``finish_tree`` read of an entry: an ``api.descriptors.Entry``, or a
    ``archive.described.DescribedEntry``."""

    @property
    def mode(self) -> int: ...

    @property
    def mtime_ns(self) -> int | None: ...

    @property
    def uid(self) -> int | None: ...

    @property
    def gid(self) -> int | None: ...

    @property
    def size(self) -> int: ...

    @property
    def sha256(self) -> str | None: ...

    @property
    def data(self) -> list[tuple[int, int]] | None: ...


def shown(name: str) -> str:
    """A path as messages show it: undecodable bytes as \\x escapes, control characters escaped (a
    surrogate that stands for no byte as Python escapes it)."""
    try:
        return repr(name.encode("utf-8", "surrogateescape"))[2:-1]
    except UnicodeEncodeError:
        return repr(name)[1:-1]


def _path_bytes(name: str) -> bytes:
    """The bytes of path ``name`` as the system has them (PEP 383: a byte that is not UTF-8 is a
    surrogate U+DC80..U+DCFF). Raises ``UnsafeArchiveEntry`` for a name no path decodes to: another
    surrogate, or surrogates for bytes that are UTF-8 (the system gives those as their characters,
    so the same file could be listed under two names)."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        why = "a surrogate that stands for no byte"
        raise UnsafeArchiveEntry(f'"{shown(name)}" is not a path: {why}') from None
    if raw.decode("utf-8", "surrogateescape") != name:
        raise UnsafeArchiveEntry(
            f'"{shown(name)}" is not a path as the system gives it: its UTF-8 bytes are given as surrogates'
        )
    return raw


def check_path(name: str, collection: str) -> None:
    """Raises ``UnsafeArchiveEntry`` unless ``name`` is a path a restore of ``collection`` may write."""
    raw = _path_bytes(name)
    parts = name.split("/")
    if not raw or b"\0" in raw or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafeArchiveEntry(f'"{shown(name)}" would be written outside the collection')
    if parts[0] != collection:
        raise UnsafeArchiveEntry(f'"{shown(name)}" is outside collection "{shown(collection)}"')
    if len(raw) > MAX_PATH_BYTES:
        raise UnsafeArchiveEntry(f'"{shown(name)[:200]}…" is longer than {MAX_PATH_BYTES} bytes')
    if len(parts) > MAX_DEPTH + 1:
        raise UnsafeArchiveEntry(f'"{shown(name)[:200]}…" is more than {MAX_DEPTH} directories deep')
    long = next((p for p in parts if len(p.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES), None)
    if long is not None:
        raise UnsafeArchiveEntry(f'"{shown(name)[:200]}": a name is longer than {NAME_MAX_BYTES} bytes')


def check_entry(entry: TreeEntry, collection: str) -> None:
    """The rule for one entry (see the module docstring); raises ``UnsafeArchiveEntry``."""
    check_path(entry.name, collection)
    if entry.type is not EntryType.DIR and entry.name == collection:
        raise UnsafeArchiveEntry(f'collection "{shown(collection)}" must be a directory')
    if entry.type in (EntryType.SYMLINK, EntryType.HARDLINK):
        link = entry.link
        try:
            raw = (link or "").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            raw = b""
        if not raw or b"\0" in raw or len(raw) > MAX_LINK_BYTES:
            raise UnsafeArchiveEntry(f'"{shown(entry.name)}": invalid link target')
        if entry.type is EntryType.HARDLINK:
            check_path(raw.decode("utf-8", "surrogateescape"), collection)
    elif entry.link is not None:
        raise UnsafeArchiveEntry(f'"{shown(entry.name)}": a {entry.type} has no link target')


def check_tree(collection: str, entries: Sequence[TreeEntry], *, dirs_listed: bool = True) -> None:
    """The rule for a whole collection: its name, each entry, and how they fit together (unique
    paths; every entry inside a directory entry, so never below a link or a file; hard links to a
    regular file of the collection). ``dirs_listed=False`` for format 1, which listed files only.

    Memory while it runs: the paths in one buffer and an index of them (``archive.source``: each
    path's UTF-8 and ~30 bytes more); a ``dict`` of the paths took ~100 bytes and a ``str`` per
    path, the peak of a million-file backup (``benchmarks/README.md``, "Goal 4 again")."""
    problem = collection_name_problem(collection)
    if problem is not None:
        raise UnsafeArchiveEntry(f'"{shown(collection)}" cannot be a collection: {problem}')
    names, types = Names(), bytearray()
    for entry in entries:
        check_entry(entry, collection)
        names.append(entry.name)
        types.append(_CODES[entry.type])
    index = PathIndex(names)
    for row, name in enumerate(names):
        if index.row(name) != row:
            raise UnsafeArchiveEntry(f'"{shown(name)}" appears twice')

    def type_of(path: str) -> EntryType | None:
        row = index.row(path)
        return None if row is None else _TYPES[types[row]]

    if dirs_listed and type_of(collection) is not EntryType.DIR:
        raise UnsafeArchiveEntry(f'collection "{shown(collection)}" has no directory entry')
    last: tuple[str, EntryType | None] = ("", None)  # a directory's entries mostly come together
    for row, name in enumerate(names):
        parent = name.rpartition("/")[0]
        if parent:
            if parent != last[0]:
                last = (parent, type_of(parent))
            kind = last[1]
            if kind is not EntryType.DIR and (dirs_listed or kind is not None):
                raise UnsafeArchiveEntry(f'"{shown(name)}" is not inside a directory of the collection')
        if types[row] == _HARDLINK:
            link = entries[row].link or ""
            if type_of(link) is not EntryType.FILE:
                raise UnsafeArchiveEntry(
                    f'"{shown(name)}" is a hard link to "{shown(link)}", which is not a regular file of the '
                    "collection"
                )


def finish_tree(target: Path, collection: str, entries: Sequence[StoredEntry], *, owners: bool) -> None:
    """The last step of unpacking ``collection`` into ``target`` (a staging directory only this
    restore writes), once every regular file is written and verified: empty directories, hard links,
    then symbolic links, then each directory's mode and mtime, deepest first (after its contents).
    The collection's own directory gets its mode and mtime from ``set_times`` once it is in place (a
    rename may need it writable). ``owners``: also restore uid/gid (only root may). Never follows a
    link: directories are made here, and check_tree refused any entry below a link."""
    root = str(target)
    dirs = sorted((e for e in entries if e.type is EntryType.DIR), key=lambda e: e.name.count("/"))
    for entry in dirs:
        path = f"{root}/{entry.name}"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise UnsafeArchiveEntry(f'"{shown(entry.name)}" is not a directory in staging') from None
    for entry in entries:
        if entry.type is EntryType.HARDLINK:
            source = f"{root}/{entry.link}"
            if not stat.S_ISREG(os.lstat(source).st_mode):
                raise UnsafeArchiveEntry(f'"{shown(entry.name)}": its target is not a regular file')
            os.link(source, f"{root}/{entry.name}", follow_symlinks=False)
    for entry in entries:
        if entry.type is EntryType.SYMLINK:
            path = f"{root}/{entry.name}"
            os.symlink(entry.link or "", path)
            if owners and entry.uid is not None and entry.gid is not None:
                os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
            if entry.mtime_ns is not None:
                os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
    if owners:
        for entry in entries:
            if (
                entry.type in (EntryType.FILE, EntryType.DIR)
                and entry.uid is not None
                and entry.gid is not None
            ):
                os.chown(f"{root}/{entry.name}", entry.uid, entry.gid, follow_symlinks=False)
    for entry in reversed(dirs):
        if entry.name != collection:
            set_times(Path(f"{root}/{entry.name}"), entry)


def set_times(path: Path, entry: StoredEntry) -> None:
    """Applies a directory's recorded mode and mtime (``path`` is a directory this restore made)."""
    os.chmod(path, entry.mode & MODE_MASK)  # Linux has no lchmod; path was checked to be a directory
    if entry.mtime_ns is not None:
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


__all__ = [
    "MAX_PATH_BYTES",
    "MODE_MASK",
    "StoredEntry",
    "check_entry",
    "check_path",
    "check_tree",
    "finish_tree",
    "shown",
]
