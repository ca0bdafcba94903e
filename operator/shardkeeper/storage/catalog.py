"""What the seed's REST API offers besides creating and restoring: listing backups, describing one,
and copying one to another backend ("backup and restore between different storage providers").

A copy streams every chunk from one backend to the other and checks each against the sha256 and
size in its node descriptor on the way; descriptors are written after their chunks and the global
descriptor last, so the copy becomes a backup at the destination only once it is whole. If anything
does not match, what was copied is removed again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shardkeeper.api.common import Phase
from shardkeeper.api.descriptors import GlobalDescriptor
from shardkeeper.errors import IntegrityError, SpecError
from shardkeeper.storage.base import Storage
from shardkeeper.storage.checksum import chunk_hasher
from shardkeeper.storage.layout import BackupLayout
from shardkeeper.storage.repository import BackupRepository

COPY_BUFFER = 1 << 20


def read_descriptor(storage: Storage, backup_id: str) -> GlobalDescriptor:
    descriptor = BackupRepository(storage).global_descriptor(backup_id)
    if descriptor is None:
        raise SpecError(f'backup id "{backup_id}" does not exist at "{storage.url(backup_id)}"')
    return descriptor


def list_backups(storage: Storage) -> list[GlobalDescriptor]:
    """Every backup under the storage's path, newest first. Ids without a descriptor are skipped."""
    return BackupRepository(storage).list()


@dataclass
class CopyReport:
    objects: int = 0
    bytes: int = 0


def copy_backup(
    source: Storage,
    target: Storage,
    backup_id: str,
    *,
    on_progress: Callable[[CopyReport], None] = lambda _: None,
) -> CopyReport:
    descriptor = read_descriptor(source, backup_id)
    if descriptor.status is not Phase.SUCCESS:
        raise SpecError(f'backup "{backup_id}" is {descriptor.status}; only a complete backup can be copied')
    if descriptor.references:
        raise SpecError(
            f'backup "{backup_id}" is incremental (it uses the data of {descriptor.references}): copying a '
            "chain is not supported yet; copy a full backup"
        )
    layout = BackupLayout(backup_id)
    if target.exists(layout.global_descriptor):
        raise SpecError(f'backup "{backup_id}" already exists at "{target.url(backup_id)}"')
    repo = BackupRepository(source)
    report = CopyReport()
    try:
        for node in sorted(descriptor.nodes):
            node_descriptor = repo.node_head(backup_id, node, validate_entries=True)
            if node_descriptor is None:
                raise IntegrityError(f"{source.url(layout.node_descriptor(node))} is missing")
            for collection in node_descriptor.collections:
                for chunk in collection.chunks:
                    key = layout.chunk(node, chunk.key)
                    _copy_verified(
                        source, target, key, checksum=chunk.checksum, size=chunk.size, report=report
                    )
                    on_progress(report)
            # The bytes as stored (a format 1 descriptor stays format 1 at the destination), streamed.
            with (
                source.reader(layout.node_descriptor(node)) as reader,
                target.writer(layout.node_descriptor(node)) as writer,
            ):
                while block := reader.read(COPY_BUFFER):
                    writer.write(block)
            report.objects += 1
        target.put_bytes(layout.global_descriptor, source.get_bytes(layout.global_descriptor))
        report.objects += 1
    except BaseException:
        target.delete_prefix(backup_id)
        raise
    return report


def _copy_verified(
    source: Storage, target: Storage, key: str, *, checksum: tuple[str, str], size: int, report: CopyReport
) -> None:
    algorithm, expected = checksum
    digest, copied = chunk_hasher(algorithm), 0
    with source.reader(key) as reader, target.writer(key) as writer:
        while block := reader.read(COPY_BUFFER):
            digest.update(block)
            copied += len(block)
            writer.write(block)
        if copied != size or digest.hexdigest() != expected:
            raise IntegrityError(
                f"{source.url(key)} does not match its descriptor ({copied} bytes, {algorithm} "
                f"{digest.hexdigest()[:16]}…; expected {size} bytes, {expected[:16]}…): nothing was copied"
            )
    report.objects += 1
    report.bytes += copied
