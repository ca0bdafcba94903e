"""What a restore moved into the data root, on disk, so that a restarted agent can take it back.

A restore makes its collections visible by renaming them into place (finalize), then tells the
workload (complete). If the agent dies in between, the restore can no longer complete: the operator
fails it and the other nodes take theirs back, and this node must too, although the process that
knew what it had moved is gone. So each rename is journaled (fsynced) *before* it happens, with the
directory's inode, and a starting agent takes back every journaled collection that is still that
inode (a rename keeps it), before anything else. The journal is removed once the restore succeeded
or everything was taken back.

    <data>/.shardkeeper/journal/<operation id>.json   {"moved": [{"name": ..., "dev": ..., "ino": ...}]}
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


class MoveJournal:
    def __init__(self, directory: Path, op_id: str) -> None:
        self._dir = directory
        self.path = directory / f"{op_id}.json"
        self._moved: list[dict[str, object]] = []

    def record(self, name: str, source: Path) -> None:
        """Journals that ``source`` (a directory) is about to be renamed to collection ``name``."""
        st = source.lstat()
        self._moved.append({"name": name, "dev": st.st_dev, "ino": st.st_ino})
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({"moved": self._moved}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename of the journal itself is durable before the collection's
        finally:
            os.close(fd)

    def clear(self) -> None:
        self._moved.clear()
        self.path.unlink(missing_ok=True)


def take_back_journaled(directory: Path, data_root: Path, remove: Callable[[Path], None]) -> list[str]:
    """At start-up: removes every journaled collection that is still the directory the restore
    moved there (same inode), then the journals. Returns the names taken back."""
    taken: list[str] = []
    if not directory.is_dir():
        return taken
    for journal in sorted(directory.glob("*.json")):
        try:
            moved = json.loads(journal.read_text())["moved"]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("journal.unreadable", path=str(journal))
            moved = []
        for item in moved:
            with contextlib.suppress(KeyError, TypeError):
                name = str(item["name"])
                target = data_root / name
                if "/" in name or name.startswith("."):
                    continue  # never a collection: the journal is ours, but check anyway
                try:
                    st = target.lstat()
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) == (item["dev"], item["ino"]):
                    remove(target)
                    taken.append(name)
                    log.info("restore.taken_back_after_restart", collection=name, journal=journal.name)
        journal.unlink(missing_ok=True)
    return taken
