"""The workload hook: how an agent asks its database for a consistent set of files.

The workload serves three endpoints next to the agent (usually on localhost in the same pod):

    POST {hook}/prepare   HookPrepare -> HookFileList   hold writes, pause compaction, flush, and list
                                                        the files that make up the collections
    POST {hook}/release   HookRelease                   resume writes and compaction
    POST {hook}/restored  HookRestored                  collections were moved into place: load them

Between ``prepare`` and ``release`` the agent hard-links the immutable files into its staging
area and copies the mutable ones, so the workload is paused for milliseconds.
"""

from __future__ import annotations

from pydantic import Field

from shardkeeper.api.common import Model


class HookPrepare(Model):
    id: str
    collections: list[str]
    hold_timeout_seconds: float = Field(
        description="If no release arrives within this time, the workload must release by itself."
    )


class HookFile(Model):
    path: str = Field(description="Relative to the data root; the first segment is the collection.")
    immutable: bool = Field(description="True if the workload will never modify this file in place.")


class HookFileList(Model):
    files: list[HookFile]


class HookRelease(Model):
    id: str


class HookRestored(Model):
    id: str
    collections: list[str]
