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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from shardkeeper.api.common import Codec
from shardkeeper.archive.codecs import decompressor
from shardkeeper.archive.pack import COPY_BUFFER, Cancelled
from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry


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


class _StoredStream:
    """Reads the stored chunk on a thread of its own, hashing it; hands out decompressed bytes."""

    _END = object()

    def __init__(self, source: BinaryIO, codec: Codec, cancelled: threading.Event, depth: int = 8) -> None:
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
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set() or self._cancelled.is_set():
                    raise Cancelled from None

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

    def drain(self) -> None:
        """Reads what tar left unread (padding), so that the whole stored chunk is hashed."""
        while self.read(COPY_BUFFER):
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def unpack_chunk(
    source: BinaryIO,
    *,
    codec: Codec,
    chunk: ExpectedChunk,
    target: Path,
    allowed_roots: set[str],
    on_bytes: Callable[[int], None],
    cancelled: threading.Event,
) -> list[str]:
    """Writes the chunk's files under ``target``; returns their paths. Raises ``IntegrityError`` or
    ``UnsafeArchiveEntry`` on any mismatch, leaving what it wrote for the caller to discard."""
    stream = _StoredStream(source, codec, cancelled)
    written: list[str] = []
    real_target = target.resolve()
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=COPY_BUFFER) as tar:  # type: ignore[call-overload]
            for member in tar:
                name = check_entry_path(member.name, allowed_roots)
                if not member.isreg():
                    raise UnsafeArchiveEntry(
                        f"archive entry {name!r} is not a regular file (links and devices are never restored)"
                    )
                expected = chunk.files.get(name)
                if expected is None:
                    raise IntegrityError(f"chunk {chunk.key}: {name!r} is not in the node descriptor")
                if member.size != expected.size:
                    raise IntegrityError(
                        f"chunk {chunk.key}: {name!r} has {member.size} bytes, expected {expected.size}"
                    )
                dest = real_target / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.parent.resolve() != dest.parent or real_target not in dest.parents:
                    raise UnsafeArchiveEntry(
                        f"archive entry {name!r} would be written outside the staging area"
                    )
                content = tar.extractfile(member)
                assert content is not None
                sha = hashlib.sha256()
                try:
                    out = dest.open("xb")  # "x": never overwrite what is there
                except FileExistsError:
                    raise IntegrityError(f"chunk {chunk.key}: {name!r} appears twice") from None
                with out:
                    while block := content.read(COPY_BUFFER):
                        if cancelled.is_set():
                            raise Cancelled
                        sha.update(block)
                        out.write(block)
                        on_bytes(len(block))
                if sha.hexdigest() != expected.sha256:
                    raise IntegrityError(f"chunk {chunk.key}: {name!r} does not match its sha256")
                dest.chmod(expected.mode & 0o7777)
                os.utime(dest, (member.mtime, member.mtime))
                written.append(name)
            stream.drain()
    except tarfile.TarError as exc:
        raise IntegrityError(f"chunk {chunk.key}: not a valid archive: {exc}") from exc
    except IntegrityError as exc:
        if chunk.key in str(exc):
            raise
        raise IntegrityError(f"chunk {chunk.key}: {exc}") from exc
    finally:
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
