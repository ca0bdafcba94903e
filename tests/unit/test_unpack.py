"""Unpacking: a round trip of what pack writes, and every way a chunk can lie."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from shardkeeper.api.common import Codec, CompressionLevel
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL, compressor
from shardkeeper.archive.pack import SourceFile, pack_chunk
from shardkeeper.archive.unpack import ExpectedChunk, ExpectedFile, unpack_chunk
from shardkeeper.errors import IntegrityError, UnsafeArchiveEntry
from shardkeeper.storage.filesystem import FilesystemStorage

CONTENT = {"col/a.sst": os.urandom(200_000), "col/sub/b.json": b'{"k": 1}\n' * 30_000, "col/empty": b""}


def _packed(tmp_path: Path, level: CompressionLevel) -> tuple[FilesystemStorage, ExpectedChunk]:
    src = tmp_path / "src"
    files = []
    for rel, data in CONTENT.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        files.append(SourceFile(rel, len(data), 0o640, 1_700_000_000))
    store = FilesystemStorage(root=tmp_path / "store")
    with store.writer("chunk") as w:
        packed = pack_chunk(
            files,
            root=src,
            writer=w,
            choice=CODEC_FOR_LEVEL[level],
            on_bytes=lambda n: None,
            cancelled=threading.Event(),
        )
    expected = ExpectedChunk(
        key="col/chunk-1",
        sha256=packed.sha256,
        size=packed.size,
        files={f.path: ExpectedFile(f.path, f.size, f.sha256, f.mode) for f in packed.files},
    )
    return store, expected


def _unpack(
    store: FilesystemStorage, key: str, chunk: ExpectedChunk, target: Path, codec: Codec
) -> list[str]:
    with store.reader(key) as source:
        return unpack_chunk(
            source,
            codec=codec,
            chunk=chunk,
            target=target,
            allowed_roots={"col"},
            on_bytes=lambda n: None,
            cancelled=threading.Event(),
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
        assert int((target / rel).stat().st_mtime) == 1_700_000_000


def test_a_flipped_byte_fails_the_checksum(tmp_path: Path) -> None:
    store, chunk = _packed(tmp_path, CompressionLevel.NONE)
    path = tmp_path / "store" / "chunk"
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF  # inside the first file's content
    path.write_bytes(bytes(data))
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match=r"does not match its sha256|checksum mismatch"):
        _unpack(store, "chunk", chunk, target, Codec.NONE)


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


def _crafted(tmp_path: Path, build) -> tuple[FilesystemStorage, ExpectedChunk]:  # type: ignore[no-untyped-def]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    comp = compressor(CODEC_FOR_LEVEL[CompressionLevel.DEFAULT])
    stored = comp.compress(raw.getvalue()) + comp.flush()
    store = FilesystemStorage(root=tmp_path / "store")
    store.put_bytes("chunk", bytes(stored))
    evil = b"pwned"
    files = {
        name: ExpectedFile(name, len(evil), hashlib.sha256(evil).hexdigest(), 0o644)
        for name in ("col/ok", "../escape", "/etc/evil", "col/../../escape", "col/link")
    }
    return store, ExpectedChunk("col/chunk-1", hashlib.sha256(stored).hexdigest(), len(stored), files)


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"pwned", **attrs: object) -> None:
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
        {"name": "col/link", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd", "data": b""},
        {"name": "col/link", "type": tarfile.LNKTYPE, "linkname": "../../outside", "data": b""},
    ],
)
def test_entries_that_would_escape_are_refused(tmp_path: Path, entry: dict[str, object]) -> None:
    name = str(entry.pop("name"))
    data = entry.pop("data", b"pwned")
    store, chunk = _crafted(tmp_path, lambda tar: (_add(tar, "col/ok"), _add(tar, name, data, **entry)))  # type: ignore[arg-type]
    target = tmp_path / "deep" / "staging"
    target.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveEntry):
        _unpack(store, "chunk", chunk, target, Codec.GZIP)
    assert not (tmp_path / "deep" / "escape").exists() and not (tmp_path / "escape").exists()
    assert not (target / "col" / "link").exists()


def test_entries_the_descriptor_does_not_list_are_refused(tmp_path: Path) -> None:
    store, chunk = _crafted(tmp_path, lambda tar: _add(tar, "col/unlisted"))
    target = tmp_path / "staging"
    target.mkdir()
    with pytest.raises(IntegrityError, match="not in the node descriptor"):
        _unpack(store, "chunk", chunk, target, Codec.GZIP)
