"""Packing frozen files into chunks: tar entries, compressed, hashed, streamed to a backend writer.

Memory stays bounded: files are read in 1 MiB pieces and every piece goes straight through the
compressor into the writer. sha256 is computed per file (over its content) and per chunk (over the
stored bytes), both on the way through.
"""

from __future__ import annotations

import hashlib
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

    def write(self, data: bytes) -> int:
        self.raw_size += len(data)
        self._emit(self._compressor.compress(data))
        return len(data)

    def tell(self) -> int:
        return self.raw_size

    def finish(self) -> str:
        self._emit(self._compressor.flush())
        return self._sha.hexdigest()

    def _emit(self, out: bytes) -> None:
        if out:
            self._sha.update(out)
            self._writer.write(out)
            self.stored_size += len(out)


class _HashingReader:
    def __init__(self, path: Path, on_bytes: Callable[[int], None], cancelled: threading.Event) -> None:
        self._file = path.open("rb", buffering=0)
        self._sha = hashlib.sha256()
        self._on_bytes = on_bytes
        self._cancelled = cancelled

    def read(self, n: int = -1) -> bytes:
        if self._cancelled.is_set():
            raise Cancelled
        data = self._file.read(n)
        self._sha.update(data)
        self._on_bytes(len(data))
        return data

    def close(self) -> str:
        self._file.close()
        return self._sha.hexdigest()


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
    packed: list[PackedFile] = []
    with tarfile.TarFile(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_BUFFER) as tar:  # type: ignore[arg-type]
        for f in files:
            info = tarfile.TarInfo(f.path)
            info.size = f.size
            info.mode = f.mode & 0o7777
            info.mtime = int(f.mtime)
            reader = _HashingReader(root / f.path, on_bytes, cancelled)
            try:
                tar.addfile(info, reader)
            finally:
                digest = reader.close()
            packed.append(PackedFile(path=f.path, size=f.size, sha256=digest, mode=info.mode))
    digest = sink.finish()
    return PackedChunk(sha256=digest, size=sink.stored_size, raw_size=sink.raw_size, files=packed)
