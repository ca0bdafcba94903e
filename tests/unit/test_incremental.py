"""Incremental backups through the real pack -> storage -> unpack path: what is unchanged is
referenced, not uploaded, and every backup of a chain restores exactly."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from shardkeeper.api.common import CompressionLevel
from shardkeeper.archive import reuse
from shardkeeper.storage.filesystem import FilesystemStorage
from shardkeeper.storage.repository import BackupRepository
from tests.trees import Spec, back_up, make_tree, restore, tree_digest

LEVEL = CompressionLevel.ZSTD_BEST_SPEED


def _backup(
    data: Path, store: FilesystemStorage, backup_id: str, base: str | None, work: Path
) -> tuple[int, int]:
    """(bytes read from files while packing, bytes of chunks this backup stored)."""
    described, read = back_up(data, work, store, backup_id, level=LEVEL, chunk_bytes=1 << 20, base=base)
    return read, sum(ch.size for col in described.collections for ch in col.chunks if not ch.backup)


def _restore(store: FilesystemStorage, backup_id: str, target: Path) -> Path:
    return restore(store, backup_id, target)


def test_a_chain_references_what_is_unchanged_and_restores_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[str] = []
    original = reuse.content_sha256

    def spy(path: Path, cancelled: threading.Event) -> str:
        hashed.append(path.name)
        return original(path, cancelled)

    monkeypatch.setattr(reuse, "content_sha256", spy)
    data = tmp_path / "data"
    specs = [Spec(b"col", "dir", mode=0o755)]
    specs += [Spec(f"col/{i:06d}.sst".encode(), "file", os.urandom(20_000), 0o644) for i in range(40)]
    specs += [Spec(f"col/seg-{i}.json".encode(), "file", os.urandom(20_000), 0o644) for i in range(20)]
    make_tree(data, specs)
    store = FilesystemStorage(root=tmp_path / "store")
    digests = {"full": tree_digest(data / "col")}
    full_read, full_stored = _backup(data, store, "full", None, tmp_path)

    # 5 % of the files change: one table replaced by a new one, two copied files rewritten.
    (data / "col" / "000000.sst").unlink()
    (data / "col" / "000040.sst").write_bytes(os.urandom(20_000))
    for name in ("seg-0.json", "seg-1.json"):
        (data / "col" / name).write_bytes(os.urandom(20_000))
    digests["inc1"] = tree_digest(data / "col")
    inc1_read, inc1_stored = _backup(data, store, "inc1", "full", tmp_path)

    digests["inc2"] = tree_digest(data / "col")  # nothing changed since inc1
    hashed.clear()
    inc2_read, inc2_stored = _backup(data, store, "inc2", "inc1", tmp_path)
    # Tables (hard-linked: immutable) are matched without being read; copied files are hashed.
    assert sorted(hashed) == [f"seg-{i}.json" for i in sorted(range(20), key=str)]

    assert inc2_stored < full_stored * 0.05  # directory entries only
    assert inc1_stored < full_stored * 0.15
    assert inc2_read == 0 and inc1_read <= 4 * 20_000 and full_read == 60 * 20_000  # packed bytes
    for name, digest in digests.items():
        assert tree_digest(_restore(store, name, tmp_path / f"restored-{name}")) == digest, name
    inc2 = BackupRepository(store).node_descriptor("inc2", "n0")
    assert inc2 is not None
    assert {ch.backup for ch in inc2.collections[0].chunks} == {None, "full", "inc1"}  # flattened
    assert BackupRepository(store).dependants("full") == []  # global descriptors are the operator's


def test_a_changed_file_with_the_same_size_and_mtime_is_caught_by_its_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, [Spec(b"col", "dir", mode=0o755), Spec(b"col/state.db", "file", b"a" * 5000, 0o644)])
    store = FilesystemStorage(root=tmp_path / "store")
    _backup(data, store, "full", None, tmp_path)
    make_tree(data, [Spec(b"col/state.db", "file", b"b" * 5000, 0o644)])  # same size, same mtime
    _backup(data, store, "inc", "full", tmp_path)
    assert (_restore(store, "inc", tmp_path / "r") / "state.db").read_bytes() == b"b" * 5000


def test_a_file_that_became_a_directory_or_a_link_is_not_taken_for_the_base_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    empty = [Spec(b"col/was-file", "file", b"", 0o644), Spec(b"col/was-too", "file", b"", 0o644)]
    make_tree(data, [Spec(b"col", "dir", mode=0o755), *empty])
    store = FilesystemStorage(root=tmp_path / "store")
    _backup(data, store, "full", None, tmp_path)
    (data / "col" / "was-file").unlink()
    (data / "col" / "was-too").unlink()
    make_tree(
        data, [Spec(b"col/was-file", "dir", mode=0o755), Spec(b"col/was-too", "symlink", target=b"elsewhere")]
    )
    _backup(data, store, "inc", "full", tmp_path)
    restored = _restore(store, "inc", tmp_path / "r")
    assert tree_digest(restored) == tree_digest(data / "col")


def test_a_new_file_on_a_reused_inode_is_not_taken_for_the_old_one(tmp_path: Path) -> None:
    """Same path, size, mtime, and (ext4 gives it back) the same inode number: another inode."""
    data = tmp_path / "data"
    make_tree(data, [Spec(b"col", "dir", mode=0o755), Spec(b"col/000001.sst", "file", b"A" * 100_000, 0o644)])
    store = FilesystemStorage(root=tmp_path / "store")
    _backup(data, store, "full", None, tmp_path)
    for _ in range(20):  # until the filesystem hands the freed inode number to the new file
        ino = (data / "col" / "000001.sst").stat().st_ino
        (data / "col" / "000001.sst").unlink()
        make_tree(data, [Spec(b"col/000001.sst", "file", b"B" * 100_000, 0o644)])
        if (data / "col" / "000001.sst").stat().st_ino == ino:
            break
    _backup(data, store, "inc", "full", tmp_path)
    assert (_restore(store, "inc", tmp_path / "r") / "000001.sst").read_bytes() == b"B" * 100_000


def test_a_file_that_is_all_holes_comes_back_all_holes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_tree(data, [Spec(b"col", "dir", mode=0o755)])
    with (data / "col" / "holes.db").open("wb") as f:  # copied (not an immutable pattern)
        f.truncate(64 << 20)
    store = FilesystemStorage(root=tmp_path / "store")
    _backup(data, store, "full", None, tmp_path)
    restored = _restore(store, "full", tmp_path / "r") / "holes.db"
    assert restored.stat().st_size == 64 << 20 and restored.stat().st_blocks == 0
