"""Trees as a database leaves them on disk, for tests: build one, and digest one exactly.

The digest is what "the same tree" means in every round-trip test: per path (as bytes), the entry
type, size, content hash, permission bits, mtime in ns, owner, link target, the hard-link group (the
other paths of the same inode) and, for regular files, the allocated blocks.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def tree_digest(root: Path, *, blocks: bool = True) -> dict[bytes, tuple[Any, ...]]:
    """Every entry below ``root`` (which is included, as b'.'), never following a link."""
    out: dict[bytes, tuple[Any, ...]] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}
    base = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            kind = _kind(st.st_mode)
            content = link = None
            if kind == "file":
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif kind == "symlink":
                link = os.readlink(path)
            out[rel] = (
                kind,
                st.st_size if kind == "file" else None,
                content,
                stat.S_IMODE(st.st_mode) if kind != "symlink" else None,
                st.st_mtime_ns,
                st.st_uid,
                st.st_gid,
                link,
                st.st_blocks if kind == "file" and blocks else None,
                (st.st_dev, st.st_ino),
            )
    groups = {ino: tuple(sorted(paths)) for ino, paths in inodes.items()}
    return {rel: (*v[:-1], groups.get(v[-1]) if v[0] == "file" else None) for rel, v in out.items()}


@dataclass
class Spec:
    """One entry to make: ``kind`` file | dir | symlink | hardlink | sparse."""

    path: bytes
    kind: str
    data: bytes = b""
    mode: int = 0o644
    mtime_ns: int = 1_700_000_000_000_000_000
    target: bytes = b""
    size: int = 0  # sparse: apparent size; data is written at offset size // 2


def make_tree(root: Path, specs: list[Spec]) -> None:
    """Makes ``specs`` below ``root`` in order, then sets directory metadata deepest first."""
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    dirs = []
    for s in specs:
        path = os.path.join(base, s.path)
        if s.kind == "dir":
            os.makedirs(path, exist_ok=True)
            dirs.append(s)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if s.kind == "file":
            with open(path, "wb") as f:
                f.write(s.data)
        elif s.kind == "sparse":
            with open(path, "wb") as f:
                f.truncate(s.size)
                f.seek(s.size // 2)
                f.write(s.data)
        elif s.kind == "symlink":
            os.symlink(s.target, path)
            os.utime(path, ns=(s.mtime_ns, s.mtime_ns), follow_symlinks=False)
            continue
        elif s.kind == "hardlink":
            os.link(os.path.join(base, s.target), path)
            continue
        os.chmod(path, s.mode)
        os.utime(path, ns=(s.mtime_ns, s.mtime_ns))
    for s in sorted(dirs, key=lambda d: -d.path.count(b"/")):
        path = os.path.join(base, s.path)
        os.chmod(path, s.mode)
        os.utime(path, ns=(s.mtime_ns, s.mtime_ns))


def back_up(
    data: Path,
    work: Path,
    store: Any,
    backup_id: str,
    *,
    level: Any,
    chunk_bytes: int,
    base: str | None = None,
) -> tuple[Any, int]:
    """Backs up collection ``col`` of ``data`` as node ``n0`` of ``backup_id`` through the agent's own
    steps (hookless freeze, upload, node descriptor written and read back); returns the descriptor
    read back and the bytes read from files while packing."""
    import datetime as dt
    import threading

    from shardkeeper.agent.staging import check_frozen, freeze_hookless
    from shardkeeper.api.common import Phase
    from shardkeeper.api.descriptors import NodeDescriptor
    from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
    from shardkeeper.archive.reuse import Reuse
    from shardkeeper.archive.transfer import upload
    from shardkeeper.storage import BackupLayout
    from shardkeeper.storage.repository import BackupRepository, EntrySpool

    frozen = freeze_hookless(data, work / f"staging-{backup_id}", ["col"], ("*.sst",))
    check_frozen(frozen)
    repo = BackupRepository(store)
    reuse = None
    if base is not None:
        found = repo.node_entries(base, "n0", lambda: Reuse(base, frozen.entries))
        assert found is not None
        reuse = found[1]
        reuse.finish(found[0])
    read: list[int] = []
    choice = CODEC_FOR_LEVEL[level]
    with EntrySpool(work) as spool:
        uploaded = upload(
            frozen.entries,
            root=frozen.root,
            storage=store,
            layout=BackupLayout(backup_id),
            node="n0",
            choice=choice,
            chunk_bytes=chunk_bytes,
            workers=2,
            on_bytes=lambda _logical, n: read.append(n),
            on_entries=lambda _n: None,
            cancelled=threading.Event(),
            spool=spool,
            reuse=reuse,
        )
        repo.write_node_spooled(
            NodeDescriptor(
                format_version=3 if base else 2,
                id=backup_id,
                node="n0",
                status=Phase.SUCCESS,
                started_at=dt.datetime.now(dt.UTC),
                codec=choice.codec,
                compression_level=level,
                collections=uploaded.collections,
                bytes=0,
                stored_bytes=0,
                file_count=0,
                base=base,
            ),
            spool,
        )
    described = repo.node_descriptor(backup_id, "n0")
    assert described is not None
    return described, sum(read)


def restore(store: Any, backup_id: str, target: Path) -> Path:
    """Restores node ``n0`` of ``backup_id`` into ``target`` (which must not exist), as the agent does
    before the rename; returns the restored collection ``col``."""
    import threading

    from shardkeeper.api.descriptors import EntryType
    from shardkeeper.archive.described import DescribedNode
    from shardkeeper.archive.transfer import download
    from shardkeeper.archive.tree import check_tree, set_times
    from shardkeeper.storage import BackupLayout
    from shardkeeper.storage.repository import BackupRepository

    found = BackupRepository(store).node_entries(backup_id, "n0", DescribedNode)
    assert found is not None
    described, trees = found[0], found[1].trees(found[0])
    for col, tree in trees:
        check_tree(col.name, tree)
    download(
        trees,
        storage=store,
        layout=BackupLayout(backup_id),
        source_node="n0",
        codec=described.codec,
        staging=target,
        workers=2,
        owners=os.geteuid() == 0,
        on_bytes=lambda _l, _n: None,
        on_entries=lambda _n: None,
        cancelled=threading.Event(),
    )
    for col, tree in trees:
        own = next(e for e in tree if e.name == col.name and e.type is EntryType.DIR)
        set_times(target / col.name, own)
    return target / "col"
