"""Packing files into chunks: planning, every codec, checksums, and stopping when cancelled."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import threading
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from shardkeeper.api.common import Codec, CompressionLevel
from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
from shardkeeper.archive.pack import PLAIN_BLOCK, pack_chunk, plan_chunks
from shardkeeper.archive.prefetch import INLINE_BELOW, Cancelled, ChangedAfterSnapshot
from shardkeeper.archive.source import SourceEntry
from shardkeeper.storage.base import Writer
from shardkeeper.storage.checksum import HashingWriter
from shardkeeper.storage.filesystem import FilesystemStorage

MTIME_NS = 1_700_000_000_123_456_789


def _file(path: str, size: int, mode: int = 0o644, mtime_ns: int = 0) -> SourceEntry:
    return SourceEntry(name=path, type=EntryType.FILE, mode=mode, mtime_ns=mtime_ns, size=size)


def _files(*sizes: int) -> list[SourceEntry]:
    return [_file(f"c/f{i}", s) for i, s in enumerate(sizes)]


def _plan(entries: list[SourceEntry], target_bytes: int, **kw: int) -> list[list[SourceEntry]]:
    return [
        entries[r.start : r.stop] for r in plan_chunks([e.data_size for e in entries], target_bytes, **kw)
    ]


def test_plan_groups_small_files_and_isolates_big_ones() -> None:
    chunks = _plan(_files(10, 20, 30, 100, 5, 60, 50), target_bytes=64)
    assert [[f.size for f in c] for c in chunks] == [[10, 20, 30], [100], [5], [60], [50]]


def test_plan_never_makes_a_chunk_of_directories_alone() -> None:
    root = SourceEntry(name="c", type=EntryType.DIR, mode=0o755, mtime_ns=0)
    sub = SourceEntry(name="c/d", type=EntryType.DIR, mode=0o755, mtime_ns=0)
    chunks = _plan([root, sub, _file("c/d/big", 100), _file("c/d/small", 10)], target_bytes=64)
    assert [[e.name for e in c] for c in chunks] == [["c", "c/d", "c/d/big"], ["c/d/small"]]


def test_plan_of_nothing_is_nothing() -> None:
    assert plan_chunks([], target_bytes=64) == []


def test_plan_bounds_the_entries_of_a_chunk() -> None:
    chunks = _plan(_files(*[1] * 7), target_bytes=64, max_entries=3)
    assert [len(c) for c in chunks] == [3, 3, 1]


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=200), max_size=60),
    target=st.integers(min_value=1, max_value=128),
    max_entries=st.integers(min_value=1, max_value=8),
)
def test_a_plan_keeps_every_entry_in_order_within_both_bounds(
    sizes: list[int], target: int, max_entries: int
) -> None:
    entries = _files(*sizes)
    chunks = _plan(entries, target_bytes=target, max_entries=max_entries)
    assert [e for c in chunks for e in c] == entries
    for c in chunks:
        assert 1 <= len(c) <= max_entries
        big = [e for e in c if e.size >= target]
        # A chunk is within the target, or holds one big file (last) and nothing with content before it.
        assert sum(e.size for e in c) <= target or (big == [c[-1]] and sum(e.size for e in c[:-1]) == 0)


def _source(tmp_path: Path) -> list[SourceEntry]:
    root = tmp_path / "data"
    (root / "col" / "sub").mkdir(parents=True)
    contents = {
        "col/a.sst": os.urandom(300_000),
        "col/big.sst": os.urandom(2_500_001),  # several read blocks whatever the codec, the last partial
        "col/b.json": b'{"k": "v"}\n' * 50_000,
        "col/sub/empty": b"",
        # Read by the packing thread itself (below INLINE_BELOW), between files read ahead.
        "col/small.sst": os.urandom(10_000),
        "col/just-below.sst": os.urandom(INLINE_BELOW - 1),
        "col/at.sst": os.urandom(INLINE_BELOW),
    }
    files = []
    for rel, data in contents.items():
        (root / rel).write_bytes(data)
        files.append(_file(rel, len(data), 0o640, MTIME_NS))
    return files


def _unpack(codec: Codec, stored: bytes) -> dict[str, bytes]:
    raw = {
        Codec.GZIP: gzip.decompress,
        Codec.ZSTD: lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
        Codec.NONE: lambda b: b,
    }[codec](stored)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        assert all(m.mtime == MTIME_NS // 10**9 for m in tar.getmembers())  # ns: in the descriptor
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


@pytest.mark.parametrize("writes_here", [False, True], ids=["writes-on-io-thread", "writes-here"])
@pytest.mark.parametrize("level", list(CompressionLevel))
def test_every_level_round_trips_with_a_plain_reader(
    tmp_path: Path, level: CompressionLevel, writes_here: bool
) -> None:
    files = _source(tmp_path)
    storage = FilesystemStorage(root=tmp_path / "store")
    choice = CODEC_FOR_LEVEL[level]
    read: list[int] = []
    with storage.writer("chunk-1") as writer:
        hashing = HashingWriter(writer)
        packed = pack_chunk(
            files,
            root=tmp_path / "data",
            writer=hashing,
            choice=choice,
            on_bytes=lambda _logical, n: read.append(n),
            cancelled=threading.Event(),
            writes_here=writes_here,
        )
    stored = storage.get_bytes("chunk-1")
    assert hashing.hexdigest() == blake3.blake3(stored).hexdigest() and packed.size == len(stored)
    assert sum(read) == sum(f.size for f in files)
    out = _unpack(choice.codec, stored)
    for f in files:
        content = (tmp_path / "data" / f.name).read_bytes()
        assert out[f.name] == content
        assert packed.files[f.name].sha256 == hashlib.sha256(content).hexdigest()
        assert packed.files[f.name].data is None
    if choice.codec is not Codec.NONE:
        assert packed.size < packed.raw_size


def test_cancelling_stops_the_chunk_and_leaves_no_object(tmp_path: Path) -> None:
    files = _source(tmp_path)
    storage = FilesystemStorage(root=tmp_path / "store")
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled), storage.writer("chunk-1") as writer:
        pack_chunk(
            files,
            root=tmp_path / "data",
            writer=writer,
            choice=CODEC_FOR_LEVEL[CompressionLevel.DEFAULT],
            on_bytes=lambda _l, _n: None,
            cancelled=cancelled,
        )
    assert storage.list("") == []
    assert not any((tmp_path / "store").rglob("*tmp*"))


@pytest.mark.parametrize("name", ["col/a.sst", "col/small.sst"], ids=["read-ahead", "read-in-place"])
def test_a_file_that_shrank_fails_the_chunk(tmp_path: Path, name: str) -> None:
    files = _source(tmp_path)
    (tmp_path / "data" / name).write_bytes(b"short")
    storage = FilesystemStorage(root=tmp_path / "store")
    with (
        pytest.raises(ChangedAfterSnapshot, match="changed after it was frozen"),
        storage.writer("chunk-1") as writer,
    ):
        pack_chunk(
            files,
            root=tmp_path / "data",
            writer=writer,
            choice=CODEC_FOR_LEVEL[CompressionLevel.NONE],
            on_bytes=lambda _l, _n: None,
            cancelled=threading.Event(),
        )
    assert storage.list("") == []


class _CountingWriter(Writer):
    def __init__(self) -> None:
        self.writes: list[int] = []

    def write(self, data: bytes | memoryview) -> int:
        self.writes.append(len(data))
        return len(data)

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_small_pieces_reach_the_writer_gathered(tmp_path: Path) -> None:
    """300 files of 1 KB are 900 pieces of the tar stream (header, data, padding): the writer gets
    them in blocks of PLAIN_BLOCK, not one by one (the round trips above check the bytes)."""
    root = tmp_path / "data"
    (root / "col").mkdir(parents=True)
    files = []
    for i in range(300):
        (root / "col" / f"f{i}").write_bytes(os.urandom(1000))
        files.append(_file(f"col/f{i}", 1000, 0o640, MTIME_NS))
    writer = _CountingWriter()
    packed = pack_chunk(
        files,
        root=root,
        writer=writer,
        choice=CODEC_FOR_LEVEL[CompressionLevel.NONE],
        on_bytes=lambda _l, _n: None,
        cancelled=threading.Event(),
    )
    assert sum(writer.writes) == packed.size == packed.raw_size
    assert len(writer.writes) <= -(-packed.size // PLAIN_BLOCK)  # each full (but the last)
    assert all(n >= PLAIN_BLOCK for n in writer.writes[:-1])
