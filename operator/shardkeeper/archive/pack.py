"""Packing a frozen tree into chunks: tar members, compressed, hashed, streamed to a backend writer.

Every entry type of ``archive.tree`` becomes its standard tar member, so any tar reader restores a
chunk: directories, symbolic and hard links (``linkname``), regular files, and sparse files in the
GNU sparse format 1.0 (PAX), whose data area is the map and then the data segments only. Long
names and link targets travel in PAX records, names that are not UTF-8 with ``hdrcharset=BINARY``;
mtimes in whole seconds (the node descriptor keeps them to the nanosecond).

Memory stays bounded: files are read in 1 MiB pieces and every piece goes straight through the
compressor into the writer. sha256 is computed per file (over its content, holes read as zeros) and
per chunk (over the stored bytes), both on the way through.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.codecs import CodecChoice, compressor
from shardkeeper.archive.sparse import data_segments, inode_generation, sparse_map_block
from shardkeeper.archive.tree import MODE_MASK, shown
from shardkeeper.errors import ShardkeeperError
from shardkeeper.storage.base import Writer

COPY_BUFFER = 1 << 20
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


@dataclass(frozen=True, slots=True)
class SourceEntry:
    """One frozen entry. Regular files are read from ``<staging>/<name>``; the others carry all
    they need. ``linked``: the staged file is the live file's inode (a hard link), so it is checked
    for changes after it is read."""

    name: str
    type: EntryType
    mode: int
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    link: str | None = None
    linked: bool = False
    ino: int = 0

    @property
    def data_size(self) -> int:
        return self.size if self.type is EntryType.FILE else 0


@dataclass(frozen=True)
class PackedFile:
    name: str
    sha256: str
    data: list[tuple[int, int]] | None
    """The data segments of a sparse file; None for a dense one."""
    generation: int | None = None
    """Its inode's generation (with the inode number, it tells the same file from a new one)."""


@dataclass(frozen=True)
class PackedChunk:
    sha256: str
    size: int
    raw_size: int
    entries: int
    files: dict[str, PackedFile] = field(default_factory=dict)


def plan_chunks(entries: Sequence[SourceEntry], target_bytes: int) -> list[list[SourceEntry]]:
    """Groups entries, in order, into chunks of about ``target_bytes`` of file content.

    A file larger than the target gets a chunk of its own, so that big immutable files stay
    addressable one by one. Entries without content (directories, links) go with their neighbours.
    """
    chunks: list[list[SourceEntry]] = []
    current: list[SourceEntry] = []
    current_bytes = 0
    for e in entries:
        size = e.data_size
        big = size >= target_bytes
        if current and current_bytes and (big or current_bytes + size > target_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        if big:  # with the directories and links just before it, if any: never a chunk of those alone
            chunks.append([*current, e])
            current, current_bytes = [], 0
            continue
        current.append(e)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


class _ChunkSink:
    """The file object tarfile writes to: compresses, hashes and forwards to the backend."""

    def __init__(self, writer: Writer, choice: CodecChoice) -> None:
        self._writer = writer
        self._compressor = compressor(choice)
        self._sha = hashlib.sha256()
        self.raw_size = 0
        self.stored_size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.raw_size += len(data)
        self._emit(self._compressor.compress(data))
        return len(data)

    def tell(self) -> int:
        return self.raw_size

    def finish(self) -> str:
        self._emit(self._compressor.flush())
        return self._sha.hexdigest()

    def _emit(self, out: bytes | memoryview) -> None:
        if out:
            self._sha.update(out)
            self._writer.write(out)
            self.stored_size += len(out)


@dataclass(frozen=True)
class _Opened:
    """What the prefetcher knows once a file is open: its data map (None if dense)."""

    data: list[tuple[int, int]] | None


class _Prefetcher:
    """Reads a chunk's regular files, in order, on a thread of its own: each file is hashed there,
    and its blocks wait in a short queue for the thread that frames and compresses them. Both
    hashlib and the codecs release the GIL, so reading, hashing and compressing overlap on two cores
    while memory stays at ``depth`` blocks. Per file it sends the data blocks (a sparse file: an
    ``_Opened`` with its map first, then its data segments only), then ``_END``."""

    _END = object()

    def __init__(
        self,
        entries: Sequence[SourceEntry],
        root: Path,
        on_bytes: Callable[[int, int], None],
        cancelled: threading.Event,
        depth: int = 8,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._cancelled = cancelled
        self._stop = threading.Event()
        self.digests: dict[str, str] = {}
        self.generations: dict[str, int | None] = {}
        files = [e for e in entries if e.type is EntryType.FILE]
        self._thread = threading.Thread(
            target=self._run, args=(files, str(root), on_bytes), name="pack-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop, self._cancelled)

    def _run(self, files: list[SourceEntry], root: str, on_bytes: Callable[[int, int], None]) -> None:
        try:
            for f in files:
                self._read(f, f"{root}/{f.name}", on_bytes)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            with contextlib.suppress(Cancelled):
                self._put(exc)

    def _read(self, f: SourceEntry, path: str, on_bytes: Callable[[int, int], None]) -> None:
        sha = hashlib.sha256()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
                raise ChangedAfterSnapshot(f'"{shown(f.name)}" changed after it was frozen (size or type)')
            data = data_segments(fd, f.size, st.st_blocks)
            if f.linked:  # what a later incremental compares, to skip reading it
                self.generations[f.name] = inode_generation(fd)
            if data is not None:  # a dense file starts with its data at once
                self._put(_Opened(data))
            position = 0
            for offset, length in data if data is not None else [(0, f.size)]:
                self._zeros(sha, offset - position, on_bytes)
                left = length
                while left:
                    if self._stop.is_set() or self._cancelled.is_set():
                        raise Cancelled
                    block = os.pread(fd, min(left, COPY_BUFFER), offset + length - left)
                    if not block:
                        raise ChangedAfterSnapshot(f'"{shown(f.name)}" shrank while it was read')
                    sha.update(block)
                    on_bytes(len(block), len(block))
                    self._put(block)
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
        self.digests[f.name] = sha.hexdigest()
        self._put(self._END)

    @staticmethod
    def _zeros(sha: hashlib._Hash, n: int, on_bytes: Callable[[int, int], None]) -> None:
        if n <= 0:
            return
        on_bytes(n, 0)
        while n:
            take = min(n, COPY_BUFFER)
            sha.update(_ZEROS[:take] if take < COPY_BUFFER else _ZEROS)
            n -= take

    def next_item(self) -> object:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if self._cancelled.is_set():
                    raise Cancelled from None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stops the thread (if the consumer gave up early) and waits for it."""
        self._stop.set()
        self._thread.join()


class _BlockReader:
    """The file object tarfile reads one member's data from: ``prefix`` (a sparse map), then the
    prefetched blocks, with exact sizes."""

    def __init__(self, prefetch: _Prefetcher, prefix: bytes = b"", first: object = None) -> None:
        self._prefetch = prefetch
        self._pending = memoryview(prefix)
        self._ended = first is _Prefetcher._END
        if first is not None and not self._ended:
            self._pending = memoryview(first)  # type: ignore[arg-type]

    def _next(self) -> None:
        item = self._prefetch.next_item()
        if item is _Prefetcher._END:
            self._ended = True
        else:
            self._pending = memoryview(item)  # type: ignore[arg-type]

    def read(self, n: int = -1) -> bytes | memoryview:
        if n < 0:
            n = 1 << 62
        if not self._pending and not self._ended:
            self._next()
        if len(self._pending) >= n or self._ended:
            out, self._pending = self._pending[:n], self._pending[n:]
            return out
        parts = [self._pending]
        got = len(self._pending)
        self._pending = memoryview(b"")
        while got < n and not self._ended:
            self._next()
            take = self._pending[: n - got]
            self._pending = self._pending[len(take) :]
            parts.append(take)
            got += len(take)
        return b"".join(parts)

    def finish(self) -> None:
        """Consumes the end marker of this file (tarfile stops reading at the declared size)."""
        while not self._ended:
            if self._pending:
                raise ChangedAfterSnapshot("a file grew while it was packed")
            self._next()


def _info(e: SourceEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(e.name)
    info.mode = e.mode & MODE_MASK
    info.uid, info.gid, info.uname, info.gname = e.uid, e.gid, "", ""
    # Whole seconds in the archive (an exact PAX mtime per member costs a second header each, 15 % of
    # a small-file backup); the descriptor keeps the nanoseconds, and the restore uses those.
    info.mtime = e.mtime_ns // 1_000_000_000
    if e.type is EntryType.DIR:
        info.type = tarfile.DIRTYPE
    elif e.type is EntryType.SYMLINK:
        info.type, info.linkname = tarfile.SYMTYPE, e.link or ""
    elif e.type is EntryType.HARDLINK:
        info.type, info.linkname = tarfile.LNKTYPE, e.link or ""
    else:
        info.size = e.size
    return info


def pack_chunk(
    entries: Sequence[SourceEntry],
    *,
    root: Path,
    writer: Writer,
    choice: CodecChoice,
    on_bytes: Callable[[int, int], None],
    cancelled: threading.Event,
) -> PackedChunk:
    """Writes ``entries`` (files read from ``root``) as one compressed tar stream into ``writer``.

    ``on_bytes(logical, read)`` is told of every piece: ``logical`` bytes of file content covered
    (holes included) and ``read`` bytes actually read. The caller commits or aborts the writer.
    Raises ``ChangedAfterSnapshot`` if a file does not match what was frozen."""
    sink = _ChunkSink(writer, choice)
    prefetch = _Prefetcher(entries, root, on_bytes, cancelled)
    sparse: dict[str, list[tuple[int, int]]] = {}
    try:
        tar_file = tarfile.TarFile(
            fileobj=sink,  # type: ignore[arg-type]
            mode="w",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
            copybufsize=COPY_BUFFER,
        )
        with tar_file as tar:
            for e in entries:
                info = _info(e)
                if e.type is not EntryType.FILE:
                    tar.addfile(info)
                    continue
                first = prefetch.next_item()  # a sparse file's map, or a dense one's first block
                opened = first if isinstance(first, _Opened) else _Opened(None)
                prefix = b""
                if opened.data is not None:
                    sparse[e.name] = opened.data
                    prefix = sparse_map_block(opened.data)
                    info.pax_headers = {
                        **info.pax_headers,
                        "GNU.sparse.major": "1",
                        "GNU.sparse.minor": "0",
                        "GNU.sparse.name": e.name,
                        "GNU.sparse.realsize": str(e.size),
                    }
                    info.name = "GNUSparseFile.0/data"  # what readers without sparse support extract
                    info.size = len(prefix) + sum(n for _, n in opened.data)
                reader = _BlockReader(prefetch, prefix, None if isinstance(first, _Opened) else first)
                tar.addfile(info, reader)  # type: ignore[arg-type]
                reader.finish()
    finally:
        prefetch.close()
    files = {
        name: PackedFile(
            name=name, sha256=digest, data=sparse.get(name), generation=prefetch.generations.get(name)
        )
        for name, digest in prefetch.digests.items()
    }
    return PackedChunk(
        sha256=sink.finish(), size=sink.stored_size, raw_size=sink.raw_size, entries=len(entries), files=files
    )
