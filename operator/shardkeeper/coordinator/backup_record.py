"""A Backup's record in the backend, the global descriptor: read, and made from the status and
the nodes' descriptors. Pure, but for ``read_global_descriptor``."""

from __future__ import annotations

import datetime as dt

from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import Codec, CompressionLevel, Phase
from shardkeeper.api.descriptors import GlobalDescriptor, NodeDescriptor, NodeSummary, Owner
from shardkeeper.archive.codecs import CODEC_FOR_LEVEL
from shardkeeper.conventions import DESCRIPTOR_FORMAT_VERSION, INCREMENTAL_FORMAT_VERSION
from shardkeeper.errors import UnknownFormatVersion
from shardkeeper.storage import BackupLayout, Storage
from shardkeeper.storage.repository import BackupRepository


def read_global_descriptor(storage: Storage, layout: BackupLayout) -> GlobalDescriptor | None:
    """The backup's global descriptor, or None if there is none. A version this code does not know
    reads as a finished backup that nobody here owns, so it is never overwritten; a corrupt one
    raises ``CorruptDescriptor``, naming it."""
    try:
        return BackupRepository(storage).global_descriptor(layout.backup_id)
    except UnknownFormatVersion:
        return GlobalDescriptor(
            id=layout.backup_id,
            status=Phase.SUCCESS,
            backend=storage.backend,
            started_at=dt.datetime.fromtimestamp(0, dt.UTC),
            codec=Codec.NONE,
            compression_level=CompressionLevel.NONE,
            chunk_size_mb=0,
            collections=[],
            nodes={},
        )


def global_descriptor(
    backup_id: str,
    spec: BackupSpec,
    status: BackupStatus,
    phase: Phase,
    *,
    owner: Owner,
    collections: list[str],
    nodes: list[NodeDescriptor],
    now: dt.datetime,
) -> GlobalDescriptor:
    """The global descriptor of a backup in ``phase``: every node of the status, summed from its
    node descriptor in ``nodes`` when there is one (SUCCESS), else from the status (a node that
    failed or never finished uploads nothing); ``collections``: all of them, not the status's first
    few. An incremental backup (a chunk of another backup referenced) gets the incremental format."""
    by_node = {n.node: n for n in nodes}
    summaries = {}
    for name, node in status.nodes.items():
        done = by_node.get(name)
        summaries[name] = NodeSummary(
            status=done.status if done else _phase_of(node.phase),
            collections=[col.name for col in done.collections] if done else [],
            bytes=done.bytes if done else 0,
            stored_bytes=done.stored_bytes if done else 0,
            files=done.file_count if done else 0,
            bytes_reused=done.bytes_reused if done else 0,
            error=node.error,
        )
    references = sorted({ch.backup for n in nodes for col in n.collections for ch in col.chunks if ch.backup})
    cfg = spec.config
    return GlobalDescriptor(
        id=backup_id,
        status=phase,
        backend=spec.backend,
        started_at=status.started_at or now,
        completed_at=now if phase.terminal else None,
        codec=CODEC_FOR_LEVEL[cfg.compression_level].codec,
        compression_level=cfg.compression_level,
        chunk_size_mb=cfg.chunk_size,
        consistency=spec.consistency,
        collections=collections,
        nodes=summaries,
        bytes=sum(s.bytes for s in summaries.values()),
        stored_bytes=sum(s.stored_bytes for s in summaries.values()),
        files=sum(s.files for s in summaries.values()),
        owner=owner,
        error=status.error,
        base=spec.incremental_base,
        references=references,
        bytes_reused=sum(s.bytes_reused for s in summaries.values()),
        format_version=INCREMENTAL_FORMAT_VERSION if references else DESCRIPTOR_FORMAT_VERSION,
    )


def _phase_of(node_phase: str) -> Phase:
    try:
        return Phase(node_phase)
    except ValueError:
        return Phase.FAILED
