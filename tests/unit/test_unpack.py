"""Unpacking: a round trip of what pack writes, and every way a chunk can lie."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shardkeeper.api.common import Codec, CompressionLevel
from shardkeeper.api.descriptors import Entry, EntryType
from shardkeeper.archive import unpack_threads
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL, compressor
from shardkeeper.archive.pack import pack_chunk
from shardkeeper.archive.prefetch import INLINE_BELOW, Cancelled
from shardkeeper.archive.source import SourceEntry
from shardkeeper.archive.unpack import ExpectedChunk, unpack_chunk
from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry
from shardkeeper.storage.checksum import HashingWriter
from shardkeeper.storage.filesystem import FilesystemStorage

CONTENT = {
    "col/a.sst": os.urandom(200_000),  # written by the unpacking thread (below INLINE_BELOW)
    "col/sub/b.json": b'{"k": 1}\n' * 30_000,  # by the writer thread
    "col/empty": b"",
    "col/big.sst": os.urandom(INLINE_BELOW),
}
MTIME_NS = 1_700_000_000_500_000_000


def _packed(tmp_path: Path, level: CompressionLevel) -> tuple[FilesystemStorage, ExpectedChunk]:
    src = tmp_path / "src"
    files = []
    for rel, data in CONTENT.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        files.append(
            SourceEntry(name=rel, type=EntryType.FILE, mode=0o640, mtime_ns=MTIME_NS, size=len(data))
        )
    store = FilesystemStorage(root=tmp_path / "store")
    with store.writer("chunk") as w:
        hashing = HashingWriter(w)
        packed = pack_chunk(
            files,
            root=src,
            writer=hashing,
            choice=CODEC_FOR_LEVEL[level],
            on_bytes=lambda _l, _n: None,
            cancelled=threading.Event(),
        )
    entries = {
        f.name: Entry.make(
            f.name,
            EntryType.FILE,
            size=f.size,
            sha256=packed.files[f.name].sha256,
            mode=f.mode,
            mtime_ns=f.mtime_ns,
            chunk=1,
        )
        for f in files
    }
    chunk = ExpectedChunk(
        key="chunk-1", digest=hashing.hexdigest(), size=packed.size, entries=entries, algorithm="blake3"
    )
    return store, chunk


def _unpack(
    store: FilesystemStorage,
    key: str,
    chunk: ExpectedChunk,
    target: Path,
    codec: Codec,
    cancelled: threading.Event | None = None,
) -> list[str]:
    with store.reader(key) as source:
        return unpack_chunk(
            source,
            codec=codec,
            chunk=chunk,
            target=target,
            collection="col",
            on_bytes=lambda _l, _n: None,
            cancelled=cancelled or threading.Event(),
        )


@pytest.mark.parametrize("level", list(CompressionLevel))
def test_round_trip(tmp_path: Path, level: CompressionLevel) -> None:
    store, chunk = _packed(tmp_path, level)
    target = tmp_path / "staging"
    target.mkdir()
    written = _unpack(store, "chunk", chunk, target, CODEC_FOR_LEVEL[level].codec)
    assert sorted(written) == sorted(CONTENT)
    for rel, data in CONTENT.items():
        assert (target / rel).read_bytes() == data
        assert (target / rel).stat().st_mode & 0o777 == 0o640
        assert (target / rel).stat().st_mtime_ns == MTIME_NS


@pytest.mark.parametrize("name", ["col/a.sst", "col/big.sst"], ids=["written-here", "by-the-writer"])
def test_a_flipped_byte_fails_the_file_and_leaves_it_unfinished(tmp_path: Path, name: str) -> None:
    store, chunk = _packed(tmp_path, CompressionLevel.NONE)
    path = tmp_path / "store" / "chunk"
    data = bytearray(path.read_bytes())
    data[data.index(CONTENT[name][:64]) + 1000] ^= 0xFF  # inside the file's content
    path.write_bytes(bytes(data))
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match=rf'"{name}" does not match its sha256'):
        _unpack(store, "chunk", chunk, target, Codec.NONE)
    # A small file is checked before it is written; a big one is left for the caller to discard.
    assert not (target / name).exists() or (target / name).read_bytes() != CONTENT[name]


@pytest.mark.parametrize("name", ["col/a.sst", "col/big.sst"], ids=["written-here", "by-the-writer"])
def test_a_file_that_is_there_is_never_overwritten(tmp_path: Path, name: str) -> None:
    store, chunk = _packed(tmp_path, CompressionLevel.ZSTD_BEST_SPEED)
    target = tmp_path / "staging"
    (target / "col").mkdir(parents=True)
    (target / name).write_bytes(b"already here")
    with pytest.raises(IntegrityError, match=rf'"{target / name}" appears twice'):
        _unpack(store, "chunk", chunk, target, Codec.ZSTD)
    assert (target / name).read_bytes() == b"already here"


def test_corrupted_compressed_data_is_an_integrity_error(tmp_path: Path) -> None:
    store, chunk = _packed(tmp_path, CompressionLevel.DEFAULT)
    path = tmp_path / "store" / "chunk"
    data = bytearray(path.read_bytes())
    for i in range(100, 200):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError):
        _unpack(store, "chunk", chunk, target, Codec.GZIP)


@pytest.mark.parametrize(
    ("name", "where"), [("col/a.sst", "at its first member"), ("col/sub/b.json", 'after "col/a.sst"')]
)
def test_a_corrupt_header_says_which_member_it_follows(tmp_path: Path, name: str, where: str) -> None:
    store, chunk = _packed(tmp_path, CompressionLevel.NONE)
    path = tmp_path / "store" / "chunk"
    data = bytearray(path.read_bytes())
    header = data.index(name.encode() + b"\0")
    data[header + 148 : header + 156] = b"garbage!"  # the header's checksum field
    path.write_bytes(bytes(data))
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match="not a valid archive header") as raised:
        _unpack(store, "chunk", chunk, target, Codec.NONE)
    assert str(raised.value).endswith(f"({where})")


def test_a_decompression_bomb_stays_in_bounded_memory(tmp_path: Path) -> None:
    """Some KB of zstd that expand to 2 GiB are read in bounded pieces, then refused."""
    import resource

    import zstandard

    frame, zeros = zstandard.ZstdCompressor(level=3).compressobj(), bytes(64 << 20)
    bomb = b"".join(frame.compress(zeros) for _ in range(32)) + frame.flush()  # one frame of 2 GiB
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes("chunk", bomb)
    chunk = ExpectedChunk("chunk-1", "0" * 64, len(bomb), {})
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        _unpack(store, "chunk", chunk, target, Codec.ZSTD)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 1_000_000  # KiB: far below 2 GiB


def _crafted(tmp_path: Path, build: Any, entries: list[Entry]) -> tuple[FilesystemStorage, ExpectedChunk]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    comp = compressor(CODEC_FOR_LEVEL[CompressionLevel.DEFAULT])
    stored = bytes(comp.compress(raw.getvalue())) + comp.flush()
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes("chunk", stored)
    listed = {e.name: e for e in entries}
    return store, ExpectedChunk("chunk-1", hashlib.sha256(stored).hexdigest(), len(stored), listed)


EVIL = b"pwned"


def _file_entry(name: str) -> Entry:
    return Entry.make(
        name, EntryType.FILE, size=len(EVIL), sha256=hashlib.sha256(EVIL).hexdigest(), mode=0o644, chunk=1
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes = EVIL, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "../escape"},
        {"name": "/etc/evil"},
        {"name": "col/../../escape"},
        {"name": "other/file"},
        {"name": "col/dev", "type": tarfile.CHRTYPE, "data": b""},
        {"name": "col/fifo", "type": tarfile.FIFOTYPE, "data": b""},
    ],
)
def test_entries_that_would_escape_or_are_never_restored_are_refused(
    tmp_path: Path, entry: dict[str, Any]
) -> None:
    name = str(entry.pop("name"))
    data = entry.pop("data", EVIL)
    store, chunk = _crafted(
        tmp_path, lambda tar: (_add(tar, "col/ok"), _add(tar, name, data, **entry)), [_file_entry("col/ok")]
    )
    target = tmp_path / "deep" / "staging"
    target.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveEntry):
        _unpack(store, "chunk", chunk, target, Codec.GZIP)
    assert not (tmp_path / "deep" / "escape").exists() and not (tmp_path / "escape").exists()


def test_a_link_the_descriptor_does_not_say_is_refused(tmp_path: Path) -> None:
    listed = Entry.make("col/link", EntryType.SYMLINK, target="000001.sst", mode=0o777, chunk=1)
    store, chunk = _crafted(
        tmp_path,
        lambda tar: _add(tar, "col/link", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
        [listed],
    )
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match="links elsewhere"):
        _unpack(store, "chunk", chunk, target, Codec.GZIP)
    assert not (target / "col" / "link").exists()


def test_entries_the_descriptor_does_not_list_are_refused(tmp_path: Path) -> None:
    store, chunk = _crafted(tmp_path, lambda tar: _add(tar, "col/unlisted"), [])
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match="not in the node descriptor"):
        _unpack(store, "chunk", chunk, target, Codec.GZIP)


def test_a_setuid_mode_in_a_descriptor_is_never_restored(tmp_path: Path) -> None:
    entry = Entry.make(
        "col/ok",
        EntryType.FILE,
        size=len(EVIL),
        sha256=hashlib.sha256(EVIL).hexdigest(),
        mode=0o6755,
        chunk=1,
    )
    store, chunk = _crafted(tmp_path, lambda tar: _add(tar, "col/ok", mode=0o6755), [entry])
    target = tmp_path / "staging"
    target.mkdir()
    _unpack(store, "chunk", chunk, target, Codec.GZIP)
    assert (target / "col" / "ok").stat().st_mode & 0o7777 == 0o755


class _SlowFile:
    """A file on a slow disk: every write takes 40 ms, so the writer's queue stays full."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        time.sleep(0.04)
        return int(self._f.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _unpack_in_thread(run: Any) -> BaseException | None:
    """Runs ``run`` on a thread; fails the test if it has not ended in 30 s (a hang)."""
    raised: list[BaseException | None] = [None]

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # what the restore would see
            raised[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the unpacking hung"
    return raised[0]


@pytest.mark.parametrize("failure", ["small-file-there", "cancelled"])
def test_a_failure_while_the_writer_is_behind_ends_the_unpacking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """A big file's blocks fill the writer's queue on a slow disk; then the unpacking thread
    fails (a small file already there) or the restore is cancelled: the error reaches the caller."""
    monkeypatch.setitem(globals(), "CONTENT", {"col/big.sst": os.urandom(24 << 20), "col/a.sst": b"x" * 1000})
    store, chunk = _packed(tmp_path, CompressionLevel.NONE)
    slow = lambda fd, mode: _SlowFile(open(fd, mode))  # noqa: E731, SIM115  # the writer's open()
    monkeypatch.setattr(unpack_threads, "open", slow, raising=False)
    target = tmp_path / "staging"
    (target / "col").mkdir(parents=True)
    cancelled = threading.Event()
    if failure == "small-file-there":
        (target / "col" / "a.sst").write_bytes(b"there")
    else:
        threading.Timer(0.2, cancelled.set).start()

    raised = _unpack_in_thread(lambda: _unpack(store, "chunk", chunk, target, Codec.NONE, cancelled))
    expected = IntegrityError if failure == "small-file-there" else Cancelled
    assert isinstance(raised, expected), raised
    assert not [t for t in threading.enumerate() if t.name == "unpack-write"]


@pytest.mark.parametrize("hole_at", ["start", "end"])
def test_a_sparse_files_holes_count_as_restored_bytes_not_written_ones(tmp_path: Path, hole_at: str) -> None:
    """Progress counts a file's apparent size, as the backup did, so a restore of sparse files
    reaches its bytesTotal; the throttle is told only of the bytes written."""
    src = tmp_path / "src"
    (src / "col").mkdir(parents=True)
    data, size = os.urandom(8192), 4 << 20
    with open(src / "col" / "sparse", "wb") as f:
        f.seek(size - len(data) if hole_at == "start" else 0)
        f.write(data)
        f.truncate(size)
    f_entry = SourceEntry(name="col/sparse", type=EntryType.FILE, mode=0o640, mtime_ns=MTIME_NS, size=size)
    store = FilesystemStorage(root=tmp_path / "store")
    with store.writer("chunk") as w:
        hashing = HashingWriter(w)
        packed = pack_chunk(
            [f_entry],
            root=src,
            writer=hashing,
            choice=CODEC_FOR_LEVEL[CompressionLevel.NONE],
            on_bytes=lambda _l, _n: None,
            cancelled=threading.Event(),
        )
    stored = packed.files["col/sparse"]
    assert stored.data is not None, "the filesystem kept no hole: nothing to test"
    entry = Entry.make(
        "col/sparse", EntryType.FILE, size=size, sha256=stored.sha256, mode=0o640, data=stored.data, chunk=1
    )
    chunk = ExpectedChunk(
        "chunk-1", hashing.hexdigest(), packed.size, {"col/sparse": entry}, algorithm="blake3"
    )
    counted: list[tuple[int, int]] = []
    target = tmp_path / "staging"
    target.mkdir()
    with store.reader("chunk") as source:
        unpack_chunk(
            source,
            codec=Codec.NONE,
            chunk=chunk,
            target=target,
            collection="col",
            on_bytes=lambda logical, written: counted.append((logical, written)),
            cancelled=threading.Event(),
        )
    assert sum(logical for logical, _ in counted) == size
    assert sum(written for _, written in counted) == sum(n for _, n in stored.data)
    assert (target / "col" / "sparse").read_bytes() == (src / "col" / "sparse").read_bytes()
