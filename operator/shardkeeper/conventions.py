"""Names shared by the operator, the agents, the CRDs and the chart: one place, so they never drift."""

from typing import Final

GROUP: Final = "shardkeeper.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

BACKUP_KIND: Final = "Backup"
BACKUP_PLURAL: Final = "backups"
RESTORE_KIND: Final = "Restore"
RESTORE_PLURAL: Final = "restores"
SCHEDULE_KIND: Final = "BackupSchedule"
SCHEDULE_PLURAL: Final = "backupschedules"

FINALIZER: Final = f"{GROUP}/finalizer"

#: The named container port on which a pod's agent listens. The operator finds agents by it.
AGENT_PORT_NAME: Final = "shardkeeper"
AGENT_DEFAULT_PORT: Final = 8470

#: Everything the agent keeps inside a node's data root lives under this directory, which is
#: therefore never a collection. Staging stays on the data volume so that hard links work.
AGENT_STATE_DIR: Final = ".shardkeeper"

#: Format version of the descriptors this code writes; readers refuse versions they do not know.
#: 2: trees (directories, symbolic and hard links, sparse files, names as bytes, mtimes in ns).
#: 3: an incremental backup, whose chunks may live in other backups (written only when one does).
#: 4: chunks checked by BLAKE3 (``ChunkEntry.blake3``) instead of sha256; full and incremental alike
#: (an incremental one may still reference its base's sha256-checked chunks).
DESCRIPTOR_FORMAT_VERSION: Final = 4
INCREMENTAL_FORMAT_VERSION: Final = 4
READABLE_FORMAT_VERSIONS: Final = frozenset({1, 2, 3, 4})
GLOBAL_DESCRIPTOR: Final = "backup_config.json"
RESTORE_DESCRIPTOR: Final = "restore_config.json"
NODE_DESCRIPTOR: Final = "backup.json"
