"""Unpacking a chunk into a staging directory, verifying everything on the way.

The stored bytes are hashed as they stream in (the chunk's checksum, BLAKE3 or in formats 1-3
sha256, and size must match the node descriptor), every member must be the entry the descriptor
lists for this chunk (same path, type, size, link target, sparse map), every file's content is
hashed as it is written (sha256 over the content, holes as zeros), and every path passes
``archive.tree.check_path``. Regular files are written here; directories, links and directory
metadata come afterwards (``tree.finish_tree``), once every chunk of the collection is in. Any
doubt raises before the caller moves anything into place; the staging directory is then discarded.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from shardkeeper.api.common import Codec
from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.prefetch import COPY_BUFFER, INLINE_BELOW, Cancelled
from shardkeeper.archive.tarstream import Member, Source, members, sparse_map, what_type
from shardkeeper.archive.tree import MODE_MASK, StoredEntry, check_path, shown
from shardkeeper.archive.unpack_threads import FileWriter, StoredStream, create_new, settle
from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry

_ZEROS = bytes(COPY_BUFFER)
_MEMBER_TYPES = {
    EntryType.DIR: tarfile.DIRTYPE,
    EntryType.SYMLINK: tarfile.SYMTYPE,
    EntryType.HARDLINK: tarfile.LNKTYPE,
}


@dataclass(frozen=True)
class ExpectedChunk:
    key: str
    digest: str
    """The checksum of the stored bytes, hex, by ``algorithm``."""
    size: int
    entries: Mapping[str, StoredEntry]
    """The descriptor's entries stored in this chunk, by name."""
    partial: bool = False
    """A chunk of an earlier backup that this one references: members it does not list are skipped."""
    algorithm: str = "sha256"
    """"blake3" (format 4 on) or "sha256"."""


class _Unpacker:
    """Checks each member against the chunk's entries and writes regular files under ``target``."""

    def __init__(
        self,
        stream: StoredStream,
        writer: FileWriter,
        chunk: ExpectedChunk,
        target: Path,
        collection: str,
        on_bytes: Callable[[int, int], None],
        cancelled: threading.Event,
    ) -> None:
        self.stream, self.writer, self.chunk, self.collection = stream, writer, chunk, collection
        self.target = target.resolve()
        self.on_bytes, self.cancelled = on_bytes, cancelled
        self.checked_dirs: set[Path] = set()

    def member(self, member: Member) -> bool:
        """Checks (and writes) one member; False if it was skipped (not listed, in a referenced chunk)."""
        check_path(member.name, self.collection)
        expected = self.chunk.entries.get(member.name)
        if expected is None and self.chunk.partial:
            self._skip(member)
            return False
        if expected is None:
            raise IntegrityError(f'"{shown(member.name)}" is not in the node descriptor for this chunk')
        if not member.is_regular:
            if _MEMBER_TYPES.get(expected.type) != member.type:
                found = what_type(member.type)
                raise IntegrityError(
                    f'"{shown(member.name)}" is a {found}; the descriptor says {expected.type}'
                )
            if expected.type is not EntryType.DIR and member.linkname != expected.link:
                raise IntegrityError(f'"{shown(member.name)}" links elsewhere than the descriptor says')
            return True  # made by finish_tree, after every file of the collection
        if expected.type is not EntryType.FILE:
            raise IntegrityError(
                f'"{shown(member.name)}" is a regular file; the descriptor says {expected.type}'
            )
        if member.sparse:
            segments, used = sparse_map(self.stream, member.size)
            if segments != expected.data or sum(n for _, n in segments) != member.size - used:
                raise IntegrityError(f'"{shown(member.name)}": its sparse map is not the descriptor\'s')
            size = member.realsize
        else:
            if expected.data is not None:
                raise IntegrityError(f'"{shown(member.name)}" is stored whole; the descriptor says sparse')
            segments, used, size = [(0, member.size)], 0, member.size
        if size != expected.size:
            raise IntegrityError(f'"{shown(member.name)}" has {size} bytes, expected {expected.size}')
        dest = self._dest(member.name)
        mtime_ns = expected.mtime_ns if expected.mtime_ns is not None else member.mtime_ns
        if not member.sparse and size < INLINE_BELOW:
            self._write_small(dest, member.name, expected, mtime_ns)
            self.stream.read(-member.size % 512)
            return True
        self.writer.put("open", dest)
        sha, position = hashlib.sha256(), 0
        for offset, length in segments:
            self._hole(sha, offset - position)
            if offset != position:
                self.writer.put("seek", offset)
            self._copy(sha, length, member.name)
            position = offset + length
        self._hole(sha, expected.size - position)
        if sha.hexdigest() != expected.sha256:
            raise IntegrityError(f'"{shown(member.name)}" does not match its sha256')
        self.writer.put("close", (expected.size, expected.mode & MODE_MASK, mtime_ns))
        self.stream.read(-member.size % 512)
        return True

    def _write_small(self, dest: Path, name: str, expected: StoredEntry, mtime_ns: int) -> None:
        """A dense file smaller than ``INLINE_BELOW``, whole, on this thread: checked before it is
        written. Handed to the writer thread, each of its syscalls (create, write, truncate, chmod,
        utime, close) gave up the GIL there and waited to get it back from this thread, as in a
        backup (``archive.prefetch.Prefetcher``). Its writeback is left to the restore's sync: one
        started per small file (``posix_fadvise``) waited on the disk's queue, and the 5,000 files
        of the benchmarks' data set took 2.2-2.5 s to restore with it, 1.8-1.9 s without
        (``benchmarks/README.md``, 2026-12-02)."""
        if self.cancelled.is_set():
            raise Cancelled
        data = self.stream.read(expected.size)
        if len(data) != expected.size:
            raise IntegrityError(f'"{shown(name)}" is cut short')
        if hashlib.sha256(data).hexdigest() != expected.sha256:
            raise IntegrityError(f'"{shown(name)}" does not match its sha256')
        fd = create_new(dest)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            settle(fd, expected.mode & MODE_MASK, mtime_ns)
        finally:
            os.close(fd)
        self.on_bytes(len(data), len(data))

    def _hole(self, sha: hashlib._Hash, n: int) -> None:
        """A sparse file's hole of ``n`` bytes: hashed as zeros, counted as restored, not written."""
        if n > 0:
            _zeros(sha, n)
            self.on_bytes(n, 0)

    def _skip(self, member: Member) -> None:
        """Reads past a member this backup does not list (in a referenced chunk), writing nothing."""
        left = member.size + (-member.size % 512)
        while left:
            if self.cancelled.is_set():
                raise Cancelled
            block = self.stream.read_view(min(left, COPY_BUFFER))
            if not block:
                raise IntegrityError(f'"{shown(member.name)}" is cut short')
            left -= len(block)

    def _dest(self, name: str) -> Path:
        dest = self.target / name
        if dest.parent not in self.checked_dirs:  # once per directory: made here, never a link
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.parent.resolve() != dest.parent or self.target not in dest.parents:
                raise UnsafeArchiveEntry(f'"{shown(name)}" would be written outside the staging area')
            self.checked_dirs.add(dest.parent)
        return dest

    def _copy(self, sha: hashlib._Hash, left: int, name: str) -> None:
        while left:
            if self.cancelled.is_set():
                raise Cancelled
            block = self.stream.read_view(min(left, COPY_BUFFER))
            if not block:
                raise IntegrityError(f'"{shown(name)}" is cut short')
            sha.update(block)
            self.writer.put("data", block)
            self.on_bytes(len(block), len(block))
            left -= len(block)


def _zeros(sha: hashlib._Hash, n: int) -> None:
    while n > 0:
        take = min(n, COPY_BUFFER)
        sha.update(_ZEROS if take == COPY_BUFFER else _ZEROS[:take])
        n -= take


def _located(found: Iterator[Member]) -> Iterator[Member]:
    """``found``, with an error in the archive's own structure (a header, a PAX record, a sparse map)
    saying after which member it came, so that a corrupt chunk names the files it concerns."""
    last: str | None = None
    while True:
        try:
            member = next(found, None)
        except IntegrityError as exc:
            where = f'after "{shown(last)}"' if last is not None else "at its first member"
            raise IntegrityError(f"{exc} ({where})") from exc
        if member is None:
            return
        last = member.name
        yield member


def unpack_chunk(
    source: Source,
    *,
    codec: Codec,
    chunk: ExpectedChunk,
    target: Path,
    collection: str,
    on_bytes: Callable[[int, int], None],
    cancelled: threading.Event,
) -> list[str]:
    """Writes the chunk's regular files under ``target`` and checks every other member; returns the
    names of the members. Raises ``IntegrityError`` or ``UnsafeArchiveEntry`` on any mismatch,
    leaving what it wrote for the caller to discard. ``on_bytes(logical, written)`` is told of
    every piece of file content: ``logical`` bytes restored (a sparse file's holes included, as a
    backup counts them) and ``written`` bytes actually written.

    Three threads share the work: one reads, hashes and decompresses the stored bytes, this one
    parses and hashes each file, one writes (a file smaller than ``INLINE_BELOW`` is written here)."""
    stream = StoredStream(source, codec, chunk.algorithm, cancelled)
    writer = FileWriter(cancelled)
    unpacker = _Unpacker(stream, writer, chunk, target, collection, on_bytes, cancelled)
    seen: list[str] = []
    try:
        for member in _located(members(stream)):
            if unpacker.member(member):
                seen.append(member.name)
        stream.drain()
        writer.finish()
    except IntegrityError as exc:
        raise IntegrityError(f"chunk {chunk.key}: {exc}") from exc
    finally:
        writer.abandon()
        stream.close()
    if stream.stored != chunk.size or stream.sha.hexdigest() != chunk.digest:
        raise IntegrityError(
            f"chunk {chunk.key}: checksum mismatch (stored {stream.stored} bytes, {chunk.algorithm} "
            f"{stream.sha.hexdigest()[:16]}…; the descriptor says {chunk.size} bytes, {chunk.digest[:16]}…)"
        )
    missing = sorted(set(chunk.entries) - set(seen))
    if missing:
        raise IntegrityError(
            f"chunk {chunk.key}: entries missing from the archive: {[shown(m) for m in missing[:5]]}"
        )
    if len(seen) != len(set(seen)):
        raise IntegrityError(f"chunk {chunk.key}: an entry appears twice")
    return seen
