"""What a backup leaves in the backend besides its chunks (the repository format).

``<id>/<node>/backup.json`` (NodeDescriptor) is written by each agent after its chunks;
``<id>/backup_config.json`` (GlobalDescriptor) is written by the operator last, and its presence with
status SUCCESS is what makes a backup restorable.

Format 2 (this version) describes a collection as a tree: every directory (empty ones too), regular
file (sparse ones with their data map), symbolic link and hard link, with names as bytes, permission
bits, ownership and mtimes in nanoseconds. Format 1 listed regular files only; it is still read
(``storage.repository`` upgrades it on the way in), never written.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import Field, TypeAdapter, model_validator
from pydantic.dataclasses import dataclass

from shardkeeper.api.common import Backend, Codec, CompressionLevel, Consistency, Model, Phase
from shardkeeper.conventions import DESCRIPTOR_FORMAT_VERSION, READABLE_FORMAT_VERSIONS
from shardkeeper.errors import UnknownFormatVersion

SHA256_PATTERN = r"^[0-9a-f]{64}$"


def encode_name(name: str) -> tuple[str | None, str | None]:
    """A file name as the descriptor keeps it: ``(text, None)`` when its bytes are valid UTF-8,
    ``(None, base64 of the bytes)`` otherwise. ``name`` is a ``str`` as ``os`` returns it, with
    undecodable bytes as surrogates (PEP 383), so every name a Linux filesystem holds round-trips."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None, base64.b64encode(name.encode("utf-8", "surrogateescape")).decode()
    return name, None


def decode_name(text: str | None, b64: str | None, *, what: str) -> str:
    """The inverse of ``encode_name``. Raises ``ValueError`` naming ``what`` on anything else."""
    if (text is None) == (b64 is None):
        raise ValueError(f"{what}: exactly one of the text and base64 forms must be given")
    if text is not None:
        return text
    assert b64 is not None
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{what}: invalid base64: {exc}") from None
    return raw.decode("utf-8", "surrogateescape")


class EntryType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    """Another name for a FILE entry of the same collection (``target``): stored once."""


@dataclass(slots=True, kw_only=True, config=Model.model_config)
class Entry:
    """One entry of a collection's tree. Paths are relative to the node's data root and start with
    the collection's name (the collection's own directory is the entry whose path is the name).

    A dataclass with slots, not a model: a node holds one per file, and a restore reads them all
    (~0.5 KB each where a model took ~1.6 KB; ``benchmarks/README.md``, goal 4). Same fields, same
    JSON (``dump_entry``)."""

    path: str | None = Field(default=None, description="The path, when its bytes are valid UTF-8.")
    path_b64: str | None = Field(default=None, description="The path's bytes in base64, otherwise.")
    type: EntryType = Field()  # a Field keeps the declared validation order (errors name it first)
    mode: int = Field(
        ge=0, le=0o7777, description="Permission bits; writers never record setuid/setgid/sticky."
    )
    mtime_ns: int | None = Field(default=None, description="Modification time in ns (format 1: None).")
    uid: int | None = Field(default=None, ge=0)
    gid: int | None = Field(default=None, ge=0)
    ino: int | None = Field(
        default=None, ge=0, description="Files: the inode, to recognise an unchanged file."
    )
    gen: int | None = Field(
        default=None, description="Files: the inode's generation (a reused inode number gets another)."
    )
    size: int = Field(default=0, ge=0, description="Files: the apparent size in bytes.")
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Files: sha256 of the content (holes read as zeros).",
    )
    chunk: int | None = Field(
        default=None, ge=1, description="The chunk (in the collection) holding the entry."
    )
    target: str | None = Field(default=None, description="Symbolic links: the target; hard links: the path.")
    target_b64: str | None = Field(default=None)
    data: list[tuple[int, int]] | None = Field(
        default=None, description="Sparse files: the (offset, length) data segments; the rest are holes."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Entry:
        where = self.path if self.path is not None else f"(base64) {self.path_b64}"
        decode_name(self.path, self.path_b64, what=f"entry {where}")
        if self.type is EntryType.FILE and self.sha256 is None:
            raise ValueError(f"file {where} has no sha256")
        if self.type in (EntryType.SYMLINK, EntryType.HARDLINK):
            decode_name(self.target, self.target_b64, what=f"target of {where}")
        elif self.target is not None or self.target_b64 is not None:
            raise ValueError(f"{self.type} {where} cannot have a target")
        if self.data is not None:
            end = 0
            for offset, length in self.data:
                if offset < end or length <= 0:
                    raise ValueError(f"file {where}: data segments must be ascending and not overlap")
                end = offset + length
            if self.type is not EntryType.FILE or end > self.size:
                raise ValueError(f"{where}: data segments beyond the file's size")
        return self

    @property
    def name(self) -> str:
        """The path, as ``os`` functions take it."""
        return decode_name(self.path, self.path_b64, what="entry")

    @property
    def link(self) -> str | None:
        """The symbolic link's target, or the hard link's path, as ``os`` functions take it."""
        if self.target is None and self.target_b64 is None:
            return None
        return decode_name(self.target, self.target_b64, what="target")

    @property
    def data_bytes(self) -> int:
        """Bytes of content actually stored (a sparse file's data segments)."""
        return sum(length for _, length in self.data) if self.data is not None else self.size

    @classmethod
    def make(cls, name: str, type_: EntryType, *, target: str | None = None, **fields: Any) -> Entry:
        """An entry for ``name`` (and a link's ``target``), names encoded as the descriptor keeps them;
        ``fields``: the others. Raises ``ValidationError`` for what the format refuses."""
        path, path_b64 = encode_name(name)
        link, link_b64 = encode_name(target) if target is not None else (None, None)
        return cls(
            path=path,
            path_b64=path_b64,
            type=type_,
            target=link,
            target_b64=link_b64,
            **fields,
        )


def dump_entry(entry: Entry) -> bytes:
    """``entry`` as the descriptor's JSON (camelCase, no nulls), one line."""
    return _ENTRY.dump_json(entry, by_alias=True, exclude_none=True)


_ENTRY: TypeAdapter[Entry] = TypeAdapter(Entry)


class ChunkEntry(Model):
    n: int = Field(ge=1)
    key: str = Field(description="Relative to the node's directory, e.g. 'chunk-3'.")
    backup: str | None = Field(
        default=None,
        description="Format 3: the backup whose node directory holds the chunk, when not this one (an "
        "incremental backup references its base's chunks; only the entries it lists are restored from it).",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Formats 1-3: sha256 of the stored (compressed) bytes.",
    )
    blake3: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Format 4 on: BLAKE3 (256 bits) of the stored (compressed) bytes.",
    )
    size: int = Field(ge=0, description="Stored (compressed) bytes.")
    raw_size: int = Field(ge=0, description="Bytes of the tar stream before compression.")
    files: int = Field(ge=0, description="Entries in the chunk.")

    @model_validator(mode="after")
    def _one_checksum(self) -> ChunkEntry:
        if (self.sha256 is None) == (self.blake3 is None):
            raise ValueError(f"chunk {self.key}: exactly one of sha256 and blake3 must be given")
        return self

    @property
    def checksum(self) -> tuple[str, str]:
        """``(algorithm, hex digest)`` of the stored bytes: ("blake3", …) or ("sha256", …)."""
        if self.blake3 is not None:
            return "blake3", self.blake3
        assert self.sha256 is not None
        return "sha256", self.sha256


class CollectionEntry(Model):
    name: str
    bytes: int = Field(ge=0, description="Apparent size of its files.")
    allocated: int = Field(
        default=0, ge=0, description="Bytes a restore writes to disk (sparse holes and hard links excluded)."
    )
    entries: list[Entry]
    chunks: list[ChunkEntry]

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type is EntryType.FILE]


class Versioned(Model):
    format_version: int = DESCRIPTOR_FORMAT_VERSION

    def check_version(self) -> None:
        if self.format_version not in READABLE_FORMAT_VERSIONS:
            raise UnknownFormatVersion(
                f"descriptor format version {self.format_version} is not known to this shardkeeper "
                f"(it reads versions {sorted(READABLE_FORMAT_VERSIONS)})"
            )


class Skipped(Model):
    """An entry left out of the backup, with the reason (a socket, a file gone before it was frozen)."""

    path: str
    reason: str


class NodeDescriptor(Versioned):
    id: str
    node: str
    status: Phase
    started_at: dt.datetime
    completed_at: dt.datetime | None = None
    codec: Codec
    compression_level: CompressionLevel
    collections: list[CollectionEntry]
    bytes: int
    stored_bytes: int
    file_count: int
    pause_ms: float | None = None
    skipped: list[Skipped] = Field(default_factory=list, description="At most the first 100.")
    skipped_count: int = 0
    base: str | None = Field(default=None, description="The backup this node's files were compared with.")
    bytes_reused: int = Field(default=0, description="Bytes referenced in earlier backups, not uploaded.")


class NodeSummary(Model):
    status: Phase
    collections: list[str]
    bytes: int = 0
    stored_bytes: int = 0
    files: int = 0
    skipped: int = 0
    bytes_reused: int = 0
    error: str | None = None


class Owner(Model):
    """The custom resource that made this backup, so that its own retries are recognised."""

    namespace: str
    name: str
    uid: str


class RestoreNode(Model):
    source: str
    status: str
    error: str | None = None


class RestoreDescriptor(Versioned):
    """``<id>/restore_config.json``: the last restore of this backup, next to it."""

    backup_id: str
    status: Phase
    restore: Owner
    cluster: str
    node_mapping: dict[str, str] = Field(default_factory=dict)
    collections: list[str]
    nodes: dict[str, RestoreNode]
    started_at: dt.datetime
    completed_at: dt.datetime | None = None
    error: str | None = None


class GlobalDescriptor(Versioned):
    id: str
    status: Phase
    backend: Backend
    started_at: dt.datetime
    completed_at: dt.datetime | None = None
    codec: Codec
    compression_level: CompressionLevel
    chunk_size_mb: int
    consistency: Consistency = Consistency.NODE
    collections: list[str]
    nodes: dict[str, NodeSummary]
    bytes: int = 0
    stored_bytes: int = 0
    files: int = 0
    owner: Owner | None = None
    error: str | None = None
    base: str | None = Field(default=None, description="spec.incrementalBase: the backup this one builds on.")
    references: list[str] = Field(
        default_factory=list,
        description="Every other backup whose chunks this one uses (the chain, flattened).",
    )
    bytes_reused: int = 0
