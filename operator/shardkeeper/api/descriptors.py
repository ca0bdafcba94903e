"""What a backup leaves in the backend besides its chunks.

``<id>/<node>/backup.json`` (NodeDescriptor) is written by each agent after its chunks;
``<id>/backup_config.json`` (GlobalDescriptor) is written by the operator last, and its presence with
status SUCCESS is what makes a backup restorable.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from shardkeeper.api.common import Backend, Codec, CompressionLevel, Consistency, Model, Phase
from shardkeeper.conventions import DESCRIPTOR_FORMAT_VERSION
from shardkeeper.errors import UnknownFormatVersion


class FileEntry(Model):
    path: str = Field(description="Relative to the node's data root; starts with the collection name.")
    size: int
    sha256: str
    mode: int
    chunk: int = Field(description="Number of the chunk (within the collection) that holds the file.")


class ChunkEntry(Model):
    n: int
    key: str = Field(description="Relative to the node's directory, e.g. 'articles/chunk-1'.")
    sha256: str = Field(description="Of the stored (compressed) bytes.")
    size: int = Field(description="Stored (compressed) bytes.")
    raw_size: int = Field(description="Bytes of the tar stream before compression.")
    files: int


class CollectionEntry(Model):
    name: str
    bytes: int
    files: list[FileEntry]
    chunks: list[ChunkEntry]


class Versioned(Model):
    format_version: int = DESCRIPTOR_FORMAT_VERSION

    def check_version(self) -> None:
        if self.format_version != DESCRIPTOR_FORMAT_VERSION:
            raise UnknownFormatVersion(
                f"descriptor format version {self.format_version} is not known to this shardkeeper "
                f"(it reads version {DESCRIPTOR_FORMAT_VERSION})"
            )


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


class NodeSummary(Model):
    status: Phase
    collections: list[str]
    bytes: int = 0
    stored_bytes: int = 0
    files: int = 0
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
