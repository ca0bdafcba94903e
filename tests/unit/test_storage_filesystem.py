"""The filesystem backend: atomic objects, listing, prefix deletes, and keys that cannot escape."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardkeeper.api.common import Backend
from shardkeeper.errors import BackendNotConfigured, ObjectNotFound, StorageError
from shardkeeper.storage import open_storage
from shardkeeper.storage.filesystem import FilesystemStorage


def test_objects_are_invisible_until_committed(tmp_path: Path) -> None:
    s = FilesystemStorage(root=tmp_path, prefix="base")
    with s.writer("id/node/col/chunk-1") as w:
        w.write(b"abc")
        assert s.list("id/") == []
    assert s.get_bytes("id/node/col/chunk-1") == b"abc"
    assert (tmp_path / "base" / "id" / "node" / "col" / "chunk-1").read_bytes() == b"abc"


def test_list_stat_delete(tmp_path: Path) -> None:
    s = FilesystemStorage(root=tmp_path)
    for key in ("b1/x", "b1/n/y", "b10/z"):
        s.put_bytes(key, key.encode())
    assert [o.key for o in s.list("b1/")] == ["b1/n/y", "b1/x"]
    assert [o.key for o in s.list("")] == ["b1/n/y", "b1/x", "b10/z"]
    assert s.stat("b1/x") is not None and s.stat("b1/x").size == 4  # type: ignore[union-attr]
    assert s.stat("nope") is None
    assert s.delete_prefix("b1") == 2
    assert [o.key for o in s.list("")] == ["b10/z"]
    assert not (tmp_path / "b1").exists()
    with pytest.raises(ObjectNotFound):
        s.get_bytes("b1/x")


@pytest.mark.parametrize("key", ["/abs", "../up", "a/../b", "a//b", "", "a\\b"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError):
        FilesystemStorage(root=tmp_path).put_bytes(key, b"x")


def test_not_configured_names_the_missing_variable() -> None:
    with pytest.raises(BackendNotConfigured, match="BACKUP_FILESYSTEM_PATH"):
        open_storage(Backend.FILESYSTEM, env={})


def test_path_override_replaces_the_default_path(tmp_path: Path) -> None:
    s = open_storage(Backend.FILESYSTEM, path="team-a/nightly", env={"BACKUP_FILESYSTEM_PATH": str(tmp_path)})
    s.put_bytes("id/backup_config.json", b"{}")
    assert (tmp_path / "team-a" / "nightly" / "id" / "backup_config.json").exists()
    assert s.url("id") == str(tmp_path / "team-a" / "nightly" / "id")


def test_delete_prefix_removes_what_a_crashed_writer_left(tmp_path: Path) -> None:
    s = FilesystemStorage(root=tmp_path)
    s.put_bytes("b/n/chunk-1", b"done")
    dead = s._writer(s.full("b/n/chunk-2"))  # a writer whose process died: never committed or aborted
    dead.write(b"half")
    assert [o.key for o in s.list("b/")] == ["b/n/chunk-1"]
    assert s.delete_prefix("b/n") == 1
    assert not (tmp_path / "b").exists()
