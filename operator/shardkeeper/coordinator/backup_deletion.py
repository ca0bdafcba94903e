"""Deleting a Backup object: cancel it if it runs, then apply spec.deletionPolicy to its data.

The data goes only under ``Delete``, only if this object wrote it (the global descriptor names its
uid), and only if no incremental backup builds on it; a backend that is away is retried for
``backend_unavailable_seconds``, then the object goes and the data stays, with a Warning saying where.
"""

from __future__ import annotations

import abc

from shardkeeper.api.backup import BackupSpec, BackupStatus
from shardkeeper.api.common import DeletionPolicy
from shardkeeper.api.descriptors import GlobalDescriptor
from shardkeeper.coordinator.backup_record import read_global_descriptor
from shardkeeper.coordinator.objects import DeletionDeferred, Outcome, Stop, in_thread
from shardkeeper.coordinator.operation import OperationReconciler
from shardkeeper.errors import StorageError, TransientStorageError
from shardkeeper.storage import BackupLayout
from shardkeeper.storage.repository import BackupRepository


class BackupDeletion(OperationReconciler[BackupSpec, BackupStatus]):
    """What deleting a Backup object does (``BackupReconciler`` is the rest)."""

    @property
    @abc.abstractmethod
    def layout(self) -> BackupLayout:
        """Where this backup's objects are."""

    async def delete(self) -> Outcome[BackupStatus]:
        """Cancels a running backup (the base class), then applies spec.deletionPolicy."""
        outcome = await super().delete()
        if self.spec.deletion_policy is DeletionPolicy.DELETE:
            await self._delete_data()
        return outcome

    async def _delete_data(self) -> None:
        """Removes this Backup's data from the backend; never data another Backup object wrote.

        A backend that cannot be reached is retried (``DeletionDeferred``) until it has been away
        for ``backend_unavailable_seconds`` since the deletion began; then the object goes and the
        data stays, with a Warning event saying where. A deletion never blocks forever."""
        try:
            storage = self._open_storage()
        except Stop:
            self._event("Warning", "DataRetained", f"data not deleted: {self.status.error}")
            return
        location = storage.url(self.layout.root)
        try:
            existing = await in_thread(lambda: read_global_descriptor(storage, self.layout))
            if existing is None:
                self._event("Normal", "DataDeleted", f"no backup data at {location}: nothing to delete")
                return
            if not self._is_ours(existing):
                owner = existing.owner
                by = f"{owner.namespace}/{owner.name}" if owner else "another writer"
                self._event(
                    "Warning",
                    "DataRetained",
                    f"the backup at {location} was written by {by}, not by this Backup: left in place",
                )
                return
            dependants = await in_thread(lambda: BackupRepository(storage).dependants(self.op_id))
            if dependants:
                self._event(
                    "Warning",
                    "DataRetained",
                    f"backups {dependants} are incremental backups built on the data at {location}: it stays "
                    "until they are deleted (deleting it would break them)",
                )
                return
            removed = await in_thread(lambda: storage.delete_prefix(self.layout.root))
        except TransientStorageError as exc:
            since = self.obj.deleting_since or self.now
            away = (self.now - since).total_seconds()
            if away < self.ctx.settings.backend_unavailable_seconds:
                raise DeletionDeferred(f"backend unavailable, will retry deleting {location}: {exc}") from exc
            self._event(
                "Warning",
                "DataRetained",
                f"backend unavailable for {away:.0f}s; data left at {location}: {exc}",
            )
            return
        except StorageError as exc:
            self._event("Warning", "DataRetained", f"could not delete the data at {location}: {exc}")
            return
        self._event(
            "Normal", "DataDeleted", f"deletionPolicy Delete: removed {removed} objects at {location}"
        )

    def _is_ours(self, descriptor: GlobalDescriptor) -> bool:
        return descriptor.owner is not None and descriptor.owner.uid == self.obj.uid


__all__ = ["BackupDeletion"]
