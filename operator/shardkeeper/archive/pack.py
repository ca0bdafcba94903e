"""Packing a frozen tree into chunks: tar members, compressed, hashed, streamed to a backend writer.

Every entry type of ``archive.tree`` becomes its standard tar member, so any tar reader restores a
chunk: directories, symbolic and hard links (``linkname``), regular files, and sparse files in the
GNU sparse format 1.0 (PAX), whose data area is the map and then the data segments only. Long
names and link targets travel in PAX records, names that are not UTF-8 with ``hdrcharset=BINARY``;
mtimes in whole seconds (the node descriptor keeps them to the nanosecond).

Memory stays bounded: files are read in pieces of at most 1 MiB (``PLAIN_BLOCK``, ``COPY_BUFFER``),
pieces smaller than that are gathered into one, and every piece goes straight through the
compressor into the writer; the tar stream is ``archive.tarwrite.TarWriter``'s. sha256 is computed
per file (over its content, holes read as zeros) on the reading thread (``Prefetcher``), or by the
packing thread for a NoCompression chunk to a remote backend (it has nothing else to do); files
smaller than ``INLINE_BELOW`` are read and hashed by the packing thread itself. The chunk's
checksum (BLAKE3 of the stored bytes) is the caller's, on its I/O thread
(``storage.checksum.HashingWriter``), so the compressing thread does nothing else. A NoCompression
chunk to a local disk is checksummed and written on the packing thread instead, its files hashed
on the reading thread: two threads, where three handing every block on spent more in waking each
other than the third saved (``benchmarks/README.md``, 2026-12-02).
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from shardkeeper.api.common import Codec
from shardkeeper.api.descriptors import EntryType
from shardkeeper.archive.codecs import CodecChoice, compressor
from shardkeeper.archive.prefetch import COPY_BUFFER, ChangedAfterSnapshot, Opened, Prefetcher
from shardkeeper.archive.source import SourceEntry
from shardkeeper.archive.sparse import sparse_map_block
from shardkeeper.archive.tarwrite import TarWriter
from shardkeeper.archive.tree import MODE_MASK, shown
from shardkeeper.storage.base import Writer

#: Bytes per read, and per write into the chunk, of a NoCompression chunk's file data. Each block
#: passes two or three threads (read and, to a local disk, the file's sha256; the chunk's BLAKE3 and
#: the write): blocks of 256 KiB stay in the CPU caches between them where 1 MiB blocks did not (with
#: three threads, a backup 10 % faster with 9 % less CPU; with two, the same time: 2026-12-02;
#: ``benchmarks/README.md``). A compressor is fed 1 MiB (``COPY_BUFFER``): at 256 KiB zstd-1 took
#: 14 % longer. Pieces smaller than the block are gathered into one (``_ChunkSink``).
PLAIN_BLOCK = 256 * 1024
#: Entries per chunk at most: what packing and describing a chunk hold (each file's sha256 until the
#: chunk is described) is bounded by it, whatever the chunk size, so a million small files take
#: a hundred chunks, not one.
CHUNK_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class PackedFile:
    name: str
    sha256: str
    data: list[tuple[int, int]] | None
    """The data segments of a sparse file; None for a dense one."""
    generation: int | None = None
    """Its inode's generation (with the inode number, it tells the same file from a new one)."""


@dataclass(frozen=True)
class PackedChunk:
    size: int
    raw_size: int
    entries: int
    files: dict[str, PackedFile] = field(default_factory=dict)
    blake3: str | None = None
    """Of the stored bytes: set by the caller, whose writer hashed them."""


def plan_chunks(sizes: Sequence[int], target_bytes: int, max_entries: int = CHUNK_MAX_ENTRIES) -> list[range]:
    """Groups entries, in order, into chunks of about ``target_bytes`` of file content and at most
    ``max_entries`` entries: ``sizes`` are the entries' bytes of content (``SourceTree.data_sizes``),
    the result each chunk's range of indices into them.

    A file larger than the target gets a chunk of its own, so that big immutable files stay
    addressable one by one. Entries without content (directories, links) go with their neighbours.
    """
    chunks: list[range] = []
    start = current_bytes = 0
    for i, size in enumerate(sizes):
        big = size >= target_bytes
        if i - start >= max_entries or (
            i > start and current_bytes and (big or current_bytes + size > target_bytes)
        ):
            chunks.append(range(start, i))
            start, current_bytes = i, 0
        if big:  # with the directories and links just before it, if any: never a chunk of those alone
            chunks.append(range(start, i + 1))
            start, current_bytes = i + 1, 0
            continue
        current_bytes += size
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


class _ChunkSink:
    """What the tar stream is written to: compresses and forwards to the backend.

    Writes smaller than ``gather`` bytes (headers, padding, small files) are gathered until they
    make ``gather`` bytes, and go on as one: a 16 KB file is three writes (header, data,
    padding), and each piece passed the compressor, the chunk's checksum and the disk on its own.
    """

    def __init__(self, writer: Writer, choice: CodecChoice, gather: int) -> None:
        self._writer = writer
        self._compressor = compressor(choice)
        self._gather = gather
        self._gathered = bytearray()
        self.raw_size = 0
        self.stored_size = 0

    def write(self, data: bytes | memoryview) -> int:
        n = len(data)
        self.raw_size += n
        if n < self._gather:
            self._gathered += data
            if len(self._gathered) >= self._gather:
                self._pass_gathered()
            return n
        if self._gathered:
            self._pass_gathered()
        self._emit(self._compressor.compress(data))
        return n

    def _pass_gathered(self) -> None:
        # Handed on as it is (a writer may queue it), and a new one started: no copy.
        gathered, self._gathered = memoryview(self._gathered), bytearray()
        self._emit(self._compressor.compress(gathered))

    def finish(self) -> None:
        if self._gathered:
            self._pass_gathered()
        self._emit(self._compressor.flush())

    def _emit(self, out: bytes | memoryview) -> None:
        if out:
            self._writer.write(out)
            self.stored_size += len(out)


def _info(e: SourceEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(e.name)
    info.mode = e.mode & MODE_MASK
    info.uid, info.gid, info.uname, info.gname = e.uid, e.gid, "", ""
    # Whole seconds in the archive (an exact PAX mtime per member costs a second header each, 15 % of
    # a small-file backup); the descriptor keeps the nanoseconds, and the restore uses those.
    info.mtime = e.mtime_ns // 1_000_000_000
    if e.type is EntryType.DIR:
        info.type = tarfile.DIRTYPE
    elif e.type is EntryType.SYMLINK:
        info.type, info.linkname = tarfile.SYMTYPE, e.link or ""
    elif e.type is EntryType.HARDLINK:
        info.type, info.linkname = tarfile.LNKTYPE, e.link or ""
    else:
        info.size = e.size
    return info


def pack_chunk(
    entries: Sequence[SourceEntry],
    *,
    root: Path,
    writer: Writer,
    choice: CodecChoice,
    on_bytes: Callable[[int, int], None],
    cancelled: threading.Event,
    writes_here: bool = False,
) -> PackedChunk:
    """Writes ``entries`` (files read from ``root``) as one compressed tar stream into ``writer``
    (which checksums it: see the module docstring). ``writes_here``: the writer checksums and
    writes on this thread (``BackgroundWriter``'s ``inline_writes``), so with NoCompression the
    reading thread computes the sha256 of the files it reads ahead, not this one.

        ``on_bytes(logical, read)`` is told of every piece: ``logical`` bytes of file content covered
        (holes included) and ``read`` bytes actually read. The caller commits or aborts the writer.
        Raises ``ChangedAfterSnapshot`` if a file does not match what was frozen."""
    plain = choice.codec is Codec.NONE
    block = PLAIN_BLOCK if plain else COPY_BUFFER
    sink = _ChunkSink(writer, choice, gather=block)
    prefetch = Prefetcher(
        entries, root, on_bytes, cancelled, consumer_hashes=plain and not writes_here, block=block
    )
    sparse: dict[str, list[tuple[int, int]]] = {}
    tar = TarWriter(sink.write)
    try:
        for e in entries:
            info = _info(e)
            if e.type is not EntryType.FILE:
                tar.add(info)
                continue
            next_item = prefetch.items(e)
            item = next_item()  # a sparse file's map, or a dense one's first block
            if isinstance(item, Opened):
                sparse[e.name] = item.data
                prefix = sparse_map_block(item.data)
                info.pax_headers = {
                    **info.pax_headers,
                    "GNU.sparse.major": "1",
                    "GNU.sparse.minor": "0",
                    "GNU.sparse.name": e.name,
                    "GNU.sparse.realsize": str(e.size),
                }
                info.name = "GNUSparseFile.0/data"  # what readers without sparse support extract
                info.size = len(prefix) + sum(n for _, n in item.data)
                tar.add(info)
                tar.data(prefix)
                item = next_item()
                sha = None
            else:
                tar.add(info)
                sha = hashlib.sha256() if prefetch.consumer_hashes_file(e) else None
            while item is not Prefetcher.END:
                piece = cast("bytes", item)
                if sha is not None:
                    sha.update(piece)
                tar.data(piece)
                item = next_item()
            try:
                tar.end_member()
            except ValueError as exc:  # the prefetcher reads exactly the frozen size, or raises
                raise ChangedAfterSnapshot(f'"{shown(e.name)}": {exc} while it was packed') from None
            if sha is not None:
                prefetch.digests[e.name] = sha.hexdigest()
        tar.close()
    finally:
        prefetch.close()
    files = {
        name: PackedFile(
            name=name, sha256=digest, data=sparse.get(name), generation=prefetch.generations.get(name)
        )
        for name, digest in prefetch.digests.items()
    }
    sink.finish()
    return PackedChunk(size=sink.stored_size, raw_size=sink.raw_size, entries=len(entries), files=files)
