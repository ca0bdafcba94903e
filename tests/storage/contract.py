"""The storage contract, as tests every backend runs unchanged (fsspec's idea: one suite, many
backends). A backend's test class inherits ``StorageContract`` and provides a ``storage`` fixture
that returns a fresh, empty storage (a new prefix) for every test."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable

import pytest

from shardkeeper.errors import ObjectNotFound, StorageError
from shardkeeper.storage.base import Storage

MiB = 1 << 20


class StorageContract:
    storage: Callable[..., Storage]  # provided as a fixture by each backend's class

    def test_put_get_stat(self, storage: Storage) -> None:
        storage.put_bytes("b/node/backup.json", b'{"ok": true}')
        assert storage.get_bytes("b/node/backup.json") == b'{"ok": true}'
        info = storage.stat("b/node/backup.json")
        assert info is not None and info.size == 12 and info.key == "b/node/backup.json"
        assert storage.exists("b/node/backup.json")

    def test_missing_objects(self, storage: Storage) -> None:
        assert storage.stat("nope/x") is None
        assert not storage.exists("nope/x")
        with pytest.raises(ObjectNotFound):
            storage.get_bytes("nope/x")

    def test_empty_object(self, storage: Storage) -> None:
        storage.put_bytes("empty", b"")
        assert storage.get_bytes("empty") == b""
        assert storage.stat("empty").size == 0  # type: ignore[union-attr]

    def test_nothing_is_visible_before_commit_and_abort_leaves_nothing(self, storage: Storage) -> None:
        writer = storage.open_writer("b/chunk-1")
        writer.write(os.urandom(3 * MiB))
        assert storage.list("b/") == []
        writer.abort()
        assert storage.list("b/") == []
        assert not storage.exists("b/chunk-1")

        with pytest.raises(RuntimeError), storage.writer("b/chunk-2") as w:
            w.write(b"partial")
            raise RuntimeError("the producer failed")
        assert not storage.exists("b/chunk-2")

    def test_large_object_streams_in_parts(self, storage: Storage) -> None:
        sha, size = hashlib.sha256(), 0
        with storage.writer("big/chunk-1") as w:
            for _ in range(21):  # 21 MiB: several parts of every backend's upload
                block = os.urandom(MiB)
                sha.update(block)
                size += len(block)
                w.write(block)
        assert storage.stat("big/chunk-1").size == size  # type: ignore[union-attr]
        back = hashlib.sha256()
        with storage.reader("big/chunk-1") as r:
            while block := r.read(700_000):  # not aligned to anything on purpose
                back.update(block)
        assert back.hexdigest() == sha.hexdigest()

    def test_overwrite_replaces(self, storage: Storage) -> None:
        storage.put_bytes("k", b"one")
        storage.put_bytes("k", b"two")
        assert storage.get_bytes("k") == b"two"

    def test_list_is_by_prefix_and_sorted(self, storage: Storage) -> None:
        for key in ("b1/x", "b1/n/y", "b10/z", "c"):
            storage.put_bytes(key, key.encode())
        assert [o.key for o in storage.list("b1/")] == ["b1/n/y", "b1/x"]
        assert [o.key for o in storage.list("b1")] == ["b1/n/y", "b1/x", "b10/z"]
        assert [(o.key, o.size) for o in storage.list("")] == [
            ("b1/n/y", 6),
            ("b1/x", 4),
            ("b10/z", 5),
            ("c", 1),
        ]

    def test_list_dirs(self, storage: Storage) -> None:
        for key in ("nightly/backup_config.json", "nightly/n0/backup.json", "weekly/n0/x", "loose"):
            storage.put_bytes(key, b"x")
        assert storage.list_dirs() == ["nightly", "weekly"]
        assert storage.list_dirs("nightly") == ["n0"]

    def test_delete_prefix_and_delete(self, storage: Storage) -> None:
        for key in ("b1/x", "b1/n/y", "b10/z"):
            storage.put_bytes(key, b"x")
        assert storage.delete_prefix("b1") == 2
        assert [o.key for o in storage.list("")] == ["b10/z"]
        storage.delete("b10/z")
        assert storage.list("") == []
        storage.delete("b10/z")  # deleting what is gone is fine

    def test_prefixes_isolate(self, storage: Storage, make_storage: Callable[[str], Storage]) -> None:
        other = make_storage(storage.prefix + "-other")
        storage.put_bytes("id/backup_config.json", b"mine")
        assert other.list("") == []
        assert storage.prefix in storage.url("id/backup_config.json")

    @pytest.mark.parametrize("key", ["/abs", "../up", "a/../b", "a//b", ""])
    def test_keys_cannot_escape(self, storage: Storage, key: str) -> None:
        with pytest.raises(StorageError):
            storage.put_bytes(key, b"x")

    def test_concurrent_writers(self, storage: Storage) -> None:
        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                with storage.writer(f"c/{i}") as w:
                    for _ in range(3):
                        w.write(bytes([i]) * MiB)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for i in range(4):
            assert storage.get_bytes(f"c/{i}") == bytes([i]) * 3 * MiB
