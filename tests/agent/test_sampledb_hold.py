"""The sample database's hold after a restart: RocksDB reopened on its data starts a newer WAL than
``min-log-number-to-keep`` names (found when the kubelet restarted a database pod, make cluster-e2e)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web

from testbed.rocks import Collection, hold_writes, list_files, open_rocksdb, resume_writes
from testbed.sampledb import SampleDb


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


async def test_a_deferred_listing_holds_writes_until_resume_and_lists_the_state_at_the_hold(
    tmp_path: Path,
) -> None:
    """Cluster consistency: the prepare answers without files while writes are held; resume lets
    writes through and lists the WAL only up to its length at the hold, so a write made after the
    resume is not in the snapshot; compaction stays paused until the release."""
    (tmp_path / "articles").mkdir()
    db = SampleDb("n0", tmp_path, value_size=100, hold_timeout=30)
    col = db.open("articles")
    db.write(col, 200)
    answer = await db.prepare("b1", ["articles"], hold_timeout=30, resume=False, defer=True)
    assert "files" not in answer and "heldFrom" in answer and "heldUntil" not in answer
    assert not col.lock.acquire(blocking=False)  # writes are held
    with pytest.raises(web.HTTPConflict) as refused:
        await db.resume("other")
    assert refused.value.text == "not holding for other"

    listed = await db.resume("b1")
    assert "heldUntil" in listed and listed["heldMs"] >= 0
    db.write(col, 50)  # writes flow again: after the hold, not in the snapshot
    wal = next(f for f in listed["files"] if f["path"].endswith(".log"))
    assert (tmp_path / wal["path"]).stat().st_size > wal["size"]
    with pytest.raises(web.HTTPConflict) as again:
        await db.resume("b1")
    assert again.value.text == "writes for b1 were resumed already"
    db.release("b1")
    assert "b1" not in db.holds
    col.db.close()
