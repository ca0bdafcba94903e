"""Where backups live: one small interface, one module per backend, a registry by name.

Backends are synchronous on purpose: the SDKs they wrap are, and the agent runs every transfer in
worker threads anyway. Retry policy lives once, in ``base``.
"""

from shardkeeper.storage.background import BackgroundWriter
from shardkeeper.storage.base import ObjectInfo, Storage, Writer
from shardkeeper.storage.layout import BackupLayout
from shardkeeper.storage.registry import configured_backends, open_storage

__all__ = [
    "BackgroundWriter",
    "BackupLayout",
    "ObjectInfo",
    "Storage",
    "Writer",
    "configured_backends",
    "open_storage",
]
