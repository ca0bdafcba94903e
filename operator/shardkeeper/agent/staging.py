"""Staging a node's trees, so that uploads never race the database.

Regular files are hard-linked (immutable ones: instant, no extra space) or copied (mutable ones,
holes kept), all inside the data volume under ``.shardkeeper/staging/<id>/``; directories, symbolic
links and hard-link groups are recorded as they are (``archive.tree`` says what a collection may hold).

With a workload hook the workload lists the files (anything it lists is read as it is: a directory,
a link, a file) and keeps them as listed (compaction paused) while this runs; it may hold writes
meanwhile (``agent.snapshot`` says when). Without one the agent walks each collection itself and
takes a crash-consistent copy *of each file*, not one point in time for the node:

* files matching ``SHARDKEEPER_IMMUTABLE_PATTERNS`` (default ``*.sst,*.ldb``: tables that engines
  write once and never change) are hard-linked, then re-checked (inode, size, mtime, ctime) once
  every file is staged, and copied instead if they changed;
* every other file is copied, and copied again if it changed while it was copied (three tries);
* a file that vanishes between the listing and its freezing is left out, with a warning.

A hard-linked file is re-checked once more after it is read for upload (``archive.pack``): if it
was written in place after all, the node fails, naming it, instead of storing torn bytes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from shardkeeper.agent.filecopy import copy_file, copy_prefix
from shardkeeper.agent.hold import Hold
from shardkeeper.api.descriptors import EntryType
from shardkeeper.api.hook import HookFile
from shardkeeper.archive.source import PathIndex, SourceEntry, SourceTree
from shardkeeper.archive.tree import MODE_MASK, check_path, check_tree, shown
from shardkeeper.errors import ShardkeeperError, UnsafeArchiveEntry

log = structlog.get_logger(__name__)

_HOOKLESS_ATTEMPTS = 3
#: At most this many skipped entries are listed by name (all are counted).
SKIPPED_LISTED = 100
_SPECIAL = {stat.S_IFSOCK: "socket", stat.S_IFIFO: "FIFO", stat.S_IFCHR: "device", stat.S_IFBLK: "device"}


class SnapshotError(ShardkeeperError):
    pass


def check_frozen(frozen: Frozen) -> None:
    """The rule a restore applies (``archive.tree.check_tree``), applied first: a backup fails here,
    naming the path, rather than succeed with what no restore would write. Runs after the workload's
    hold ends (it needs no consistency, only the recorded entries)."""
    for collection, entries in frozen.entries.items():
        check_tree(collection, entries)


@dataclass
class Frozen:
    root: Path
    """Staging directory: files are at ``root/<collection>/...``."""
    entries: dict[str, SourceTree]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) of what was left out: sockets, FIFOs, devices, files gone before they were frozen."""
    hold: Hold | None = None
    """The workload's hold (without a hook: None); ``released`` once the release was sent."""
    released: bool = False
    ended_by_itself: bool = False
    """The release found the hold already ended (the workload's hold timeout)."""
    deferred: bool = False
    """The workload deferred its listing: writes are held, nothing is staged yet (``resume``)."""

    @property
    def bytes(self) -> int:
        return sum(tree.data_bytes for tree in self.entries.values())

    @property
    def count(self) -> int:
        return sum(len(entries) for entries in self.entries.values())


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Stager:
    """Records a collection's entries and freezes its regular files into staging, with as few system
    calls as possible: the workload may be holding its writes while this runs."""

    def __init__(self, data_root: Path, staging: Path, *, hookless: bool) -> None:
        self._src, self._dst = str(data_root), str(staging)
        self.hookless = hookless
        self.entries: dict[str, SourceTree] = {}
        #: The names recorded, by collection, with a hook only: a workload may list a name twice,
        #: or a directory that was recorded already as the parent of a file listed before it. An
        #: index of the tree's own paths (a ``set`` held a ``str`` per path: ~100 MB a million).
        self._seen: dict[str, PathIndex] = {}
        self.skipped: list[tuple[str, str]] = []
        self._inodes: dict[tuple[str, int, int], str] = {}
        self._made: set[str] = set()
        self.linked: list[tuple[str, int, os.stat_result]] = []
        """(collection, index in its tree, staged stat) of each hard-linked file, hookless."""
        self.vanished: dict[str, set[str]] = {}
        """Directories recorded, then gone before they were walked, by collection: left out of the
        trees only once every index above (``linked``) is used."""
        #: One int object per distinct mode, uid and gid: they repeat over a node's entries, and
        #: each stat makes new ones (28 bytes each, 84 per entry: 84 MB for a million files).
        self._ints: dict[int, int] = {}

    # --- what gets recorded ----------------------------------------------------------------------

    def collection(self, name: str) -> None:
        st = os.lstat(f"{self._src}/{name}")
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(f"{self._src}/{name}")
            raise UnsafeArchiveEntry(
                f'collection "{shown(name)}" is a symbolic link (to "{shown(target)}"): shardkeeper never '
                "follows links; exclude it, or make it a directory (a mount works)"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise SnapshotError(f'collection "{shown(name)}" is not a directory')
        self.entries[name] = SourceTree()
        if not self.hookless:
            self._seen[name] = PathIndex(self.entries[name].names)
        self._record(name, name, EntryType.DIR, st)

    def _record(
        self, collection: str, name: str, type_: EntryType, st: os.stat_result, **more: object
    ) -> None:
        tree = self.entries[collection]
        tree.append(self._entry(name, type_, st, **more))
        if not self.hookless:
            self._seen[collection].add(len(tree) - 1)

    def _entry(self, name: str, type_: EntryType, st: os.stat_result, **more: object) -> SourceEntry:
        same = self._ints.setdefault
        mode = stat.S_IMODE(st.st_mode) & MODE_MASK
        return SourceEntry(
            name=name,
            type=type_,
            mode=same(mode, mode),
            mtime_ns=st.st_mtime_ns,
            uid=same(st.st_uid, st.st_uid),
            gid=same(st.st_gid, st.st_gid),
            **more,  # type: ignore[arg-type]
        )

    def skip(self, name: str, why: str) -> None:
        self.skipped.append((name, why))
        log.warning("snapshot.skipped", path=shown(name), why=why)

    def add(
        self, collection: str, name: str, st: os.stat_result, *, immutable: bool, prefix: int | None = None
    ) -> None:
        """Records one entry (and freezes it if it is a regular file). ``prefix``: an append-only
        file of which only the first ``prefix`` bytes belong to the snapshot."""
        mode = st.st_mode
        if prefix is not None and stat.S_ISREG(mode):
            self._prefix(collection, name, st, prefix)
            return
        if stat.S_ISDIR(mode):
            self._record(collection, name, EntryType.DIR, st)
        elif stat.S_ISLNK(mode):
            self._record(collection, name, EntryType.SYMLINK, st, link=os.readlink(f"{self._src}/{name}"))
        elif stat.S_ISREG(mode):
            self._file(collection, name, st, immutable=immutable)
        else:
            self.skip(name, f"a {_SPECIAL.get(stat.S_IFMT(mode), 'special file')} holds no data: left out")

    def _file(self, collection: str, name: str, st: os.stat_result, *, immutable: bool) -> None:
        key = (collection, st.st_dev, st.st_ino)
        # Other names in the data (the name staging gives a hookless immutable file counts for the
        # names after it, never for its own): only such a file is remembered, ~220 bytes each (the
        # key ~155 in-process, and the name as a str).
        shared = st.st_nlink > 1
        first = self._inodes.get(key) if shared else None
        if first is not None:
            self._record(collection, name, EntryType.HARDLINK, st, link=first)
            return
        src, dst = f"{self._src}/{name}", f"{self._dst}/{name}"
        parent = dst.rpartition("/")[0]
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        if immutable:
            os.link(src, dst, follow_symlinks=False)
            if self.hookless:  # the baseline of the re-check: the same inode, its ctime counting our link
                st = os.lstat(dst)
                self.linked.append((collection, len(self.entries[collection]), st))
            self._record(collection, name, EntryType.FILE, st, size=st.st_size, linked=True, ino=st.st_ino)
        else:
            st = self._copy(name, src, dst, st)
            self._record(collection, name, EntryType.FILE, st, size=st.st_size, ino=st.st_ino)
        if shared:
            self._inodes[key] = name

    def _prefix(self, collection: str, name: str, st: os.stat_result, size: int) -> None:
        if st.st_size < size:
            raise SnapshotError(
                f'workload hook listed "{shown(name)}" with {size} bytes, but it holds {st.st_size}'
            )
        dst = f"{self._dst}/{name}"
        os.makedirs(dst.rpartition("/")[0], exist_ok=True)
        copy_prefix(f"{self._src}/{name}", dst, size)
        self._record(collection, name, EntryType.FILE, st, size=size, ino=st.st_ino)

    def _copy(self, name: str, src: str, dst: str, st: os.stat_result) -> os.stat_result:
        attempts = _HOOKLESS_ATTEMPTS if self.hookless else 1
        for _ in range(attempts):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dst)
            copy_file(src, dst, st)
            after = os.lstat(src)
            if _fingerprint(after) == _fingerprint(st) or not self.hookless:
                return st
            st = after
        raise SnapshotError(f'"{shown(name)}" kept changing while it was copied; use a workload hook')

    def recheck_linked(self) -> None:
        """Hookless: a hard-linked file that changed while the others were staged is copied instead."""
        for collection, index, staged in self.linked:
            tree = self.entries[collection]
            name = tree.names[index]
            try:
                now = os.lstat(f"{self._src}/{name}")
            except FileNotFoundError:
                continue  # deleted after it was frozen: the staged link holds it as it was
            if _fingerprint(now) == _fingerprint(staged):
                continue
            log.info("snapshot.relinked_file_changed", path=shown(name))
            st = self._copy(name, f"{self._src}/{name}", f"{self._dst}/{name}", now)
            tree[index] = self._entry(name, EntryType.FILE, st, size=st.st_size, ino=st.st_ino)
        self.linked.clear()

    def frozen(self, staging: Path) -> Frozen:
        self._seen.clear()
        for collection, gone in self.vanished.items():
            self.entries[collection] = self.entries[collection].without(gone)
        self.vanished.clear()
        return Frozen(root=staging, entries=self.entries, skipped=self.skipped)

    # --- with a hook: the workload's list ---------------------------------------------------------

    def listed(self, files: Iterable[HookFile], collections: list[str]) -> None:
        wanted = set(collections)
        checked: set[str] = set(collections)
        for f in files:
            name = f.path
            collection = name.partition("/")[0]
            if collection not in wanted:
                raise SnapshotError(
                    f'workload hook listed "{shown(name)}", outside the requested collections'
                )
            seen = self._seen[collection]
            try:
                check_path(name, collection)
            except UnsafeArchiveEntry as exc:
                raise SnapshotError(f"workload hook listed an unsafe path: {exc}") from None
            parts = name.split("/")
            for depth in range(2, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in checked:
                    continue
                st = self._listed_stat(name, parent)
                if not stat.S_ISDIR(st.st_mode):
                    raise SnapshotError(
                        f'workload hook listed "{shown(name)}", below "{shown(parent)}", not a directory'
                    )
                if seen.row(parent) is None:
                    self._record(collection, parent, EntryType.DIR, st)
                checked.add(parent)
            if seen.row(name) is not None:
                continue
            st = self._listed_stat(name, name)
            self.add(collection, name, st, immutable=f.immutable, prefix=f.size)

    def _listed_stat(self, listed: str, path: str) -> os.stat_result:
        """lstat of ``path`` (``listed`` or a directory above it); what the system refuses is a
        ``SnapshotError`` naming what the hook listed, not an errno with the agent's paths."""
        try:
            return os.lstat(f"{self._src}/{path}")
        except OSError as exc:
            where = "," if path == listed else f', below "{shown(path)}",'
            why = (
                "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read: {exc.strerror}"
            )
            raise SnapshotError(f'workload hook listed "{shown(listed)}"{where} which {why}') from None

    # --- without a hook: the agent's own walk ------------------------------------------------------

    def walk(self, collection: str, patterns: tuple[str, ...]) -> None:
        pending = [collection]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(f"{self._src}/{directory}") as it:
                    names = sorted(entry.name for entry in it)
            except FileNotFoundError:
                self.skip(directory, "removed before it was frozen: left out")
                self.vanished.setdefault(collection, set()).add(directory)
                continue
            subdirs = []
            for base in names:
                name = f"{directory}/{base}"
                check_path(name, collection)  # before anything is staged: the rule's limits
                try:
                    st = os.lstat(f"{self._src}/{name}")
                    immutable = any(fnmatch.fnmatchcase(base, p) for p in patterns)
                    self.add(collection, name, st, immutable=immutable)
                except FileNotFoundError:
                    self.skip(name, "removed between the listing and its freezing: left out")
                    continue
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(name)
            pending.extend(reversed(subdirs))


def freeze_listed(
    data_root: Path, staging: Path, files: Iterable[HookFile], collections: list[str]
) -> Frozen:
    stager = _Stager(data_root, staging, hookless=False)
    for name in collections:
        stager.collection(name)
    stager.listed(files, collections)
    return stager.frozen(staging)


def freeze_hookless(
    data_root: Path, staging: Path, collections: list[str], patterns: tuple[str, ...]
) -> Frozen:
    stager = _Stager(data_root, staging, hookless=True)
    for name in collections:
        stager.collection(name)
        stager.walk(name, patterns)
    stager.recheck_linked()
    return stager.frozen(staging)
