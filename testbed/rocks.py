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


@dataclass
class Collection:
    name: str
    path: Path
    db: rocksdict.Rdict
    #: Held by writers for each put, and by a hook prepare for the whole hold.
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_seq: int = 0
    acked: int = 0


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
    timer: asyncio.TimerHandle | None = None
    expired: bool = False

    def report(self) -> dict[str, Any]:
        """The hook's ``HeldWrites`` fields."""
        iso = lambda ns: dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat()  # noqa: E731
        out: dict[str, Any] = {"heldFrom": iso(self.held_from)}
        if self.held_until is not None:
            out |= {"heldUntil": iso(self.held_until), "heldMs": self.held_ms}
        return out


def open_rocksdb(path: Path) -> rocksdict.Rdict:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(4 << 20)
    # Enough flush threads that a hold's flushes of every collection run at once, not one by one
    # (RocksDB's default gives a process one flush thread: 10 collections took 13-22 ms, now 6-10).
    opts.set_max_background_jobs(40)
    return rocksdict.Rdict(str(path), opts)


def hold_writes(cols: list[Collection], pool: ThreadPoolExecutor, resume: bool) -> Hold:
    """Holds writes to ``cols`` while their memtables are flushed and each MANIFEST's length is
    read (O(collections), never O(files)); with ``resume``, writes resume at once after."""
    held = Hold(cols)
    for n, col in enumerate(cols):
        col.lock.acquire()
        if n == 0:
            held.began = time.perf_counter()  # writes to this one are held from here on
    held.held_from = time.time_ns()  # every collection held: the node's state is fixed from here
    try:
        list(pool.map(lambda c: c.db.flush(), cols))
        for col in cols:
            manifest = (col.path / "CURRENT").read_text().strip()
            held.manifests[col.name] = (manifest, (col.path / manifest).stat().st_size)
    except BaseException:
        resume_writes(held)
        raise
    if resume:
        resume_writes(held)
    return held


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
    and a table written after the writes resumed (later mtime) is not part of it; the MANIFEST
    (append-only) counts up to its length at the hold, as RocksDB's GetLiveFiles reports it."""
    until = held.held_until
    files: list[dict[str, Any]] = []
    for col in held.cols:
        manifest, manifest_size = held.manifests[col.name]
        with os.scandir(col.path) as it:
            for entry in sorted(it, key=lambda e: e.name):
                name, path = entry.name, f"{col.name}/{entry.name}"
                if name.endswith(IMMUTABLE_SUFFIXES):
                    if until is None or entry.stat().st_mtime_ns <= until:
                        files.append({"path": path, "immutable": True})
                elif name == manifest:
                    files.append({"path": path, "immutable": False, "size": manifest_size})
                elif name.startswith(COPIED_PREFIXES) and not name.startswith("MANIFEST-"):
                    files.append({"path": path, "immutable": False})
    return files


def pause_compaction(cols: list[Collection], pool: ThreadPoolExecutor) -> None:
    """Pauses compaction (nothing listed is deleted until the release) and waits for a running one."""
    for col in cols:
        col.db.set_options({"disable_auto_compactions": "true"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        c.db.property_int_value("rocksdb.num-running-compactions") for c in cols
    ):
        time.sleep(0.005)
    # Flush once before holding writes, so that the flush inside the hold has little to do.
    list(pool.map(lambda c: c.db.flush(), cols))
