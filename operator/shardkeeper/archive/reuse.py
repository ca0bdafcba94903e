"""An incremental backup's base, matched against this backup's listing: what it references, not uploads.

A regular file the base backup holds at the same path is referenced, not uploaded. A file that
shares its inode with the live data (immutable: hard-linked into staging) is taken as unchanged
without reading it when its inode, size and mtime match the base's, and its generation too (a
deleted file's inode number given to a new file gets another); any other file is hashed and
referenced only if its sha256 matches. A referenced chunk keeps its place in the backup that wrote
it (``ChunkEntry.backup``: the chain is flattened, never walked), and a restore takes from it only
the entries this backup lists.

Memory: a node may list a million files, and its base as many. ``Reuse`` is the sink of the base's
streamed read (``BackupRepository.node_entries``): for each path of *this* listing it keeps ~73
bytes in columns (the base's file there, if any) and 8-16 bytes to find the path's row (``_Base``);
the base's other entries are dropped as they are read. (The base's tree in columns took ~175 bytes
per entry, and the matches as objects ~300 more: ``benchmarks/README.md``, goal 4.)
"""

from __future__ import annotations

import hashlib
import os
import threading
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shardkeeper.api.descriptors import ChunkEntry, Entry, EntryType, NodeDescriptor
from shardkeeper.archive.prefetch import COPY_BUFFER, Cancelled
from shardkeeper.archive.source import PathIndex, SourceEntry, SourceTree
from shardkeeper.archive.sparse import inode_generation

_NS = 1_000_000_000
# What the base has at a row's path (``_Base.flags``; 0: nothing). ``_SEEN`` alone: an entry that
# cannot be reused (not a stored file, a value past a column's range, or the path given twice).
_FOUND, _MTIME, _INO, _GEN, _SHA256, _SEEN = (1 << i for i in range(6))


@dataclass(frozen=True)
class BaseFile:
    """The base's copy of a listed file: what the new entry takes from it."""

    size: int
    sha256: str | None
    gen: int | None
    data: list[tuple[int, int]] | None
    chunk: ChunkEntry
    """The chunk holding it, with ``backup`` set to the backup that stores it."""


class _Base:
    """For each path of one listed collection, in the listing's order, the base's file there, in
    columns; and the listing's rows by path (``PathIndex``)."""

    __slots__ = ("chunk", "chunks", "data", "flags", "gen", "index", "ino", "nsec", "sec", "sha256", "size")

    def __init__(self, tree: SourceTree) -> None:
        n = len(tree)
        self.index = PathIndex(tree.names)
        self.flags = bytearray(n)
        self.size = array("q", [0]) * n
        self.ino = array("Q", [0]) * n
        self.sec = array("q", [0]) * n
        self.nsec = array("I", [0]) * n
        self.gen = array("q", [0]) * n
        self.chunk = array("I", [0]) * n
        self.sha256 = bytearray(32 * n)
        self.data: dict[int, list[tuple[int, int]]] = {}
        self.chunks: dict[int, ChunkEntry] = {}

    def row(self, name: str) -> int | None:
        """Where path ``name`` is in the columns, if the listing has it."""
        return self.index.row(name)

    def add(self, row: int, e: Entry) -> None:
        """Keeps the base's entry ``e`` at the path of ``row`` if it is a stored file. Nothing is
        reused (the file is uploaded again) for another entry, a value past a column's range, or a
        path the base gives twice (a restore of the base would refuse it)."""
        if self.flags[row] or e.type is not EntryType.FILE or e.chunk is None:
            self.flags[row] = _SEEN
            return
        sec, nsec = divmod(e.mtime_ns or 0, _NS)
        try:
            self.size[row], self.ino[row], self.sec[row] = e.size, e.ino or 0, sec
            self.nsec[row], self.gen[row], self.chunk[row] = nsec, e.gen or 0, e.chunk
        except OverflowError:
            self.flags[row] = _SEEN
            return
        flags = _FOUND | _SEEN
        for bit, value in ((_MTIME, e.mtime_ns), (_INO, e.ino), (_GEN, e.gen), (_SHA256, e.sha256)):
            flags |= bit if value is not None else 0
        if e.sha256 is not None:
            self.sha256[row * 32 : row * 32 + 32] = bytes.fromhex(e.sha256)  # Entry's pattern: 64 hex digits
        self.flags[row] = flags
        if e.data is not None:
            self.data[row] = e.data


class Reuse:
    """The base backup ``base_id``'s files at the paths of ``trees`` (this backup's listing,
    collection -> tree). An ``EntrySink`` for ``BackupRepository.node_entries``; ``finish`` with the
    descriptor's head once it is read, then ``match`` and ``base``."""

    def __init__(self, base_id: str, trees: Mapping[str, SourceTree]) -> None:
        self.base_id = base_id
        self._bases = {name: _Base(tree) for name, tree in trees.items()}
        self._indices: dict[str, int] = {}
        """The descriptor's index of each listed collection seen: one given twice is not reused."""
        self._twice: set[str] = set()
        self._unnamed: dict[int, list[Entry]] = {}
        """Entries of collections whose name comes after their entries (never written so), by index."""

    def __call__(self, index: int, name: str | None, entry: Entry) -> None:
        if name is None:
            self._unnamed.setdefault(index, []).append(entry)
            return
        base = self._bases.get(name)
        if base is None:
            return
        if self._indices.setdefault(name, index) != index:
            self._twice.add(name)
        row = base.row(entry.name)
        if row is not None:
            base.add(row, entry)

    def finish(self, descriptor: NodeDescriptor) -> None:
        """Takes the chunks from ``descriptor`` (the base's head, as ``node_entries`` read it with
        this sink): a file whose chunk the base's collection does not list is not reused, nor is any
        file of a collection the descriptor names twice (nor, as ``add`` has it, a path it gives
        twice)."""
        for index, entries in self._unnamed.items():
            for entry in entries:
                self(index, descriptor.collections[index].name, entry)
        self._unnamed = {}
        for i, col in enumerate(descriptor.collections):
            if col.name in self._bases and self._indices.setdefault(col.name, i) != i:
                self._twice.add(col.name)
        for i, col in enumerate(descriptor.collections):
            base = self._bases.get(col.name)
            if base is None or self._indices.get(col.name) != i:
                continue
            base.chunks = {
                ch.n: ch.model_copy(update={"backup": ch.backup or self.base_id}) for ch in col.chunks
            }
            chunks, numbers = base.chunks, base.chunk
            for row, flags in enumerate(base.flags):
                if flags & _FOUND and numbers[row] not in chunks:
                    base.flags[row] = _SEEN
        for name in self._twice:
            self._bases[name].flags[:] = bytes(len(self._bases[name].flags))

    def base(self, collection: str, row: int) -> BaseFile | None:
        """The base's file at the path of row ``row`` of ``collection``'s listing, if it has one."""
        found = self._bases.get(collection)
        if found is None or not found.flags[row] & _FOUND:
            return None
        flags = found.flags[row]
        return BaseFile(
            size=found.size[row],
            sha256=found.sha256[row * 32 : row * 32 + 32].hex() if flags & _SHA256 else None,
            gen=found.gen[row] if flags & _GEN else None,
            data=found.data.get(row),
            chunk=found.chunks[found.chunk[row]],
        )

    def match(
        self, collection: str, row: int, e: SourceEntry, root: Path, cancelled: threading.Event
    ) -> bool:
        """Whether the base's copy of ``e`` (row ``row`` of ``collection``'s listing, a regular file
        staged under ``root``) has its content (see the module docstring)."""
        found = self._bases.get(collection)
        if found is None or not found.flags[row] & _FOUND or found.size[row] != e.size:
            return False
        flags = found.flags[row]
        same = (
            flags & _INO
            and flags & _MTIME
            and found.ino[row] == e.ino
            and found.sec[row] * _NS + found.nsec[row] == e.mtime_ns
        )
        live: int | None = None  # the staged inode's generation, recorded for linked files only
        if e.linked:
            fd = os.open(root / e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                live = inode_generation(fd)
            finally:
                os.close(fd)
            if same and flags & _GEN and live == found.gen[row]:
                return True
        if not flags & _SHA256:
            return False
        if content_sha256(root / e.name, cancelled) != found.sha256[row * 32 : row * 32 + 32].hex():
            return False
        # The same content in another inode (or a copy): the new entry records this file's
        # generation, as packing would, so that the next incremental can skip reading it.
        if live is None:
            found.flags[row] &= ~_GEN
        else:
            found.gen[row] = live
            found.flags[row] |= _GEN
        return True


_BUFFERS = threading.local()


def content_sha256(path: Path, cancelled: threading.Event) -> str:
    """sha256 of a file's content (hex), read into one buffer per thread (thousands of small files:
    no allocation per read). Raises ``Cancelled`` once ``cancelled`` is set, or ``OSError``."""
    buf: bytearray | None = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(COPY_BUFFER)
    view = memoryview(buf)
    sha = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(view):
            if cancelled.is_set():
                raise Cancelled
            sha.update(view[:n])
    return sha.hexdigest()


__all__ = ["BaseFile", "Reuse", "content_sha256"]
