"""Packing frozen files into chunks: tar entries, compressed, hashed, streamed to a backend writer.

Memory stays bounded: files are read in 1 MiB pieces and every piece goes straight through the
compressor into the writer. sha256 is computed per file (over its content) and per chunk (over the
stored bytes), both on the way through.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shardkeeper.archive.codecs import CodecChoice, compressor
from shardkeeper.storage.base import Writer

COPY_BUFFER = 1 << 20


class Cancelled(Exception):
    """The operation was aborted while this chunk was being written."""


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


@dataclass(frozen=True)
class SourceFile:
    path: str  # posix, relative to the root the chunk is packed from; starts with the collection
    size: int
    mode: int
    mtime: float


@dataclass(frozen=True)
class PackedFile:
    path: str
    size: int
    sha256: str
    mode: int


@dataclass(frozen=True)
class PackedChunk:
    sha256: str
    size: int
    raw_size: int
    files: list[PackedFile]


def plan_chunks(files: Sequence[SourceFile], target_bytes: int) -> list[list[SourceFile]]:
    """Groups files, in order, into chunks of about ``target_bytes`` uncompressed.

    A file larger than the target gets a chunk of its own, so that big immutable files stay
    addressable one by one. Empty input gives no chunks.
    """
    chunks: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    current_bytes = 0
    for f in files:
        big = f.size >= target_bytes
        if current and (big or current_bytes + f.size > target_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        if big:
            chunks.append([f])
            continue
        current.append(f)
        current_bytes += f.size
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


class _Prefetcher:
    """Reads a chunk's files, in order, on a thread of its own: each file is hashed there, and its
    blocks wait in a short queue for the thread that frames and compresses them. Both hashlib and
    the codecs release the GIL, so reading, hashing and compressing overlap on two cores while
    memory stays at ``depth`` blocks."""

    _END = object()

    def __init__(
        self,
        files: Sequence[SourceFile],
        root: Path,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
        depth: int = 8,
    ) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._cancelled = cancelled
        self._stop = threading.Event()
        self.digests: list[str] = []
        self._thread = threading.Thread(
            target=self._run, args=(files, root, on_bytes), name="pack-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop, self._cancelled)

    def _run(self, files: Sequence[SourceFile], root: Path, on_bytes: Callable[[int], None]) -> None:
        try:
            for f in files:
                sha = hashlib.sha256()
                with (root / f.path).open("rb", buffering=0) as src:
                    while block := src.read(COPY_BUFFER):
                        if self._stop.is_set() or self._cancelled.is_set():
                            raise Cancelled
                        sha.update(block)
                        on_bytes(len(block))
                        self._put(block)
                self.digests.append(sha.hexdigest())
                self._put(self._END)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            with contextlib.suppress(Cancelled):
                self._put(exc)

    def reader(self) -> _BlockReader:
        return _BlockReader(self._queue, self._cancelled)

    def close(self) -> None:
        """Stops the thread (if the consumer gave up early) and waits for it."""
        self._stop.set()
        self._thread.join()


class _BlockReader:
    """The file object tarfile reads one file from: blocks from the prefetch queue, exact sizes."""

    def __init__(self, blocks: queue.Queue[object], cancelled: threading.Event) -> None:
        self._blocks = blocks
        self._cancelled = cancelled
        self._pending = memoryview(b"")
        self._ended = False

    def _next(self) -> None:
        while True:
            try:
                item = self._blocks.get(timeout=0.5)
                break
            except queue.Empty:
                if self._cancelled.is_set():
                    raise Cancelled from None
        if item is _Prefetcher._END:
            self._ended = True
        elif isinstance(item, BaseException):
            raise item
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
                raise OSError("file grew while it was packed")
            self._next()


def pack_chunk(
    files: Sequence[SourceFile],
    *,
    root: Path,
    writer: Writer,
    choice: CodecChoice,
    on_bytes: Callable[[int], None],
    cancelled: threading.Event,
) -> PackedChunk:
    """Writes ``files`` (read from ``root``) as one compressed tar stream into ``writer``.

    The caller commits or aborts the writer. Files must not change while they are read; the
    agent only packs its frozen staging copy.
    """
    sink = _ChunkSink(writer, choice)
    prefetch = _Prefetcher(files, root, on_bytes, cancelled)
    try:
        tar_file = tarfile.TarFile(
            fileobj=sink,  # type: ignore[arg-type]
            mode="w",
            format=tarfile.PAX_FORMAT,
            copybufsize=COPY_BUFFER,
        )
        with tar_file as tar:
            for f in files:
                info = tarfile.TarInfo(f.path)
                info.size = f.size
                info.mode = f.mode & 0o7777
                info.mtime = int(f.mtime)
                reader = prefetch.reader()
                tar.addfile(info, reader)  # type: ignore[arg-type]
                reader.finish()
    finally:
        prefetch.close()
    packed = [
        PackedFile(path=f.path, size=f.size, sha256=digest, mode=f.mode & 0o7777)
        for f, digest in zip(files, prefetch.digests, strict=True)
    ]
    return PackedChunk(sha256=sink.finish(), size=sink.stored_size, raw_size=sink.raw_size, files=packed)
