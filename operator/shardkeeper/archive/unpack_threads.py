"""The two threads beside a chunk's unpacking thread: one reads, hashes and decompresses the stored
bytes (``StoredStream``), one writes big files' contents (``FileWriter``); and how a restored file is
created (``create_new``: never one that is there, never through a link) and given its mode and mtime
(``settle``)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from shardkeeper.api.common import Codec
from shardkeeper.archive.codecs import decompressed
from shardkeeper.archive.prefetch import COPY_BUFFER, Cancelled, get_unless_cancelled, put_unless_stopped
from shardkeeper.archive.tarstream import Source
from shardkeeper.archive.tree import shown
from shardkeeper.errors import IntegrityError, ShardkeeperError
from shardkeeper.storage.checksum import chunk_hasher

#: How much of a file is written before its writeback to disk is started.
WRITEBACK_EVERY = 8 << 20


class StoredStream:
    """Reads the stored chunk, hashes and decompresses it on a thread of its own; hands out the
    decompressed bytes. Decompressing there, not on the thread that parses and hashes each file,
    splits a restore's CPU work between the two (zstd-1, against ``zstd -d | tar -x``: 0.79-0.87x
    when one thread decompressed and hashed, 0.86-1.01x after; see ``benchmarks/README.md``)."""

    _END = object()

    def __init__(
        self, source: Source, codec: Codec, algorithm: str, cancelled: threading.Event, depth: int = 8
    ) -> None:
        self._source = source
        self._codec = codec
        self._cancelled = cancelled
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.sha = chunk_hasher(algorithm)
        self.stored = 0
        self._pending = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="unpack-read", daemon=True)
        self._thread.start()

    def _stored_blocks(self) -> Iterator[bytes]:
        while block := self._source.read(COPY_BUFFER):
            self.sha.update(block)
            self.stored += len(block)
            yield block

    def _run(self) -> None:
        try:
            try:
                for piece in decompressed(self._codec, self._stored_blocks()):
                    self._put(piece)
            except (Cancelled, ShardkeeperError):
                raise
            except Exception as exc:  # isal/zstd errors: the stored bytes are not what was written
                raise IntegrityError(f"cannot decompress ({self._codec}): {exc}") from exc
            self._put(self._END)
        except BaseException as exc:  # handed to the consuming thread, which raises it
            with contextlib.suppress(Cancelled):
                self._put(exc)

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop, self._cancelled)

    def _more(self) -> None:
        """Takes the next decompressed piece (at most COPY_BUFFER bytes) into ``_pending``."""
        item = get_unless_cancelled(self._queue, self._cancelled)
        if item is self._END:
            self._ended = True
        else:
            self._pending = memoryview(item)  # type: ignore[arg-type]

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 62
        parts: list[memoryview] = []
        got = 0
        while got < n:
            if not self._pending:
                if self._ended:
                    break
                self._more()
                continue
            take = self._pending[: n - got]
            parts.append(take)
            got += len(take)
            self._pending = self._pending[len(take) :]
        return b"".join(parts)

    def read_view(self, n: int) -> memoryview:
        """Up to ``n`` bytes without copying (fewer at a block boundary); empty only at the end."""
        while not self._pending:
            if self._ended:
                return memoryview(b"")
            self._more()
        take = self._pending[:n]
        self._pending = self._pending[len(take) :]
        return take

    def drain(self) -> None:
        """Reads what the archive left unread (end blocks, padding), so the whole chunk is hashed."""
        while self.read_view(COPY_BUFFER):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class FileWriter:
    """Writes file contents on a thread of its own. Writing into the page cache is the costliest
    step of a restore here, and it releases the GIL: it overlaps decompressing, parsing and hashing
    the next blocks. The queue between the two stays short."""

    _END = object()

    def __init__(self, cancelled: threading.Event, depth: int = 8) -> None:
        self._cancelled = cancelled
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="unpack-write", daemon=True)
        self._thread.start()

    def put(self, op: str, arg: object = None) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put((op, arg), timeout=0.5)
                return
            except queue.Full:
                if self._cancelled.is_set():
                    raise Cancelled from None

    def finish(self) -> None:
        self._queue.put(self._END)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stops the writer once the unpacking thread has given up: it skips what is queued, and
        the end marker gets in as it makes room. (Dropped when the queue was full, the marker
        never came, and the restore waited on the writer forever.)"""
        if not self._thread.is_alive():
            return
        self.error = self.error or Cancelled()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(self._END, timeout=0.1)
                break
        self._thread.join()

    def _run(self) -> None:
        out: BinaryIO | None = None
        mark = 0  # where the data not yet handed to writeback starts
        while (item := self._queue.get()) is not self._END:
            if self.error is not None:
                continue  # drain, so that the producer never blocks on a dead writer
            op, arg = cast("tuple[str, Any]", item)
            try:
                if op == "open":
                    mark = 0
                    out = open(create_new(arg), "wb")  # noqa: SIM115  # closed by "close", or below
                elif op == "seek":  # the next data segment of a sparse file
                    assert out is not None
                    out.seek(arg)
                    mark = arg
                elif op == "data":
                    assert out is not None
                    out.write(arg)
                    if out.tell() - mark >= WRITEBACK_EVERY:
                        # Start writing this range to disk now (it does not wait): the sync before
                        # the restore becomes visible then finds little left to do.
                        out.flush()
                        os.posix_fadvise(out.fileno(), mark, out.tell() - mark, os.POSIX_FADV_DONTNEED)
                        mark = out.tell()
                else:  # "close": (size, mode, mtime_ns)
                    assert out is not None
                    size, mode, mtime_ns = arg
                    out.truncate(size)  # a sparse file's trailing hole
                    out.flush()
                    settle(out.fileno(), mode, mtime_ns)
                    os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # its writeback starts
                    out.close()
                    out = None
            except BaseException as exc:
                self.error = exc
        if out is not None:
            out.close()


def settle(fd: int, mode: int, mtime_ns: int) -> None:
    """Gives a file just written its mode and mtime. Through the descriptor, never the path
    again: the file just written, and no lookup per file."""
    os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))


def create_new(dest: Path) -> int:
    """Opens a new file for writing; never one that is there, never through a link."""
    try:
        return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise IntegrityError(f'"{shown(str(dest))}" appears twice') from None


__all__ = ["WRITEBACK_EVERY", "FileWriter", "StoredStream", "create_new", "settle"]
