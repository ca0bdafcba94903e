"""The key layout of a backup in every backend, owned by one class so it is never spelled twice.

<id>/backup_config.json                 global descriptor, written last by the operator
<id>/restore_config.json                the last restore of this backup
<id>/<node>/backup.json                 node descriptor: entries, sizes, sha256, chunks
<id>/<node>/chunk-<n>                   tar stream (gzip | zstd | none); n counts per node
<id>/.probe/<nonce>                     transient: proves that agents share the operator's store

Collection names never appear in keys (format 1 used ``<node>/<collection>/chunk-<n>``, which
descriptors record, so those still read): any name a filesystem allows is a valid collection, and
none can collide with the layout's own names or break a backend's key rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardkeeper import conventions as c


@dataclass(frozen=True)
class BackupLayout:
    backup_id: str

    @property
    def root(self) -> str:
        return self.backup_id

    @property
    def global_descriptor(self) -> str:
        return f"{self.backup_id}/{c.GLOBAL_DESCRIPTOR}"

    @property
    def restore_descriptor(self) -> str:
        return f"{self.backup_id}/{c.RESTORE_DESCRIPTOR}"

    def node_dir(self, node: str) -> str:
        return f"{self.backup_id}/{node}"

    def node_descriptor(self, node: str) -> str:
        return f"{self.backup_id}/{node}/{c.NODE_DESCRIPTOR}"

    def chunk_key(self, n: int) -> str:
        """Relative to the node's directory, as recorded in the node descriptor."""
        return f"chunk-{n}"

    def chunk(self, node: str, chunk_key: str) -> str:
        return f"{self.backup_id}/{node}/{chunk_key}"

    @property
    def probe_dir(self) -> str:
        return f"{self.backup_id}/.probe"

    def probe(self, nonce: str) -> str:
        return f"{self.probe_dir}/{nonce}"
