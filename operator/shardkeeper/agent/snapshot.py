"""Freezing a node's file set into staging, so that uploads never race the database.

Immutable files are hard-linked (instant, no extra space) and mutable ones copied, all inside the
data volume under ``.shardkeeper/staging/<id>/``. With a workload hook the workload is paused only
while that happens; without one, copied files are re-checked and copied again if they changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from shardkeeper.agent.hook import HookError, WorkloadHook
from shardkeeper.api.hook import HookFile
from shardkeeper.archive.pack import SourceFile
from shardkeeper.errors import ShardkeeperError

log = structlog.get_logger(__name__)

_HOOKLESS_ATTEMPTS = 3


class SnapshotError(ShardkeeperError):
    pass


@dataclass
class Frozen:
    root: Path
    """Staging directory: files are at ``root/<collection>/...``."""
    files: dict[str, list[SourceFile]]
    hold_started: float | None = None
    """perf_counter() when the workload was asked to hold; None once released (or without a hook)."""

    @property
    def bytes(self) -> int:
        return sum(f.size for files in self.files.values() for f in files)

    @property
    def count(self) -> int:
        return sum(len(files) for files in self.files.values())


def local_collections(data_root: Path, state_dir_name: str) -> list[str]:
    """Top-level directories of the data root, except hidden ones and the agent's own."""
    if not data_root.is_dir():
        return []
    return sorted(
        entry.name
        for entry in os.scandir(data_root)
        if entry.is_dir(follow_symlinks=False)
        and not entry.name.startswith(".")
        and entry.name != state_dir_name
    )


def _collection_of(path: str, collections: set[str]) -> str:
    """The collection a listed path belongs to; refuses anything that could leave the data root."""
    parts = path.split("/")
    if path.startswith("/") or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise SnapshotError(f"workload hook listed an unsafe path {path!r}")
    if parts[0] not in collections:
        raise SnapshotError(f"workload hook listed {path!r}, outside the requested collections")
    return parts[0]


class _Stager:
    """Hard-links (immutable) or copies (mutable) files into staging with as few system calls as
    possible: this runs while the workload is paused, once per file."""

    def __init__(self, data_root: Path, staging: Path) -> None:
        self._src, self._dst = str(data_root), str(staging)
        self._made: set[str] = set()

    def stage(self, rel: str, *, immutable: bool) -> SourceFile:
        src, dst = f"{self._src}/{rel}", f"{self._dst}/{rel}"
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise SnapshotError(f"{rel!r} is not a regular file")
        parent = dst.rpartition("/")[0]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        if immutable:
            os.link(src, dst)  # same inode: the lstat above describes the staged file too
        else:
            shutil.copy2(src, dst)
            st = os.stat(dst)
        return SourceFile(path=rel, size=st.st_size, mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime)

    def unstage(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self._dst}/{rel}")


def _freeze_listed(
    data_root: Path, staging: Path, files: Iterable[HookFile], collections: list[str]
) -> dict[str, list[SourceFile]]:
    wanted = set(collections)
    out: dict[str, list[SourceFile]] = {name: [] for name in collections}
    stager = _Stager(data_root, staging)
    for f in files:
        collection = _collection_of(f.path, wanted)
        out[collection].append(stager.stage(f.path, immutable=f.immutable))
    return out


def _fingerprint(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _freeze_hookless(
    data_root: Path, staging: Path, collections: list[str], patterns: tuple[str, ...]
) -> dict[str, list[SourceFile]]:
    out: dict[str, list[SourceFile]] = {}
    stager = _Stager(data_root, staging)
    root = str(data_root)
    for collection in collections:
        out[collection] = []
        for dirpath, _dirs, names in os.walk(data_root / collection):
            for name in sorted(names):
                src = os.path.join(dirpath, name)
                if not stat.S_ISREG(os.lstat(src).st_mode):
                    continue
                rel = src[len(root) + 1 :]
                if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    out[collection].append(stager.stage(rel, immutable=True))
                    continue
                for _attempt in range(_HOOKLESS_ATTEMPTS):
                    before = _fingerprint(src)
                    stager.unstage(rel)
                    staged = stager.stage(rel, immutable=False)
                    if _fingerprint(src) == before:
                        break
                else:
                    raise SnapshotError(f"{rel} kept changing while it was copied; use a workload hook")
                out[collection].append(staged)
    return out


async def freeze(
    *,
    op_id: str,
    collections: list[str],
    data_root: Path,
    staging: Path,
    hook: WorkloadHook | None,
    immutable_patterns: tuple[str, ...],
    hold_timeout: float,
) -> Frozen:
    """Freezes the file set into ``staging``. With a hook, the workload is still holding writes
    when this returns: the caller ends the hold with ``release`` (at once, or when the whole
    cluster has frozen)."""
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=False)
    if hook is None:
        files = await asyncio.to_thread(_freeze_hookless, data_root, staging, collections, immutable_patterns)
        return Frozen(root=staging, files=files)

    started = time.perf_counter()
    prepare = asyncio.ensure_future(hook.prepare(op_id, collections, hold_timeout=hold_timeout))
    try:
        listed = await asyncio.shield(prepare)
        files = await asyncio.to_thread(_freeze_listed, data_root, staging, listed, collections)
    except BaseException as exc:
        # The workload may be holding writes already; it must not stay paused because of us. If we
        # were interrupted (an abort), its prepare may still be running: a release sent now would
        # arrive first and be lost, so wait for the prepare (bounded by the hook timeout) first.
        with contextlib.suppress(BaseException):
            await asyncio.shield(prepare)
        with contextlib.suppress(HookError):
            await hook.release(op_id)
        if isinstance(exc, (OSError, HookError)):
            raise SnapshotError(f"could not freeze the file set: {exc}") from exc
        raise
    return Frozen(root=staging, files=files, hold_started=started)


async def release(frozen: Frozen, hook: WorkloadHook | None, op_id: str) -> float | None:
    """Ends the workload's hold, once; returns how long it lasted in milliseconds."""
    if frozen.hold_started is None or hook is None:
        return None
    started, frozen.hold_started = frozen.hold_started, None
    try:
        await hook.release(op_id)
    finally:
        pause_ms = (time.perf_counter() - started) * 1000
        log.info("snapshot.released", id=op_id, files=frozen.count, pause_ms=round(pause_ms, 2))
    return pause_ms
