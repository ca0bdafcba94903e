"""The sample database's hold after a restart: RocksDB reopened on its data starts a newer WAL than
``min-log-number-to-keep`` names (found when the kubelet restarted a database pod, make cluster-e2e)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testbed.rocks import Collection, hold_writes, list_files, open_rocksdb, resume_writes


def test_a_reopened_collection_holds_and_lists_its_live_wal(tmp_path: Path) -> None:
    path = tmp_path / "articles"
    path.mkdir()
    db = open_rocksdb(path)
    for i in range(500):
        db[f"k{i}".encode()] = b"x" * 100
    db.close()
    col = Collection("articles", path, open_rocksdb(path))  # as a restarted pod opens it
    col.db[b"after-restart"] = b"y"
    with ThreadPoolExecutor(2) as pool:
        held = hold_writes([col], pool, resume=True)
    resume_writes(held)
    wal, size = held.wals["articles"]
    assert wal and (path / wal).stat().st_size >= size > 0
    listed = {f["path"]: f for f in list_files(held)}
    assert listed[f"articles/{wal}"]["size"] == size
    col.db.close()
