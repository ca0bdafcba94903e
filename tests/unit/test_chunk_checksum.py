"""Chunk checksums: BLAKE3 from format 4 on, sha256 in the formats before (still verified)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import blake3
import pytest
from pydantic import ValidationError

from shardkeeper.api.common import Codec
from shardkeeper.api.descriptors import ChunkEntry
from shardkeeper.archive.unpack import ExpectedChunk, unpack_chunk
from shardkeeper.errors import IntegrityError
from shardkeeper.storage.checksum import HashingWriter
from shardkeeper.storage.filesystem import FilesystemStorage

DIGEST = "ab" * 32


def test_a_chunk_has_exactly_one_checksum() -> None:
    assert ChunkEntry(n=1, key="chunk-1", blake3=DIGEST, size=1, raw_size=1, files=1).checksum == (
        "blake3",
        DIGEST,
    )
    old = ChunkEntry.model_validate(
        {"n": 1, "key": "k", "sha256": DIGEST, "size": 1, "rawSize": 1, "files": 1}
    )
    assert old.checksum == ("sha256", DIGEST)
    with pytest.raises(ValidationError, match="exactly one of sha256 and blake3"):
        ChunkEntry(n=1, key="k", size=1, raw_size=1, files=1)
    with pytest.raises(ValidationError, match="exactly one of sha256 and blake3"):
        ChunkEntry(n=1, key="k", sha256=DIGEST, blake3=DIGEST, size=1, raw_size=1, files=1)


def test_the_hashing_writer_checksums_what_it_stores(tmp_path: Path) -> None:
    store = FilesystemStorage(root=tmp_path)
    with store.writer("obj") as inner:
        w = HashingWriter(inner)
        w.write(b"hello ")
        w.write(memoryview(b"world"))
    assert w.hexdigest() == blake3.blake3(b"hello world").hexdigest() and w.size == 11


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_an_empty_chunk_is_verified_by_its_own_algorithm(tmp_path: Path, algorithm: str) -> None:
    """An archive of no members (two zero blocks): right digest passes, a wrong one is refused."""
    stored = bytes(1024)
    good = blake3.blake3(stored).hexdigest() if algorithm == "blake3" else hashlib.sha256(stored).hexdigest()
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes("chunk", stored)
    for digest, ok in ((good, True), ("0" * 64, False)):
        chunk = ExpectedChunk("chunk", digest, len(stored), {}, algorithm=algorithm)
        target = tmp_path / f"t-{ok}"
        target.mkdir()

        def run(chunk: ExpectedChunk = chunk, target: Path = target) -> list[str]:
            with store.reader("chunk") as source:
                return unpack_chunk(
                    source,
                    codec=Codec.NONE,
                    chunk=chunk,
                    target=target,
                    collection="col",
                    on_bytes=lambda _l, _n: None,
                    cancelled=threading.Event(),
                )

        if ok:
            assert run() == []
        else:
            with pytest.raises(IntegrityError, match=f"checksum mismatch.*{algorithm}"):
                run()
