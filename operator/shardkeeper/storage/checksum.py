"""Checksums of stored chunks: BLAKE3 from format 4 on, sha256 in formats 1-3 (still verified).

A chunk's checksum covers its stored (compressed) bytes, so a copy or a restore can verify an
object before trusting a byte of it. Files keep their sha256 (``Entry.sha256``): users compare it
with ``sha256sum``, and incremental backups with their base's. The chunk's is ours alone, and
BLAKE3 does it at 3-5 GB/s on one core where sha256 (SHA-NI) does 1-1.4 GB/s: every stored byte
was hashed twice (as a file, then as a chunk), and the second pass was the largest single cost of a
NoCompression backup (see ``benchmarks/README.md``). Both libraries release the GIL.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import blake3

from shardkeeper.storage.base import Writer

#: The algorithm a writer of this version records for new chunks.
CHUNK_CHECKSUM = "blake3"


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def chunk_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for ``algorithm`` ("blake3" or "sha256"). Raises ``ValueError`` otherwise."""
    if algorithm == "blake3":
        return blake3.blake3(max_threads=1)
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown chunk checksum {algorithm!r}")


class HashingWriter(Writer):
    """Hashes (``CHUNK_CHECKSUM``) and counts what goes through to ``inner``. Under a
    ``BackgroundWriter`` the hashing runs on the I/O thread, off the thread that compresses."""

    def __init__(self, inner: Writer) -> None:
        self._inner = inner
        self._hash = chunk_hasher(CHUNK_CHECKSUM)
        self.size = 0

    @property
    def local(self) -> bool:
        return self._inner.local

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._inner.write(data)

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()

    def hexdigest(self) -> str:
        """The checksum of everything written so far."""
        return self._hash.hexdigest()


__all__ = ["CHUNK_CHECKSUM", "Hasher", "HashingWriter", "chunk_hasher"]
