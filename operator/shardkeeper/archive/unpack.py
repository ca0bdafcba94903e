"""Unpacking a chunk into a staging directory, verifying everything on the way.

The stored bytes are hashed as they stream in (the chunk's sha256 and size must match the node
descriptor), every file's content is hashed as it is written (sha256 and size must match), and only
regular files that the descriptor lists, at paths that stay inside the target, are accepted. Any
doubt raises before the caller moves anything into place; the staging directory is then discarded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from shardkeeper.api.common import Codec
from shardkeeper.archive.codecs import decompressor
from shardkeeper.archive.pack import COPY_BUFFER, Cancelled, put_unless_stopped
from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry

#: How much of a file is written before its writeback to disk is started.
WRITEBACK_EVERY = 8 << 20


@dataclass(frozen=True)
class ExpectedFile:
    path: str
    size: int
    sha256: str
    mode: int


@dataclass(frozen=True)
class ExpectedChunk:
    key: str
    sha256: str
    size: int
    files: Mapping[str, ExpectedFile]


def check_entry_path(name: str, allowed_roots: set[str]) -> str:
    """A path that is relative, has no '.' or '..' or empty segments, and starts with an allowed
    collection. Anything else would, or could, land outside the target."""
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts) or len(parts) < 2:
        raise UnsafeArchiveEntry(f"archive entry {name!r} would be written outside the staging area")
    if parts[0] not in allowed_roots:
        raise UnsafeArchiveEntry(f"archive entry {name!r} is outside the collections being restored")
    return name


class Source(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _StoredStream:
    """Reads the stored chunk on a thread of its own, hashing it; hands out decompressed bytes."""

    _END = object()

    def __init__(self, source: Source, codec: Codec, cancelled: threading.Event, depth: int = 8) -> None:
        self._source = source
        self._codec = codec
        self._cancelled = cancelled
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.sha = hashlib.sha256()
        self.stored = 0
        self._decompress = decompressor(codec)
        self._pending = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="unpack-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while block := self._source.read(COPY_BUFFER):
                self.sha.update(block)
                self.stored += len(block)
                self._put(block)
            self._put(self._END)
        except BaseException as exc:
            with contextlib.suppress(Cancelled):
                self._put(exc)

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop, self._cancelled)

    def _more(self) -> None:
        """Takes the next stored block and decompresses it into ``_pending`` (possibly empty)."""
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if self._cancelled.is_set():
                    raise Cancelled from None
        if isinstance(item, BaseException):
            raise item
        try:
            if item is self._END:
                self._ended = True
                flush = getattr(self._decompress, "flush", None)
                self._pending = memoryview(flush() if flush else b"")
            else:
                self._pending = memoryview(self._decompress.decompress(item))  # type: ignore[arg-type]
        except Exception as exc:  # zlib/isal/zstd errors: the stored bytes are not what was written
            raise IntegrityError(f"cannot decompress ({self._codec}): {exc}") from exc

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


class _FileWriter:
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
        if self._thread.is_alive():
            self.error = self.error or Cancelled()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(self._END)
            self._thread.join()

    def _run(self) -> None:
        out: BinaryIO | None = None
        written = flushed = 0
        while (item := self._queue.get()) is not self._END:
            if self.error is not None:
                continue  # drain, so that the producer never blocks on a dead writer
            op, arg = cast("tuple[str, Any]", item)
            try:
                if op == "open":
                    written = flushed = 0
                    try:
                        out = arg.open("xb")  # "x": never overwrite what is there
                    except FileExistsError:
                        raise IntegrityError(f"{arg.name!r} appears twice") from None
                elif op == "data":
                    assert out is not None
                    out.write(arg)
                    written += len(arg)
                    if written - flushed >= WRITEBACK_EVERY:
                        # Start writing this range to disk now (it does not wait): the sync before
                        # the restore becomes visible then finds little left to do.
                        out.flush()
                        os.posix_fadvise(out.fileno(), flushed, written - flushed, os.POSIX_FADV_DONTNEED)
                        flushed = written
                else:  # "close": (path, mode, mtime)
                    assert out is not None
                    out.flush()
                    os.posix_fadvise(out.fileno(), flushed, 0, os.POSIX_FADV_DONTNEED)
                    out.close()
                    out = None
                    dest, mode, mtime = arg
                    dest.chmod(mode)
                    os.utime(dest, (mtime, mtime))
            except BaseException as exc:
                self.error = exc
        if out is not None:
            out.close()


@dataclass
class _Member:
    name: str
    size: int
    type: bytes
    mtime: int


def _pax_records(data: bytes) -> dict[str, str]:
    """'<length> <key>=<value>\\n' records of a PAX extended header."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _members(stream: _StoredStream) -> Iterator[_Member]:
    """The members of a tar stream (ustar, PAX and GNU long names). The caller reads each member's
    data (padded to 512 bytes) before asking for the next."""
    overrides: dict[str, str] = {}
    while True:
        header = stream.read(512)
        if len(header) < 512 or header == bytes(512):
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise IntegrityError(f"not a valid archive header: {exc}") from exc
        padded = -(-info.size // 512) * 512
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            records = _pax_records(stream.read(padded)[: info.size])
            if info.type == tarfile.XHDTYPE:
                overrides = records
            continue
        if info.type == tarfile.GNUTYPE_LONGNAME:
            overrides = {
                "path": stream.read(padded)[: info.size].rstrip(b"\0").decode("utf-8", "surrogateescape")
            }
            continue
        yield _Member(
            name=overrides.get("path", info.name),
            size=int(overrides.get("size", info.size)),
            type=info.type,
            mtime=int(float(overrides.get("mtime", info.mtime))),
        )
        overrides = {}


def unpack_chunk(
    source: Source,
    *,
    codec: Codec,
    chunk: ExpectedChunk,
    target: Path,
    allowed_roots: set[str],
    on_bytes: Callable[[int], None],
    cancelled: threading.Event,
) -> list[str]:
    """Writes the chunk's files under ``target``; returns their paths. Raises ``IntegrityError`` or
    ``UnsafeArchiveEntry`` on any mismatch, leaving what it wrote for the caller to discard.

    Three threads share the work: one reads and hashes the stored bytes, this one decompresses,
    parses and hashes each file, one writes."""
    stream = _StoredStream(source, codec, cancelled)
    writer = _FileWriter(cancelled)
    real_target = target.resolve()
    checked_dirs: set[Path] = set()
    written: list[str] = []
    try:
        for member in _members(stream):
            name = check_entry_path(member.name, allowed_roots)
            if member.type not in tarfile.REGULAR_TYPES:
                raise UnsafeArchiveEntry(
                    f"archive entry {name!r} is not a regular file (links and devices are never restored)"
                )
            expected = chunk.files.get(name)
            if expected is None:
                raise IntegrityError(f"{name!r} is not in the node descriptor")
            if member.size != expected.size:
                raise IntegrityError(f"{name!r} has {member.size} bytes, expected {expected.size}")
            dest = real_target / name
            if dest.parent not in checked_dirs:  # once per directory: made here, never a link
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.parent.resolve() != dest.parent or real_target not in dest.parents:
                    raise UnsafeArchiveEntry(
                        f"archive entry {name!r} would be written outside the staging area"
                    )
                checked_dirs.add(dest.parent)
            writer.put("open", dest)
            sha = hashlib.sha256()
            left = member.size
            while left:
                if cancelled.is_set():
                    raise Cancelled
                block = stream.read_view(min(left, COPY_BUFFER))
                if not block:
                    raise IntegrityError(f"{name!r} is cut short")
                sha.update(block)
                writer.put("data", block)
                on_bytes(len(block))
                left -= len(block)
            if sha.hexdigest() != expected.sha256:
                raise IntegrityError(f"{name!r} does not match its sha256")
            writer.put("close", (dest, expected.mode & 0o7777, member.mtime))
            stream.read(-member.size % 512)
            written.append(name)
        stream.drain()
        writer.finish()
    except IntegrityError as exc:
        raise IntegrityError(f"chunk {chunk.key}: {exc}") from exc
    finally:
        writer.abandon()
        stream.close()
    if stream.stored != chunk.size or stream.sha.hexdigest() != chunk.sha256:
        raise IntegrityError(
            f"chunk {chunk.key}: checksum mismatch (stored {stream.stored} bytes, sha256 "
            f"{stream.sha.hexdigest()[:16]}…; the descriptor says {chunk.size} bytes, {chunk.sha256[:16]}…)"
        )
    missing = sorted(set(chunk.files) - set(written))
    if missing:
        raise IntegrityError(f"chunk {chunk.key}: files missing from the archive: {missing[:5]}")
    return written
