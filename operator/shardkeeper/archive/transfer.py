"""A node's trees to a backend and back: chunks packed or unpacked by a bounded pool of workers.

``upload`` plans each collection's chunks, packs and compresses them on ``workers`` threads (each
chunk's bytes go to the backend on an I/O thread of its own, whose commit overlaps the next chunk),
and describes what it stored. ``download`` unpacks and verifies every chunk of the selected
collections into a staging directory, then finishes each tree (links, directory metadata).

Incremental backups (``Reuse``): a regular file the base backup already holds is referenced, not
uploaded. A file that shares its inode with the live data (immutable: hard-linked into staging) is
taken as unchanged without reading it when its inode, size and mtime match the base's; any other
file is hashed and referenced only if its sha256 matches. A referenced chunk keeps its place in the
backup that wrote it (``ChunkEntry.backup``: the chain is flattened, never walked), and a restore
takes from it only the entries this backup lists.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shardkeeper.api.common import Codec
from shardkeeper.api.descriptors import ChunkEntry, CollectionEntry, Entry, EntryType, NodeDescriptor
from shardkeeper.archive.codecs import CodecChoice
from shardkeeper.archive.pack import PackedChunk, SourceEntry, pack_chunk, plan_chunks
from shardkeeper.archive.prefetch import COPY_BUFFER, Cancelled
from shardkeeper.archive.sparse import inode_generation
from shardkeeper.archive.tree import check_tree, finish_tree
from shardkeeper.archive.unpack import ExpectedChunk, unpack_chunk
from shardkeeper.storage import BackgroundWriter, BackupLayout, Storage
from shardkeeper.storage.checksum import HashingWriter

T = TypeVar("T")
BLOCK_BYTES = 4096
#: Files compared with the base per task of the worker pool (thousands of small files, few tasks).
MATCH_BATCH = 256


@dataclass(frozen=True)
class BaseFile:
    entry: Entry
    chunk: ChunkEntry
    """The chunk holding it, with ``backup`` set to the backup that stores it."""


class Reuse:
    """The regular files of a base backup's node descriptor, by path, for an incremental backup."""

    def __init__(self, base_id: str, base: NodeDescriptor) -> None:
        self.base_id = base_id
        self.files: dict[str, BaseFile] = {}
        for col in base.collections:
            chunks = {ch.n: ch.model_copy(update={"backup": ch.backup or base_id}) for ch in col.chunks}
            for e in col.entries:
                if e.type is EntryType.FILE and e.chunk in chunks:
                    self.files[e.name] = BaseFile(e, chunks[e.chunk])

    def match(self, e: SourceEntry, root: Path, cancelled: threading.Event) -> BaseFile | None:
        """The base's copy of ``e`` if its content is the same, else None (see the module docstring)."""
        found = self.files.get(e.name)
        if found is None or found.entry.size != e.size:
            return None
        same = (found.entry.ino, found.entry.mtime_ns) == (e.ino, e.mtime_ns)
        if e.linked and same and found.entry.gen is not None:
            # The same immutable file, not read: the same inode (its generation changes when a
            # deleted file's inode number is given to a new file), size and mtime.
            fd = os.open(root / e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if inode_generation(fd) == found.entry.gen:
                    return found
            finally:
                os.close(fd)
        return found if content_sha256(root / e.name, cancelled) == found.entry.sha256 else None


_BUFFERS = threading.local()


def content_sha256(path: Path, cancelled: threading.Event) -> str:
    """sha256 of a file's content, read into one buffer per thread (thousands of small files: no
    allocation per read)."""
    buf: bytearray | None = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(COPY_BUFFER)
    view = memoryview(buf)
    sha = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(view):
            if cancelled.is_set():
                raise Cancelled
            sha.update(view[:n])
    return sha.hexdigest()


def run_chunks(workers: int, jobs: Sequence[Callable[[], T]], cancelled: threading.Event) -> list[T]:
    """Runs ``jobs`` on ``workers`` threads; the first failure stops the others (``cancelled`` is
    set for the ones running) and is raised once every job has ended. Results in job order."""
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="chunk") as pool:
        futures = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            cancelled.set()
            for f in futures:
                f.cancel()
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return [f.result() for f in futures]


def allocated(entries: Sequence[Entry]) -> int:
    """Bytes a restore writes to disk: each file's data rounded up to whole blocks, a block per
    directory; holes, links and hard links take none (an estimate a quota check can rely on)."""
    total = 0
    for e in entries:
        if e.type is EntryType.FILE:
            total += -(-e.data_bytes // BLOCK_BYTES) * BLOCK_BYTES
        elif e.type is EntryType.DIR:
            total += BLOCK_BYTES
    return total


def upload(
    trees: dict[str, list[SourceEntry]],
    *,
    root: Path,
    storage: Storage,
    layout: BackupLayout,
    node: str,
    choice: CodecChoice,
    chunk_bytes: int,
    workers: int,
    on_bytes: Callable[[int, int], None],
    on_entries: Callable[[int], None],
    cancelled: threading.Event,
    reuse: Reuse | None = None,
) -> list[CollectionEntry]:
    """Stores ``trees`` (collection -> frozen entries, files under ``root``) as chunks
    ``<node>/chunk-<k>`` and returns their description; with ``reuse``, files the base holds are
    referenced instead. Raises what packing or the backend raised."""
    reused: dict[str, BaseFile] = {}
    if reuse is not None:
        files = [e for entries in trees.values() for e in entries if e.type is EntryType.FILE]

        def match(batch: list[SourceEntry]) -> list[BaseFile | None]:
            return [reuse.match(e, root, cancelled) for e in batch]

        batches = [files[i : i + MATCH_BATCH] for i in range(0, len(files), MATCH_BATCH)]
        matches = [
            m
            for found in run_chunks(workers, [functools.partial(match, b) for b in batches], cancelled)
            for m in found
        ]
        reused = {e.name: m for e, m in zip(files, matches, strict=True) if m is not None}
        for e in files:
            if e.name in reused:
                on_bytes(e.size, 0)
    plans: list[tuple[str, int, str, list[SourceEntry]]] = []
    for collection, entries in trees.items():
        own = [e for e in entries if e.name not in reused]
        for n, part in enumerate(plan_chunks(own, chunk_bytes), start=1):
            plans.append((collection, n, layout.chunk_key(len(plans) + 1), part))
    # At most a few chunks are in flight (packed, their commit not yet done), not more.
    in_flight = threading.BoundedSemaphore(workers + 1)
    commits: list[Future[None]] = []

    digests: dict[str, HashingWriter] = {}

    def pack(key: str, part: list[SourceEntry]) -> PackedChunk:
        in_flight.acquire()
        hashing = digests[key] = HashingWriter(storage.open_writer(layout.chunk(node, key)))
        writer = BackgroundWriter(hashing)  # hashes on its I/O thread
        try:
            packed = pack_chunk(
                part, root=root, writer=writer, choice=choice, on_bytes=on_bytes, cancelled=cancelled
            )
        except BaseException:
            writer.abort()
            in_flight.release()
            raise

        def committed(_: Future[None]) -> None:
            in_flight.release()
            on_entries(len(part))

        commit = writer.commit_later()
        commit.add_done_callback(committed)
        commits.append(commit)
        return packed

    try:
        jobs = [functools.partial(pack, key, part) for _, _, key, part in plans]
        results = run_chunks(workers, jobs, cancelled)
    finally:
        wait(commits)  # every commit ends before anyone cleans up what this operation wrote
    for commit in commits:
        commit.result()
    if cancelled.is_set():
        raise Cancelled
    results = [
        dataclasses.replace(packed, blake3=digests[key].hexdigest())
        for (_, _, key, _), packed in zip(plans, results, strict=True)
    ]
    return describe(trees, plans, results, reused)


def describe(
    trees: dict[str, list[SourceEntry]],
    plans: list[tuple[str, int, str, list[SourceEntry]]],
    results: list[PackedChunk],
    reused: dict[str, BaseFile] | None = None,
) -> list[CollectionEntry]:
    """The descriptor's collections for what ``upload`` stored and what it referenced (pure)."""
    reused = reused or {}
    chunk_of: dict[str, int] = {}
    packed_files = {}
    chunks: dict[str, list[ChunkEntry]] = {name: [] for name in trees}
    for (collection, n, key, part), packed in zip(plans, results, strict=True):
        chunks[collection].append(
            ChunkEntry(
                n=n,
                key=key,
                blake3=packed.blake3,
                size=packed.size,
                raw_size=packed.raw_size,
                files=len(part),
            )
        )
        for e in part:
            chunk_of[e.name] = n
        packed_files.update(packed.files)
    referenced: dict[tuple[str, str, str], int] = {}  # (collection, backup, key) -> n in this backup
    for name, found in reused.items():
        collection = name.partition("/")[0]
        where = (collection, found.chunk.backup or "", found.chunk.key)
        if where not in referenced:
            referenced[where] = len(chunks[collection]) + 1
            chunks[collection].append(found.chunk.model_copy(update={"n": referenced[where]}))
        chunk_of[name] = referenced[where]
    out = []
    for collection, source in trees.items():
        entries = []
        for e in source:
            fields: dict[str, object] = {"mode": e.mode, "mtime_ns": e.mtime_ns, "uid": e.uid, "gid": e.gid}
            if e.type is EntryType.FILE:
                if e.name in reused:
                    base = reused[e.name].entry
                    fields.update(size=e.size, sha256=base.sha256, data=base.data, ino=e.ino, gen=base.gen)
                else:
                    f = packed_files[e.name]
                    fields.update(size=e.size, sha256=f.sha256, data=f.data, ino=e.ino, gen=f.generation)
            entries.append(Entry.make(e.name, e.type, target=e.link, chunk=chunk_of[e.name], **fields))
        check_tree(collection, entries)
        out.append(
            CollectionEntry.model_construct(  # its entries were validated as they were made
                name=collection,
                bytes=sum(e.size for e in entries if e.type is EntryType.FILE),
                allocated=allocated(entries),
                entries=entries,
                chunks=chunks[collection],
            )
        )
    return out


def download(
    collections: Sequence[CollectionEntry],
    *,
    storage: Storage,
    layout: BackupLayout,
    source_node: str,
    codec: Codec,
    staging: Path,
    workers: int,
    owners: bool,
    on_bytes: Callable[[int], None],
    on_entries: Callable[[int], None],
    cancelled: threading.Event,
    dirs_listed: bool = True,
) -> None:
    """Unpacks and verifies ``collections`` of ``source_node`` into ``staging`` (which must not
    exist), then finishes each tree. Raises ``IntegrityError`` or ``UnsafeArchiveEntry`` on any
    doubt; the caller discards staging then."""
    staging.mkdir(parents=True, exist_ok=False)
    jobs: list[Callable[[], None]] = []
    for col in collections:
        by_chunk: dict[int, dict[str, Entry]] = {}
        for e in col.entries:
            if e.chunk is not None:
                by_chunk.setdefault(e.chunk, {})[e.name] = e
        for ch in col.chunks:
            where = BackupLayout(ch.backup) if ch.backup else layout
            key = where.chunk(source_node, ch.key)
            algorithm, digest = ch.checksum
            expected = ExpectedChunk(
                key, digest, ch.size, by_chunk.get(ch.n, {}), partial=bool(ch.backup), algorithm=algorithm
            )

            def job(col: CollectionEntry = col, expected: ExpectedChunk = expected) -> None:
                with storage.reader(expected.key) as source:
                    seen = unpack_chunk(
                        source,
                        codec=codec,
                        chunk=expected,
                        target=staging,
                        collection=col.name,
                        on_bytes=on_bytes,
                        cancelled=cancelled,
                    )
                on_entries(len(seen))

            jobs.append(job)
    run_chunks(workers, jobs, cancelled)
    for col in collections:
        (staging / col.name).mkdir(exist_ok=True)  # format 1: a collection of empty files only
        if dirs_listed:
            finish_tree(staging, col.name, col.entries, owners=owners)


__all__ = ["BaseFile", "Reuse", "allocated", "describe", "download", "run_chunks", "upload"]
