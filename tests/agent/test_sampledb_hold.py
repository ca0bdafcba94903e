"""The sample database's hold after a restart: RocksDB reopened on its data starts a newer WAL than
``min-log-number-to-keep`` names (found when the kubelet restarted a database pod, make cluster-e2e)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web

from testbed.rocks import (
    Collection,
    _find_live_wal,
    hold_writes,
    list_files,
    live_wal,
    open_rocksdb,
    pause_compaction,
    resume_writes,
)
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


def test_the_hold_reads_the_live_wal_found_before_it_and_finds_it_again_after_a_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding the live WAL lists the collection's directory (O(files)): ``pause_compaction`` does
    it before the hold, and the hold only reads its length, unless a memtable switch (a new WAL)
    came in between."""
    path = tmp_path / "articles"
    path.mkdir()
    col = Collection("articles", path, open_rocksdb(path))
    col.db[b"k"] = b"v"
    with ThreadPoolExecutor(2) as pool:
        pause_compaction([col], pool)
    col.db[b"k2"] = b"v2"  # a write after the hint: the same WAL, longer
    found = _find_live_wal(col)
    listed: list[Path] = []
    real_glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: listed.append(self) or real_glob(self, pattern))
    assert live_wal(col) == found and listed == []  # the length read, no directory listed
    col.db.flush()  # a memtable switch: a new WAL
    switched = live_wal(col)
    assert listed == [path] and switched[0] != found[0] and switched == _find_live_wal(col)
    col.db.close()
