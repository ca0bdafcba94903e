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
    cpu_percentage: CpuPercentage = CPU_PERCENTAGE_DEFAULT
    path: StoragePath | None = None


class RestoreSpec(Model):
    """A Restore brings a backup back onto a StatefulSet whose node names and count match it.

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
    include: list[Selector] | None = Field(default=None, max_length=1000)
    exclude: list[Selector] | None = Field(default=None, max_length=1000)
    node_mapping: dict[str, str] | None = Field(
        default=None,
        max_length=1000,
        description="Renames nodes: {nodeInBackup: podInTargetCluster}.",
    )
    config: RestoreConfig = Field(default_factory=RestoreConfig, json_schema_extra={"default": {}})
    cancel: bool = False


class RestoreStatus(OperationStatusBase):
    """What the operator reports about a Restore."""
