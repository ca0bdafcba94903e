"""The sample database's collections (RocksDB directories), and how it holds them for a snapshot."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rocksdict

IMMUTABLE_SUFFIXES = (".sst", ".blob")
COPIED_PREFIXES = ("CURRENT", "MANIFEST-", "OPTIONS-", "IDENTITY", "rocksdict-config.json")
WRITE_BUFFER_SIZE = 4 << 20


@dataclass
class Collection:
    name: str
    path: Path
    db: rocksdict.Rdict
    #: Held by writers for each put, and by a hook prepare for the whole hold.
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_seq: int = 0
    acked: int = 0
    #: The live WAL as found before a hold, and the super version it was found at (``live_wal``).
    wal_hint: tuple[tuple[str, int], int] | None = None


@dataclass
class Hold:
    """One prepare's hold: writes (``held_from``..``held_until``, wall clock ns), and compaction
    until the release."""

    cols: list[Collection]
    began: float = 0.0
    held_from: int = 0
    held_until: int | None = None
    held_ms: float | None = None
    manifests: dict[str, tuple[str, int]] = field(default_factory=dict)
    wals: dict[str, tuple[str, int]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    expired: bool = False

    def report(self) -> dict[str, Any]:
        """The hook's ``HeldWrites`` fields."""

        def iso(ns: int) -> str:
            return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()

        out: dict[str, Any] = {"heldFrom": iso(self.held_from)}
        if self.held_until is not None:
            out |= {"heldUntil": iso(self.held_until), "heldMs": self.held_ms}
        return out


def open_rocksdb(path: Path) -> rocksdict.Rdict:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(WRITE_BUFFER_SIZE)
    # Enough flush threads that the flushes before a hold run at once, not one by one.
    opts.set_max_background_jobs(40)
    opts.set_max_open_files(1000)  # 50,000 tables on a node must not need 50,000 descriptors
    return rocksdict.Rdict(str(path), opts)


def hold_writes(cols: list[Collection], pool: ThreadPoolExecutor, resume: bool) -> Hold:
    """Holds writes to ``cols`` while each one's file set is fixed: the length of its current WAL
    and of its MANIFEST (both append-only), a few system calls per collection, never O(files) and
    no flush, so no fsync waits in the hold. A collection with a memtable still being flushed (an
    older WAL still needed) is flushed inside the hold instead. With ``resume``, writes resume at
    once after."""
    held = Hold(cols)
    for n, col in enumerate(cols):
        col.lock.acquire()
        if n == 0:
            held.began = time.perf_counter()  # writes to this one are held from here on
    held.held_from = time.time_ns()  # every collection held: the node's state is fixed from here
    try:
        busy = [c for c in cols if c.db.property_int_value("rocksdb.num-immutable-mem-table")]
        list(pool.map(lambda c: c.db.flush(), busy))
        for col in cols:
            manifest = (col.path / "CURRENT").read_text().strip()
            held.manifests[col.name] = (manifest, (col.path / manifest).stat().st_size)
            held.wals[col.name] = live_wal(col)
    except BaseException:
        resume_writes(held)
        raise
    if resume:
        resume_writes(held)
    return held


def live_wal(col: Collection) -> tuple[str, int]:
    """The WAL new writes go to, and its length, inside the hold in a few system calls: the WAL
    ``pause_compaction`` found is still the live one if no new super version was installed since
    (a memtable switch, which starts a new WAL, installs one), so only its length is read; else
    the directory is listed again (``_find_live_wal``: O(files))."""
    if col.wal_hint is not None:
        (name, _), version = col.wal_hint
        if version == _super_version(col):
            return (name, (col.path / name).stat().st_size) if name else ("", 0)
    return _find_live_wal(col)


def _super_version(col: Collection) -> int:
    return col.db.property_int_value("rocksdb.current-super-version-number") or 0


def _find_live_wal(col: Collection) -> tuple[str, int]:
    """The WAL new writes go to, and its length: one column family and no memtable waiting for a
    flush, so it is the newest ``*.log`` numbered at or above ``min-log-number-to-keep``. That
    number names no file after a reopen (RocksDB then starts a newer log), so the file is looked
    up, not derived. ("", 0) when there is none: nothing unflushed to keep."""
    keep = col.db.property_int_value("rocksdb.min-log-number-to-keep") or 0
    live = sorted(
        (int(p.stem), p) for p in col.path.glob("*.log") if p.stem.isdigit() and int(p.stem) >= keep
    )
    if not live:
        return "", 0
    path = live[-1][1]
    return path.name, path.stat().st_size


def resume_writes(held: Hold) -> None:
    """Ends the write hold (once); ``held_ms`` counts from the first collection held."""
    if held.held_until is not None:
        return
    held.held_until = time.time_ns()
    for col in held.cols:
        col.lock.release()
    held.held_ms = (time.perf_counter() - held.began) * 1000


def list_files(held: Hold) -> list[dict[str, Any]]:
    """The files of the snapshot, listed after the hold: compaction is paused (no table is deleted),
    and a table written after the writes resumed (later mtime) is not part of it; the WAL and the
    MANIFEST (append-only) count up to their length at the hold, as a RocksDB checkpoint copies
    them. (A table written within a clock tick after the hold may be listed too: RocksDB deletes a
    table its MANIFEST does not name when it opens a restored copy.)"""
    until = held.held_until
    files: list[dict[str, Any]] = []
    for col in held.cols:
        manifest, manifest_size = held.manifests[col.name]
        wal, wal_size = held.wals[col.name]
        with os.scandir(col.path) as it:
            for entry in sorted(it, key=lambda e: e.name):
                name, path = entry.name, f"{col.name}/{entry.name}"
                if name.endswith(IMMUTABLE_SUFFIXES):
                    if until is None or entry.stat().st_mtime_ns <= until:
                        files.append({"path": path, "immutable": True})
                elif name == manifest:
                    files.append({"path": path, "immutable": False, "size": manifest_size})
                elif name == wal:
                    files.append({"path": path, "immutable": False, "size": wal_size})
                elif name.startswith(COPIED_PREFIXES) and not name.startswith("MANIFEST-"):
                    files.append({"path": path, "immutable": False})
    return files


#: While a snapshot's files are staged: no compaction (it deletes tables), and no flush (it ends the
#: WAL the snapshot lists a prefix of, and RocksDB then deletes it); ``RUNNING`` comes back at release.
FROZEN = {"disable_auto_compactions": "true", "write_buffer_size": str(1 << 30)}
RUNNING = {"disable_auto_compactions": "false", "write_buffer_size": str(WRITE_BUFFER_SIZE)}


def pause_compaction(cols: list[Collection], pool: ThreadPoolExecutor) -> None:
    """Pauses compaction and flushes (nothing listed is deleted until the release) and waits for a
    running compaction."""
    for col in cols:
        col.db.set_options(FROZEN)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        c.db.property_int_value("rocksdb.num-running-compactions") for c in cols
    ):
        time.sleep(0.005)
    # Flush once before holding writes, so that the WAL the snapshot holds a prefix of is short.
    list(pool.map(lambda c: c.db.flush(), cols))
    # Find each live WAL now, outside the hold: finding it lists the collection's directory.
    for col in cols:
        version = _super_version(col)  # first: a switch after it shows in the hold as a newer one
        col.wal_hint = (_find_live_wal(col), version)
