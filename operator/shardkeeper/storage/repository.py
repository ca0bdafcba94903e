"""The backup repository: the one module that reads and writes descriptors (the format).

Everything above it (the operator, the agents, the CLI) asks this module, never the raw keys, so
there is one policy for every object a backup consists of:

    missing                   -> None (the caller decides whether that is an error)
    not JSON, or another shape -> CorruptDescriptor naming the object's location
    a format version this code does not know -> UnknownFormatVersion

Format 1 node descriptors (regular files only, chunk keys under the collection's name) are upgraded
to format 2 models on the way in, so readers see one shape. Writes are whole objects (a temp file
and a rename, or a single put), so a reader never sees half a descriptor.

A node descriptor can hold millions of entries. A backup does not build them as one model: it
appends each entry to an ``EntrySpool`` (a local temporary file, one JSON object per entry) as its
chunk is packed, and ``write_node_spooled`` streams the descriptor from it. The result is the same
document ``write_node`` writes, whose keys in another order; readers parse either alike.
"""

from __future__ import annotations

import builtins
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shardkeeper.api.common import Phase
from shardkeeper.api.descriptors import (
    CollectionEntry,
    Entry,
    EntryType,
    GlobalDescriptor,
    NodeDescriptor,
    RestoreDescriptor,
    Versioned,
    dump_entry,
)
from shardkeeper.errors import CorruptDescriptor, ObjectNotFound
from shardkeeper.storage.base import Storage
from shardkeeper.storage.layout import BackupLayout
from shardkeeper.storage.node_stream import EntrySink, ReadWhole, first_error, read_node

V = TypeVar("V", bound=Versioned)
S = TypeVar("S", bound=EntrySink)


def _parse(model: type[V], raw: bytes, where: str) -> V:
    try:
        probe = Versioned.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptDescriptor(f"{where} is not a shardkeeper descriptor: {first_error(exc)}") from None
    probe.check_version()
    try:
        if model is NodeDescriptor and probe.format_version == 1:
            return model.model_validate(_upgrade_node_v1(NodeDescriptorV1.model_validate_json(raw)))
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptDescriptor(f"{where} is corrupt: {first_error(exc)}") from None


def _dropped(_index: int, _name: str | None, _entry: Entry) -> None:
    """An ``EntrySink`` that keeps nothing (the entries are validated before it is called)."""


def _feed(sink: EntrySink, descriptor: NodeDescriptor, where: str) -> None:
    """Hands ``sink`` every entry of ``descriptor``, as ``node_stream.read_node`` does."""
    for i, col in enumerate(descriptor.collections):
        for j, entry in enumerate(col.entries):
            try:
                sink(i, col.name, entry)
            except ValueError as exc:
                raise CorruptDescriptor(f"{where} is corrupt: collections.{i}.entries.{j}: {exc}") from None


class BackupRepository:
    """The backups under one storage (a backend at a path)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def url(self, backup_id: str) -> str:
        return self.storage.url(BackupLayout(backup_id).root)

    # --- reading -----------------------------------------------------------------------------

    def _read(self, model: type[V], key: str) -> V | None:
        try:
            raw = self.storage.get_bytes(key)
        except ObjectNotFound:
            return None
        return _parse(model, raw, self.storage.url(key))

    def global_descriptor(self, backup_id: str) -> GlobalDescriptor | None:
        return self._read(GlobalDescriptor, BackupLayout(backup_id).global_descriptor)

    def node_descriptor(self, backup_id: str, node: str) -> NodeDescriptor | None:
        descriptor = self._read(NodeDescriptor, BackupLayout(backup_id).node_descriptor(node))
        if descriptor is not None:
            self._check_node(descriptor, backup_id, node)
        return descriptor

    def node_head(
        self, backup_id: str, node: str, *, validate_entries: bool = False
    ) -> NodeDescriptor | None:
        """The node descriptor without its entries (its collections list none), read as a stream
        (``node_stream``): what the operator reads, in one block of memory, however many files the
        node holds. Everything but the entries is validated, as ``node_descriptor`` does; the
        entries too if ``validate_entries`` (~3 µs each)."""
        found = self._stream_node(backup_id, node, (lambda: _dropped) if validate_entries else None)
        return None if found is None else found[0]

    def node_entries(
        self, backup_id: str, node: str, sink: Callable[[], S]
    ) -> tuple[NodeDescriptor, S] | None:
        """The node descriptor without its entries, and a sink (made by ``sink``) that was handed
        each validated entry in order (``node_stream.EntrySink``): a restore keeps them in columns
        (``archive.described``), not as models. If the descriptor must be read whole after all
        (``node_stream.ReadWhole``), a new sink is made and handed every entry from the start."""
        found = self._stream_node(backup_id, node, sink)
        if found is None:
            return None
        descriptor, made = found
        assert made is not None
        return descriptor, made

    def _stream_node(
        self, backup_id: str, node: str, sink: Callable[[], S] | None
    ) -> tuple[NodeDescriptor, S | None] | None:
        key = BackupLayout(backup_id).node_descriptor(node)
        made = sink() if sink is not None else None
        try:
            with self.storage.reader(key) as source:
                descriptor = read_node(source, self.storage.url(key), made)
        except ObjectNotFound:
            return None
        except ReadWhole:
            whole = self._read(NodeDescriptor, key)
            if whole is None:
                return None
            descriptor, made = whole, sink() if sink is not None else None
            if made is not None:
                _feed(made, descriptor, self.storage.url(key))
            for col in descriptor.collections:
                col.entries = []
        self._check_node(descriptor, backup_id, node)
        return descriptor, made

    def _check_node(self, descriptor: NodeDescriptor, backup_id: str, node: str) -> None:
        if descriptor.id != backup_id or descriptor.node != node:
            where = self.storage.url(BackupLayout(backup_id).node_descriptor(node))
            raise CorruptDescriptor(
                f"{where} describes {descriptor.id}/{descriptor.node}, not {backup_id}/{node}"
            )

    def restore_descriptor(self, backup_id: str) -> RestoreDescriptor | None:
        return self._read(RestoreDescriptor, BackupLayout(backup_id).restore_descriptor)

    def list(self) -> list[GlobalDescriptor]:
        """Every readable backup, newest first. Ids without a (readable) descriptor are left out."""
        found = []
        for backup_id in self.storage.list_dirs():
            try:
                descriptor = self.global_descriptor(backup_id)
            except (CorruptDescriptor, ValueError):
                continue
            if descriptor is not None:
                found.append(descriptor)
        return sorted(found, key=lambda d: d.started_at, reverse=True)

    def dependants(self, backup_id: str) -> builtins.list[str]:
        """Backups whose data needs ``backup_id``'s (incrementals built on it, directly or down the
        chain), running ones included; failed and canceled ones need nothing. Deleting a backup
        that has dependants would break them, so callers refuse it."""
        found = []
        for other in self.storage.list_dirs():
            if other == backup_id:
                continue
            try:
                descriptor = self.global_descriptor(other)
            except (CorruptDescriptor, ValueError):
                continue
            if (
                descriptor is not None
                and descriptor.status not in (Phase.FAILED, Phase.CANCELED)
                and (descriptor.base == backup_id or backup_id in descriptor.references)
            ):
                found.append(other)
        return sorted(found)

    # --- writing -----------------------------------------------------------------------------

    def _write(self, key: str, descriptor: BaseModel) -> None:
        self.storage.put_bytes(
            key, descriptor.model_dump_json(by_alias=True, exclude_none=True, indent=1).encode()
        )

    def write_global(self, descriptor: GlobalDescriptor) -> None:
        self._write(BackupLayout(descriptor.id).global_descriptor, descriptor)

    def write_node(self, descriptor: NodeDescriptor) -> None:
        self._write(BackupLayout(descriptor.id).node_descriptor(descriptor.node), descriptor)

    def write_node_spooled(self, descriptor: NodeDescriptor, spool: EntrySpool) -> None:
        """Writes ``descriptor`` with each collection's entries taken from ``spool``: its own
        collections carry no entries, and hold the spool's collections in the spool's order (one
        the spool lacks has none).
        Streams: memory is one block of the spool. Raises ``ValueError`` if the two disagree, and
        what the backend raises."""
        names = [col.name for col in descriptor.collections]
        spooled = spool.collections
        if [n for n in names if n in spooled] != spooled or any(
            col.entries for col in descriptor.collections
        ):
            raise ValueError("the descriptor's collections are not the spool's, or carry entries")
        body = descriptor.model_dump(mode="json", by_alias=True, exclude_none=True)
        collections = body.pop("collections")
        key = BackupLayout(descriptor.id).node_descriptor(descriptor.node)
        with self.storage.writer(key) as out:
            out.write(json.dumps(body, indent=1)[:-2].encode() + b',\n "collections": [')
            for i, (col, name) in enumerate(zip(collections, names, strict=True)):
                del col["entries"]
                head = ("," if i else "") + "\n  " + json.dumps(col)[:-1] + ', "entries": [\n'
                out.write(head.encode())
                spool.copy(name, out.write)
                out.write(b"]}")
            out.write(b"\n ]\n}\n")

    def write_restore(self, descriptor: RestoreDescriptor) -> None:
        self._write(BackupLayout(descriptor.backup_id).restore_descriptor, descriptor)

    def delete(self, backup_id: str) -> int:
        """Removes everything under the backup's id; returns how many objects there were."""
        return self.storage.delete_prefix(BackupLayout(backup_id).root)


def _encoded_length(text: str | None, b64: str | None) -> int:
    """Bytes of a name the descriptor keeps as UTF-8 ``text`` or as base64 ``b64``."""
    if text is not None:
        return len(text.encode("utf-8", "surrogatepass"))
    b64 = b64 or ""
    return len(b64) * 3 // 4 - b64[-2:].count("=")


class EntrySpool:
    """A node descriptor's entries, spooled to an anonymous file in ``directory`` as a backup
    describes them (see the module docstring): a million entries take disk, not memory. Each
    collection's entries are added together, one collection after another. A context manager: the
    file goes when it is closed."""

    _BLOCK = 1 << 20

    def __init__(self, directory: Path) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by close()
        self._ranges: dict[str, tuple[int, int]] = {}
        self._current: str | None = None
        self._start = 0
        self.entries = 0
        #: UTF-8 bytes of the entries' paths, and of the links' targets (what a reader that holds
        #: the entries, as a restore does, holds of them: ``agent.backup.restore_memory_needed``).
        self.path_bytes = 0
        self.links = 0
        self.target_bytes = 0

    @property
    def collections(self) -> builtins.list[str]:
        """The collections spooled, in order."""
        return [*self._ranges, *([self._current] if self._current is not None else [])]

    def add(self, collection: str, entry: Entry) -> None:
        """Appends ``entry`` (a validated model) to ``collection``'s entries. Raises ``ValueError``
        if ``collection`` was spooled before, then left for another."""
        first = collection != self._current
        if first:
            if collection in self._ranges:
                raise ValueError(f'collection "{collection}" was spooled already')
            self._end()
            self._current, self._start = collection, self._file.tell()
        line = dump_entry(entry)
        self._file.write(line if first else b",\n" + line)
        self.entries += 1
        self.path_bytes += _encoded_length(entry.path, entry.path_b64)
        if entry.target is not None or entry.target_b64 is not None:
            self.links += 1
            self.target_bytes += _encoded_length(entry.target, entry.target_b64)

    def _end(self) -> None:
        if self._current is not None:
            self._ranges[self._current] = (self._start, self._file.tell())
            self._current = None

    def copy(self, collection: str, write: Callable[[bytes], object]) -> None:
        """Passes ``collection``'s entries, as the inside of a JSON array, to ``write`` in blocks
        (nothing for a collection without entries)."""
        self._end()
        start, end = self._ranges.get(collection, (0, 0))
        self._file.seek(start)
        while start < end:
            block = self._file.read(min(self._BLOCK, end - start))
            if not block:
                raise OSError(f"the entry spool ended early in collection {collection}")
            write(block)
            start += len(block)
        self._file.seek(0, 2)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EntrySpool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- format 1 ------------------------------------------------------------------------------------


class _FileV1(BaseModel):
    path: str
    size: int
    sha256: str
    mode: int
    chunk: int


class _CollectionV1(BaseModel):
    name: str
    bytes: int
    files: list[_FileV1]
    chunks: list[dict[str, Any]]


class NodeDescriptorV1(BaseModel):
    """Format 1 as written by shardkeeper 0.1.0 (camelCase keys; only what changed is typed)."""

    model_config = {"extra": "allow"}
    collections: list[_CollectionV1]


def _upgrade_node_v1(old: NodeDescriptorV1) -> dict[str, Any]:
    """Format 1 -> the format 2 shape: each file an entry; no directories, links or mtimes (the
    archive's own mtimes are used on restore, as format 1 did)."""
    body = old.model_dump(by_alias=True)
    body["collections"] = [
        CollectionEntry(
            name=col.name,
            bytes=col.bytes,
            allocated=col.bytes,
            entries=[
                Entry.make(
                    f.path, EntryType.FILE, size=f.size, sha256=f.sha256, mode=f.mode & 0o777, chunk=f.chunk
                )
                for f in col.files
            ],
            chunks=col.chunks,
        ).model_dump(by_alias=True)
        for col in old.collections
    ]
    return body


__all__ = ["BackupRepository", "CorruptDescriptor", "EntrySpool"]
