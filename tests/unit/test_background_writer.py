"""BackgroundWriter: which thread writes and commits, in both modes, and where errors surface."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shardkeeper.errors import StorageError
from shardkeeper.storage import BackgroundWriter
from shardkeeper.storage.base import Writer
from shardkeeper.storage.checksum import HashingWriter
from shardkeeper.storage.filesystem import FilesystemStorage


class _Recording(Writer):
    """Records what it was given and on which thread; fails the write numbered ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.data = bytearray()
        self.threads: dict[str, set[int]] = {"write": set(), "commit": set(), "abort": set()}
        self._fail_at = fail_at
        self._writes = 0

    def write(self, data: bytes | memoryview) -> int:
        self.threads["write"].add(threading.get_ident())
        self._writes += 1
        if self._writes == self._fail_at:
            raise StorageError("disk full")
        self.data += data
        return len(data)

    def commit(self) -> None:
        self.threads["commit"].add(threading.get_ident())

    def abort(self) -> None:
        self.threads["abort"].add(threading.get_ident())


@pytest.mark.parametrize("inline", [False, True], ids=["io-thread", "inline"])
def test_writes_keep_their_order_and_the_commit_runs_on_the_io_thread(inline: bool) -> None:
    inner = _Recording()
    writer = BackgroundWriter(inner, inline_writes=inline)
    pieces = [bytes([i]) * (i + 1) for i in range(50)]
    for piece in pieces:
        assert writer.write(piece) == len(piece)
    writer.commit_later().result(timeout=10)
    here = threading.get_ident()
    assert inner.data == b"".join(pieces)
    assert inner.threads["write"] == ({here} if inline else inner.threads["commit"])
    assert inner.threads["commit"] and here not in inner.threads["commit"]


def test_a_failed_write_fails_the_commit_on_the_io_thread() -> None:
    inner = _Recording(fail_at=2)
    writer = BackgroundWriter(inner)
    for _ in range(3):
        writer.write(b"x")  # the failure is not the producer's to see yet
    with pytest.raises(StorageError, match="disk full"):
        writer.commit_later().result(timeout=10)
    assert inner.data == b"x"  # nothing after the failed write


def test_an_inline_write_fails_at_once_and_the_abort_reaches_the_writer() -> None:
    inner = _Recording(fail_at=2)
    writer = BackgroundWriter(inner, inline_writes=True)
    writer.write(b"x")
    with pytest.raises(StorageError, match="disk full"):
        writer.write(b"y")
    writer.abort()
    assert inner.threads["abort"] and not inner.threads["commit"]
    with pytest.raises(StorageError, match="aborted"):
        writer.done.result(timeout=10)


def test_only_the_filesystem_writer_is_local(tmp_path: Path) -> None:
    writer = FilesystemStorage(root=tmp_path).open_writer("chunk")
    try:
        assert writer.local and HashingWriter(writer).local
        assert not _Recording().local and not HashingWriter(_Recording()).local
    finally:
        writer.abort()
