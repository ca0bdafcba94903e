"""A node's trees to a backend and back: chunks packed or unpacked by a bounded pool of workers.

``upload`` plans each collection's chunks, packs and compresses them on ``workers`` threads (each
chunk's bytes go to the backend on an I/O thread of its own, whose commit overlaps the next chunk),
and describes what it stored: each chunk's entries go to an ``EntrySpool`` on disk once it and the
chunks before it are packed, so memory holds the frozen listing and a few chunks' worth of file
checksums, not the descriptor (``benchmarks/README.md``, goal 4). ``download`` unpacks and verifies
every chunk of the selected collections into a staging directory, then finishes each tree (links,
directory metadata).

Incremental backups: a regular file the base backup already holds is referenced, not uploaded
(``archive.reuse``).
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shardkeeper.api.common import Codec
from shardkeeper.api.descriptors import ChunkEntry, CollectionEntry, Entry, EntryType
from shardkeeper.archive.codecs import CodecChoice
from shardkeeper.archive.described import DescribedTree
from shardkeeper.archive.pack import PackedChunk, pack_chunk, plan_chunks
from shardkeeper.archive.prefetch import Cancelled
from shardkeeper.archive.reuse import BaseFile, Reuse
from shardkeeper.archive.source import SourceEntry, SourceTree
from shardkeeper.archive.tree import finish_tree
from shardkeeper.archive.unpack import ExpectedChunk, unpack_chunk
from shardkeeper.storage import BackgroundWriter, BackupLayout, Storage
from shardkeeper.storage.checksum import HashingWriter
from shardkeeper.storage.repository import EntrySpool

T = TypeVar("T")
BLOCK_BYTES = 4096
#: Entries compared with the base per task of the worker pool (thousands of small files, few
#: tasks); only the matches are kept, not the entries.
MATCH_BATCH = 256
#: Chunks an upload packs past the first one not yet described, beyond two per worker: each packed
#: chunk waits with its files' checksums (up to ``CHUNK_MAX_ENTRIES``, ~3 MB) until every chunk
#: before it is described, so a slow chunk (a big file) holds back at most this many.
UPLOAD_AHEAD = 4


def run_chunks(
    workers: int,
    jobs: Sequence[Callable[[], T]],
    cancelled: threading.Event,
    consume: Callable[[T], None] | None = None,
    *,
    window: int | None = None,
) -> list[T]:
    """Runs ``jobs`` on ``workers`` threads; the first failure stops the others (``cancelled`` is
    set for the ones running, the ones not started never start) and is raised once every job has
    ended. Results in job order; with ``consume``, each result is passed to it (on this thread) as
    soon as it and every result before it are in, and not kept (returns []). A failure of
    ``consume`` stops the jobs too. ``window``: at most this many jobs are started and not yet
    consumed (None: all at once), so that a slow job does not let the results after it pile up."""
    results: list[T] = []
    failure: BaseException | None = None
    window = len(jobs) if window is None else max(window, workers, 1)
    # Each job's failure or None as it ends: the futures themselves (their results) are held only
    # in ``futures``, and dropped from it once consumed.
    finished: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def ended(f: Future[T]) -> None:
        finished.put(None if f.cancelled() else f.exception())

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="chunk") as pool:
        futures: list[Future[T] | None] = []
        ready = 0  # the results before this one are consumed

        def start_more() -> None:
            while len(futures) < len(jobs) and len(futures) - ready < window:
                started = pool.submit(jobs[len(futures)])
                started.add_done_callback(ended)
                futures.append(started)

        start_more()
        while ready < len(jobs):
            failure = finished.get()  # a job started and not consumed ends: there is always one
            while failure is None and ready < len(futures):
                future = futures[ready]
                if future is None or not future.done():
                    break
                futures[ready] = None  # a consumed result is not kept here
                ready += 1
                try:
                    (consume or results.append)(future.result())
                except BaseException as exc:  # raised below, once the jobs end
                    failure = exc
            if failure is not None:
                cancelled.set()
                for waiting in futures:
                    if waiting is not None:
                        waiting.cancel()
                break
            start_more()
    if failure is not None:
        raise failure
    return results


def allocated(entry: Entry) -> int:
    """Bytes a restore writes to disk for ``entry``: a file's data rounded up to whole blocks, a block
    for a directory; holes, links and hard links take none (an estimate a quota check can rely on)."""
    if entry.type is EntryType.FILE:
        return -(-entry.data_bytes // BLOCK_BYTES) * BLOCK_BYTES
    return BLOCK_BYTES if entry.type is EntryType.DIR else 0


@dataclass(frozen=True)
class Uploaded:
    """What ``upload`` stored and referenced; the entries are in its ``EntrySpool``."""

    collections: list[CollectionEntry]
    """In the order of the trees, each with its chunks and totals and no entries (the spool's)."""
    files: int
    """Regular files described."""
    bytes_reused: int
    """Bytes of the files referenced in earlier backups."""


@dataclass
class _Collection:
    """A collection's totals while its entries are spooled."""

    chunks: int
    """Chunk numbers given: its own chunks (1..k), then the chunks it references."""
    bytes: int = 0
    allocated: int = 0


def upload(
    trees: dict[str, SourceTree],
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
    spool: EntrySpool,
    reuse: Reuse | None = None,
) -> Uploaded:
    """Stores ``trees`` (collection -> frozen entries, files under ``root``) as chunks
    ``<node>/chunk-<k>`` and describes them: each entry goes to ``spool`` as soon as its chunk is
    packed and every chunk before it too (so memory holds a few chunks' worth of entries, not the
    node's), the collections' totals and chunks are returned. With ``reuse``, files the base holds
    are referenced instead. Raises what packing or the backend raised."""
    # Per collection, 1 for each listed row whose file the base holds with the same content.
    reused: dict[str, bytearray] = {}
    if reuse is not None:
        reused = {collection: bytearray(len(tree)) for collection, tree in trees.items()}

        def match(collection: str, tree: SourceTree, start: int) -> tuple[str, list[int]]:
            rows = enumerate(tree[start : start + MATCH_BATCH], start)
            found = (
                i
                for i, e in rows
                if e.type is EntryType.FILE and reuse.match(collection, i, e, root, cancelled)
            )
            return collection, list(found)

        def matched(found: tuple[str, list[int]]) -> None:
            collection, rows = found
            mask = reused[collection]
            sizes = trees[collection].data_sizes
            for i in rows:
                mask[i] = 1
                on_bytes(sizes[i], 0)

        batches = [
            functools.partial(match, collection, tree, start)
            for collection, tree in trees.items()
            for start in range(0, len(tree), MATCH_BATCH)
        ]
        run_chunks(workers, batches, cancelled, matched)
        reused = {collection: mask for collection, mask in reused.items() if 1 in mask}

    # (collection, chunk number, key, its entries: a range of the collection's own tree)
    plans: list[tuple[str, int, str, SourceTree, range]] = []
    totals: dict[str, _Collection] = {}
    for collection, tree in trees.items():
        mask = reused.get(collection)
        own = tree.without_rows(mask) if mask is not None else tree
        parts = plan_chunks(own.data_sizes, chunk_bytes)
        totals[collection] = _Collection(chunks=len(parts))
        for n, part in enumerate(parts, start=1):
            plans.append((collection, n, layout.chunk_key(len(plans) + 1), own, part))
    # A referenced chunk gets the next number in its collection, in the order its files come.
    referenced: dict[tuple[str, str, str], ChunkEntry] = {}
    bytes_reused = 0
    for collection, mask in reused.items():
        for _, found in _base_files(reuse, collection, mask):
            bytes_reused += found.size
            where = (collection, found.chunk.backup or "", found.chunk.key)
            if where not in referenced:
                totals[collection].chunks += 1
                referenced[where] = found.chunk.model_copy(update={"n": totals[collection].chunks})
    # At most a few chunks are in flight (packed, their commit not yet done), not more: two besides
    # the ones being packed, as the commit of one (an fsync) can hold up opening the next chunk's
    # file (2026-12-02: a chunk of ten small files took 83 ms to pack with one, 20 ms with two).
    in_flight = threading.BoundedSemaphore(workers + 2)
    commits: list[Future[None]] = []
    digests: dict[str, HashingWriter] = {}
    stored: list[PackedChunk] = []  # without their files, in plan order

    def pack(index: int) -> tuple[int, PackedChunk]:
        _, _, key, own, span = plans[index]
        part = own[span.start : span.stop]
        in_flight.acquire()
        hashing = digests[key] = HashingWriter(storage.open_writer(layout.chunk(node, key)))
        # Hashes and writes on its I/O thread; NoCompression to a local disk, on this one.
        inline = choice.codec is Codec.NONE and hashing.local
        writer = BackgroundWriter(hashing, inline_writes=inline)
        try:
            packed = pack_chunk(
                part,
                root=root,
                writer=writer,
                choice=choice,
                on_bytes=on_bytes,
                cancelled=cancelled,
                writes_here=inline,
            )
        except BaseException:
            writer.abort()
            in_flight.release()
            raise

        def committed(_: Future[None]) -> None:
            in_flight.release()
            on_entries(len(span))

        commit = writer.commit_later()
        commit.add_done_callback(committed)
        commits.append(commit)
        return index, packed

    def describe(result: tuple[int, PackedChunk]) -> None:
        """Spools the entries of a packed chunk (and, before a collection's first chunk, the
        collection's referenced files), in plan order."""
        index, packed = result
        collection, n, _, own, span = plans[index]
        if n == 1 and collection in reused:
            tree = trees[collection]
            for i, found in _base_files(reuse, collection, reused[collection]):
                where = (collection, found.chunk.backup or "", found.chunk.key)
                content = {"sha256": found.sha256, "data": found.data, "gen": found.gen}
                _spool(spool, totals[collection], collection, tree[i], referenced[where].n, **content)
        for e in own[span.start : span.stop]:
            f = packed.files.get(e.name) if e.type is EntryType.FILE else None
            content = {} if f is None else {"sha256": f.sha256, "data": f.data, "gen": f.generation}
            _spool(spool, totals[collection], collection, e, n, **content)
        stored.append(dataclasses.replace(packed, files={}))

    try:
        jobs = [functools.partial(pack, i) for i in range(len(plans))]
        run_chunks(workers, jobs, cancelled, describe, window=2 * workers + UPLOAD_AHEAD)
    finally:
        wait(commits)  # every commit ends before anyone cleans up what this operation wrote
    for commit in commits:
        commit.result()
    if cancelled.is_set():
        raise Cancelled
    chunks: dict[str, list[ChunkEntry]] = {name: [] for name in trees}
    for (collection, n, key, _, span), packed in zip(plans, stored, strict=True):
        chunks[collection].append(
            ChunkEntry(
                n=n,
                key=key,
                blake3=digests[key].hexdigest(),
                size=packed.size,
                raw_size=packed.raw_size,
                files=len(span),
            )
        )
    for (collection, _, _), chunk in referenced.items():
        chunks[collection].append(chunk)
    return Uploaded(
        collections=[
            CollectionEntry.model_construct(  # its entries were validated as they were spooled
                name=name,
                bytes=totals[name].bytes,
                allocated=totals[name].allocated,
                entries=[],
                chunks=chunks[name],
            )
            for name in trees
        ],
        files=sum(tree.files for tree in trees.values()),
        bytes_reused=bytes_reused,
    )


def _base_files(reuse: Reuse | None, collection: str, mask: bytearray) -> Iterator[tuple[int, BaseFile]]:
    """The rows of ``collection``'s listing marked in ``mask`` (matched), each with the base's
    file."""
    assert reuse is not None
    for i in range(len(mask)):
        if mask[i]:
            found = reuse.base(collection, i)
            assert found is not None  # matched: the base holds it
            yield i, found


def _spool(
    spool: EntrySpool,
    totals: _Collection,
    collection: str,
    e: SourceEntry,
    chunk: int,
    **content: object,
) -> None:
    """Describes ``e`` (held in chunk ``chunk``; ``content``: a file's sha256, data map and inode
    generation) as the descriptor's validated ``Entry``, into ``spool``."""
    fields: dict[str, object] = {"mode": e.mode, "mtime_ns": e.mtime_ns, "uid": e.uid, "gid": e.gid}
    if e.type is EntryType.FILE:
        fields.update(size=e.size, ino=e.ino, **content)
    entry = Entry.make(e.name, e.type, target=e.link, chunk=chunk, **fields)
    spool.add(collection, entry)
    totals.allocated += allocated(entry)
    if entry.type is EntryType.FILE:
        totals.bytes += entry.size


def download(
    collections: Sequence[tuple[CollectionEntry, DescribedTree]],
    *,
    storage: Storage,
    layout: BackupLayout,
    source_node: str,
    codec: Codec,
    staging: Path,
    workers: int,
    owners: bool,
    on_bytes: Callable[[int, int], None],
    on_entries: Callable[[int], None],
    cancelled: threading.Event,
    dirs_listed: bool = True,
) -> None:
    """Unpacks and verifies ``collections`` of ``source_node`` (each with its entries) into
    ``staging`` (which must not exist), then finishes each tree. Raises ``IntegrityError`` or
    ``UnsafeArchiveEntry`` on any doubt; the caller discards staging then. Memory: the entries of
    the chunks being unpacked, as ``DescribedEntry``; the others stay in their columns."""
    staging.mkdir(parents=True, exist_ok=False)

    def unpack(col: CollectionEntry, tree: DescribedTree, ch: ChunkEntry, indices: Sequence[int]) -> None:
        key = (BackupLayout(ch.backup) if ch.backup else layout).chunk(source_node, ch.key)
        algorithm, digest = ch.checksum
        listed = {e.name: e for e in map(tree.__getitem__, indices)}
        expected = ExpectedChunk(key, digest, ch.size, listed, partial=bool(ch.backup), algorithm=algorithm)
        with storage.reader(key) as source:
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

    jobs: list[Callable[[], None]] = []
    for col, tree in collections:
        by_chunk = tree.by_chunk()
        for ch in col.chunks:
            jobs.append(functools.partial(unpack, col, tree, ch, by_chunk.pop(ch.n, ())))
    run_chunks(workers, jobs, cancelled)
    for col, tree in collections:
        (staging / col.name).mkdir(exist_ok=True)  # format 1: a collection of empty files only
        if dirs_listed:
            finish_tree(staging, col.name, tree, owners=owners)


__all__ = ["Uploaded", "allocated", "download", "run_chunks", "upload"]
