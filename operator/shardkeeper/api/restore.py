"""The Restore custom resource."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from shardkeeper.api.backup import CPU_PERCENTAGE_DEFAULT, CpuPercentage, StoragePath
from shardkeeper.api.common import (
    DNS_LABEL_PATTERN,
    OPERATION_SPEC_RULES,
    Backend,
    BackupId,
    Model,
    Selector,
)
from shardkeeper.api.status import OperationStatusBase


class RestoreConfig(Model):
    """How the agents restore: CPU share, and where the backup was stored."""

    cpu_percentage: CpuPercentage = CPU_PERCENTAGE_DEFAULT
    path: StoragePath | None = Field(
        default=None,
        description="Where in the backend the backup was stored: the path its Backup gave in "
        "spec.config.path. Leave empty for the backend's default path (BACKUP_*_PATH). Relative to the "
        "bucket, container or BACKUP_FILESYSTEM_PATH; a leading '/' and '..' are refused.",
    )


class RestoreSpec(Model):
    """A Restore brings a backup back onto a StatefulSet with as many nodes, named as in the backup or
    renamed by nodeMapping; collections that already exist on a node are refused.

    The spec is immutable once created, except for setting cancel to true.
    """

    model_config = ConfigDict(json_schema_extra=OPERATION_SPEC_RULES)

    backup_id: BackupId = Field(description="Id of the backup to restore.")
    backend: Backend = Field(description="Where the backup is stored.")
    cluster: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Name of the target StatefulSet, in this namespace.",
    )
    include: list[Selector] | None = Field(
        default=None,
        max_length=1000,
        description="Collections of the backup to restore ('*' and '?' wildcards). Default: all.",
    )
    exclude: list[Selector] | None = Field(
        default=None,
        max_length=1000,
        description="Collections of the backup to leave out ('*' and '?' wildcards).",
    )
    node_mapping: dict[str, str] | None = Field(
        default=None,
        max_length=1000,
        description="Renames nodes: {nodeInBackup: podInTargetCluster}.",
    )
    config: RestoreConfig = Field(
        default_factory=RestoreConfig,
        description="How the agents restore: CPU share, and where the backup was stored.",
        json_schema_extra={"default": {}},
    )
    cancel: bool = Field(
        default=False,
        description="Set to true to cancel a running restore; honoured until FINALIZING, when the "
        "restored data is moved into place.",
    )


class RestoreStatus(OperationStatusBase):
    """What the operator reports about a Restore."""
