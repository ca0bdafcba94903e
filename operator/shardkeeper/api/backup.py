"""The Backup custom resource: what users write (spec) and what the operator reports (status)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError

from shardkeeper.api.common import (
    BACKUP_ID_MAX_LENGTH,
    DNS_LABEL_PATTERN,
    ID_PATTERN,
    OPERATION_SPEC_RULES,
    Backend,
    BackupId,
    CompressionLevel,
    Consistency,
    DeletionPolicy,
    Model,
    Selector,
)
from shardkeeper.api.status import OperationStatusBase

CPU_PERCENTAGE_MIN, CPU_PERCENTAGE_MAX, CPU_PERCENTAGE_DEFAULT = 1, 80, 50
CHUNK_SIZE_MIN_MB, CHUNK_SIZE_MAX_MB, CHUNK_SIZE_DEFAULT_MB = 2, 512, 128

CpuPercentage = Annotated[
    int,
    Field(
        ge=CPU_PERCENTAGE_MIN,
        le=CPU_PERCENTAGE_MAX,
        description="Share of the node's CPU cores the agent may use; its worker pool has "
        "max(1, cores * cpuPercentage / 100) workers.",
    ),
]


_ABSOLUTE_PATH_MESSAGE = (
    "path must be relative to the bucket, container or BACKUP_FILESYSTEM_PATH: it must not start with '/'"
)


def _relative_path(path: str) -> str:
    """What the CEL rules below say, for every reader of the model (the agent's requests too)."""
    if path.startswith("/"):
        raise ValueError(_ABSOLUTE_PATH_MESSAGE)
    if ".." in path.split("/"):
        raise ValueError("path must not contain '..' segments")
    return path


#: A path prefix inside the backend's root (bucket, container or BACKUP_FILESYSTEM_PATH).
StoragePath = Annotated[
    str,
    Field(
        max_length=512,
        pattern=r"^[A-Za-z0-9_.=/-]*$",
        description="Where in the backend to keep this backup, replacing the backend's default "
        "path (BACKUP_*_PATH). Relative to the bucket, container or BACKUP_FILESYSTEM_PATH; "
        "a leading '/' and '..' are refused.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!self.split('/').exists(p, p == '..')",
                    "message": "path must not contain '..' segments",
                },
                {"rule": "!self.startsWith('/')", "message": _ABSOLUTE_PATH_MESSAGE},
            ]
        },
    ),
    AfterValidator(_relative_path),
]


class BackupConfig(Model):
    """How the agents write the backup: CPU share, chunk size, compression, path."""

    cpu_percentage: CpuPercentage = CPU_PERCENTAGE_DEFAULT
    chunk_size: int = Field(
        default=CHUNK_SIZE_DEFAULT_MB,
        ge=CHUNK_SIZE_MIN_MB,
        le=CHUNK_SIZE_MAX_MB,
        description="Target uncompressed size of a chunk, in MB. "
        "Files larger than this get a chunk of their own.",
    )
    compression_level: CompressionLevel = Field(
        default=CompressionLevel.DEFAULT,
        description="Codec and level: gzip (Default/BestSpeed/BestCompression), zstd (Zstd*) or none.",
    )
    path: StoragePath | None = None


class BackupSpec(Model):
    """A Backup copies the data of a StatefulSet's pods to a backend, consistently, through their agents.

    The spec is immutable once created, except for cancel and deletionPolicy.
    """

    model_config = ConfigDict(json_schema_extra=OPERATION_SPEC_RULES)

    backend: Backend = Field(description="Where the backup is stored; the backend must be enabled.")
    cluster: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Name of the StatefulSet, in this namespace, whose pods hold the data.",
    )
    id: BackupId | None = Field(
        default=None,
        description="Backup id in the backend; defaults to metadata.name. Lowercase, digits, '_' and '-'.",
    )
    include: list[Selector] | None = Field(
        default=None,
        max_length=1000,
        description="Collections to back up ('*' and '?' wildcards). Default: all.",
    )
    exclude: list[Selector] | None = Field(
        default=None,
        max_length=1000,
        description="Collections to leave out ('*' and '?' wildcards).",
    )
    consistency: Consistency = Field(
        default=Consistency.NODE,
        description="node: each node's snapshot is consistent on its own. cluster: all nodes hold writes "
        "until every node has frozen its files, so the backup is one consistent cut of the cluster "
        "(status.consistentAt); a backup without one (a node with no workload hook, a hold that ended by "
        "itself) fails with reason NoConsistentCut.",
    )
    config: BackupConfig = Field(
        default_factory=BackupConfig,
        description="How the agents write the backup: CPU share, chunk size, compression, path.",
        json_schema_extra={"default": {}},
    )
    cancel: bool = Field(
        default=False,
        description="Set to true to cancel a running backup. May be set after creation.",
    )
    incremental_base: BackupId | None = Field(
        default=None,
        description="Id of a SUCCESS backup in the same backend and path, written with the same codec: files "
        "it already holds are referenced, not uploaded again. A node it lacks gets a full copy.",
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.RETAIN,
        description="What deleting this Backup object does to its data in the backend: Retain keeps "
        "it (restorable, listed by 'shardkeeper backups list'), Delete removes it. May be changed later.",
    )


#: CEL rules on the root of the Backup CRD (a root rule may read ``metadata.name``): without
#: ``spec.id`` the object's name is the backup id, so it must be one.
BACKUP_ROOT_RULES: list[dict[str, Any]] = [
    {
        "rule": f"has(self.spec.id) || (size(self.metadata.name) <= {BACKUP_ID_MAX_LENGTH} && "
        f"self.metadata.name.matches('{ID_PATTERN}'))",
        "message": "metadata.name is the backup id unless spec.id is set, and is not a valid one "
        f"(lowercase letters, digits, '_' and '-', at most {BACKUP_ID_MAX_LENGTH} characters): "
        "set spec.id or rename the Backup",
        "reason": "FieldValueInvalid",
    }
]

_BACKUP_ID = TypeAdapter(BackupId)


def backup_id_of(name: str, spec: BackupSpec) -> str:
    """The backup id of a Backup named ``name``: ``spec.id``, else the name.

    Raises ``ValueError`` naming ``metadata.name`` when the name is used and is not a valid id
    (the same check as ``BACKUP_ROOT_RULES``, for objects admitted before the rule existed)."""
    if spec.id is not None:
        return spec.id
    try:
        return _BACKUP_ID.validate_python(name)
    except ValidationError:
        raise ValueError(
            f'metadata.name "{name[:300]}" is used as the backup id (spec.id is not set) and is not a '
            f"valid one: lowercase letters, digits, '_' and '-', at most {BACKUP_ID_MAX_LENGTH} "
            "characters; set spec.id or rename the Backup"
        ) from None


class BackupStatus(OperationStatusBase):
    """What the operator reports about a Backup."""

    stored_bytes: int | None = Field(
        default=None, description="Bytes the finished backup occupies in the backend (after compression)."
    )
    consistent_at: dt.datetime | None = Field(
        default=None,
        description="consistency cluster: an instant inside every node's hold window (the first one); "
        "the backup is the cluster's state at that instant (RFC 3339).",
    )
    hold_overlap_ms: float | None = Field(
        default=None,
        description="consistency cluster: how long every node's writes were held at once, in milliseconds.",
    )
    cut: str | None = Field(default=None, description="Which cut the backup is, in words (or why none).")
    max_pause_ms: float | None = Field(
        default=None, description="The longest write hold of any node (pauseMs), in milliseconds."
    )
