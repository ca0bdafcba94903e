"""Reading a chunk's files ahead of the thread that packs them (see ``pack``), and what both share
with ``unpack``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.sparse import data_segments, inode_generation
from shardkeeper.archive.tree import shown
from shardkeeper.errors import ShardkeeperError

if TYPE_CHECKING:
    from shardkeeper.archive.source import SourceEntry

COPY_BUFFER = 1 << 20
#: Files smaller than this are read by the packing thread, not ahead (see ``Prefetcher``).
INLINE_BELOW = 256 * 1024
_ZEROS = bytes(COPY_BUFFER)


class Cancelled(Exception):
    """The operation was aborted while this chunk was being written."""


class ChangedAfterSnapshot(ShardkeeperError):
    """A file that shares its inode with the live data changed after it was frozen."""


def put_unless_stopped(q: queue.Queue[object], item: object, *stops: threading.Event) -> None:
    """Puts into a bounded queue whose consumer may be gone: gives up with ``Cancelled`` once any
    of ``stops`` is set, instead of blocking a producer thread forever."""
    while True:
        try:
            q.put(item, timeout=0.5)
            return
        except queue.Full:
            if any(stop.is_set() for stop in stops):
                raise Cancelled from None


def get_unless_cancelled(q: queue.Queue[object], cancelled: threading.Event) -> object:
    """Takes from a queue whose producer hands over its failures as items: raises an exception it
    finds there, and ``Cancelled`` once ``cancelled`` is set while the queue is empty."""
    while True:
        try:
            item = q.get(timeout=0.5)
            break
        except queue.Empty:
            if cancelled.is_set():
                raise Cancelled from None
    if isinstance(item, BaseException):
        raise item
    return item


@dataclass(frozen=True)
class Opened:
    """A sparse file's data map (offset, length segments), sent before its data segments."""

    data: list[tuple[int, int]]


class Prefetcher:
    """Reads a chunk's regular files, in order, on a thread of its own, and its blocks wait in a
    short queue for the thread that frames and compresses them. Both hashlib and the codecs release
    the GIL, so reading, hashing and compressing overlap on two cores while memory stays at
    ``depth`` blocks. Per file it sends the data blocks (a sparse file: an ``Opened`` with its map
    first, then its data segments only), then ``END``.

    Files smaller than ``INLINE_BELOW`` are not read ahead: the packing thread reads them itself
    (``items(e)`` gives the same items for every file). For a small file the syscalls of reading
    it on another thread cost more than they save: each of them gives up the GIL and waits to get
    it back from the packing thread. The benchmarks' 5,000 files of 4-64 KiB packed in 0.73 s read
    ahead, in 0.42-0.50 s read in place (``benchmarks/README.md``, 2026-12-02).

    Each file's sha256 is computed here, or with ``consumer_hashes`` (NoCompression, where the
    consumer only frames) by the consumer as it takes a dense file's blocks: reading (a copy out of
    the page cache) and hashing then run on two threads, not one. A file read in place is hashed as
    it is read. ``block``: bytes per read, at most ``COPY_BUFFER``."""

    END = object()
    """The item after a file's last block."""

    def __init__(
        self,
        entries: Sequence[SourceEntry],
        root: Path,
        on_bytes: Callable[[int, int], None],
        cancelled: threading.Event,
        depth: int = 8,
        *,
        consumer_hashes: bool = False,
        block: int = COPY_BUFFER,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.consumer_hashes = consumer_hashes
        self._block = min(block, COPY_BUFFER)
        self._cancelled = cancelled
        self._stop = threading.Event()
        self._root = str(root)
        self._on_bytes = on_bytes
        self.digests: dict[str, str] = {}
        self.generations: dict[str, int | None] = {}
        ahead = [e for e in entries if self.ahead(e)]
        self._thread = threading.Thread(target=self._run, args=(ahead,), name="pack-prefetch", daemon=True)
        self._thread.start()

    @staticmethod
    def ahead(e: SourceEntry) -> bool:
        """Whether ``e`` is a file this prefetcher reads ahead (else the packing thread reads it)."""
        return e.type is EntryType.FILE and e.size >= INLINE_BELOW

    def consumer_hashes_file(self, e: SourceEntry) -> bool:
        """Whether the consumer computes the sha256 of ``e`` (a dense file) as it takes its
        blocks: a file read ahead with ``consumer_hashes``; any other file is hashed here."""
        return self.consumer_hashes and self.ahead(e)

    def items(self, e: SourceEntry) -> Callable[[], object]:
        """What the packing thread takes a file's items from, in order (``next_item`` for a file
        read ahead; a file smaller than ``INLINE_BELOW`` is read now, at most that many bytes held)."""
        if self.ahead(e):
            return self.next_item
        read: list[object] = []
        self._read(e, f"{self._root}/{e.name}", read.append, hash_dense=True)
        return iter(read).__next__

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop, self._cancelled)

    def _run(self, files: list[SourceEntry]) -> None:
        try:
            for f in files:
                self._read(f, f"{self._root}/{f.name}", self._put, hash_dense=not self.consumer_hashes)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            with contextlib.suppress(Cancelled):
                self._put(exc)

    def _read(self, f: SourceEntry, path: str, put: Callable[[object], None], *, hash_dense: bool) -> None:
        on_bytes = self._on_bytes
        sha: hashlib._Hash | None = None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
                raise ChangedAfterSnapshot(f'"{shown(f.name)}" changed after it was frozen (size or type)')
            data = data_segments(fd, f.size, st.st_blocks)
            if data is not None or hash_dense:
                sha = hashlib.sha256()
            if f.linked:  # what a later incremental compares, to skip reading it
                self.generations[f.name] = inode_generation(fd)
            if data is not None:  # a dense file starts with its data at once
                put(Opened(data))
            position = 0
            for offset, length in data if data is not None else [(0, f.size)]:
                self._zeros(sha, offset - position, on_bytes)
                left = length
                while left:
                    if self._stop.is_set() or self._cancelled.is_set():
                        raise Cancelled
                    block = os.pread(fd, min(left, self._block), offset + length - left)
                    if not block:
                        raise ChangedAfterSnapshot(f'"{shown(f.name)}" shrank while it was read')
                    if sha is not None:
                        sha.update(block)
                    on_bytes(len(block), len(block))
                    put(block)
                    left -= len(block)
                position = offset + length
            self._zeros(sha, f.size - position, on_bytes)
            if f.linked:
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns) != (f.size, f.mtime_ns):
                    raise ChangedAfterSnapshot(
                        f'"{shown(f.name)}" was written in place after the snapshot, while it was read: it '
                        "shares its inode with the live file because the workload marked it immutable (or "
                        "it matched SHARDKEEPER_IMMUTABLE_PATTERNS), and it is not. Remove that pattern "
                        "or fix the workload's hook; this backup cannot hold a consistent copy of it"
                    )
        finally:
            os.close(fd)
        if sha is not None:
            self.digests[f.name] = sha.hexdigest()
        put(self.END)

    @staticmethod
    def _zeros(sha: hashlib._Hash | None, n: int, on_bytes: Callable[[int, int], None]) -> None:
        if n <= 0:
            return
        assert sha is not None  # holes: sparse files only, always hashed here
        on_bytes(n, 0)
        while n:
            take = min(n, COPY_BUFFER)
            sha.update(_ZEROS[:take] if take < COPY_BUFFER else _ZEROS)
            n -= take

    def next_item(self) -> object:
        return get_unless_cancelled(self._queue, self._cancelled)

    def close(self) -> None:
        """Stops the thread (if the consumer gave up early) and waits for it."""
        self._stop.set()
        self._thread.join()


__all__ = [
    "COPY_BUFFER",
    "INLINE_BELOW",
    "Cancelled",
    "ChangedAfterSnapshot",
    "Opened",
    "Prefetcher",
    "get_unless_cancelled",
    "put_unless_stopped",
]
