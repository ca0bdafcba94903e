"""A backup warns when the restore of its node would not fit in the agent's memory limit: a
restore holds every entry of its node (in columns), a backup about as much in other shapes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from shardkeeper.agent.backup import (
    RESTORE_BASE_BYTES,
    RESTORE_BYTES_PER_ENTRY,
    RESTORE_BYTES_PER_LINK,
    RESTORE_BYTES_PER_PATH_BYTE,
    RESTORE_BYTES_PER_TARGET_BYTE,
    EntryCounts,
    MiB,
    restore_memory_needed,
    restore_memory_warning,
)
from shardkeeper.agent.settings import cgroup_memory_limit, memory_limit
from shardkeeper.api.descriptors import Entry, EntryType
from shardkeeper.storage.repository import EntrySpool


@pytest.mark.parametrize(
    ("text", "limit"),
    [("536870912\n", 512 * MiB), ("max\n", None), ("", None), ("garbage", None)],
)
def test_the_memory_limit_is_read_from_cgroup_v2(tmp_path: Path, text: str, limit: int | None) -> None:
    path = tmp_path / "memory.max"
    path.write_text(text)
    assert cgroup_memory_limit(path) == limit


def test_without_a_cgroup_file_there_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path / "absent") is None


def counts(entries: int, path_bytes: int = 0, links: int = 0, target_bytes: int = 0) -> EntryCounts:
    return SimpleNamespace(entries=entries, path_bytes=path_bytes, links=links, target_bytes=target_bytes)


def test_a_node_whose_restore_fits_gets_no_warning() -> None:
    assert restore_memory_warning(counts(10_000, 200_000), 512 * MiB) is None
    assert restore_memory_warning(counts(10_000_000, 200_000_000), None) is None  # no limit


def test_a_node_whose_restore_would_not_fit_is_warned_with_the_numbers() -> None:
    limit = 512 * MiB
    per_entry = RESTORE_BYTES_PER_ENTRY + 20 * RESTORE_BYTES_PER_PATH_BYTE  # 20-byte paths
    fits = (limit - RESTORE_BASE_BYTES) // per_entry
    assert restore_memory_warning(counts(fits, 20 * fits), limit) is None
    # measured: 217 MB for a million 20-byte paths (benchmarks/README.md)
    assert restore_memory_warning(counts(1_000_000, 20_000_000), limit) is None
    warning = restore_memory_warning(counts(3_000_000, 60_000_000), limit)
    assert warning is not None
    assert "needs about 615 MiB" in warning and "3000000 entries, 58 MiB of paths" in warning
    assert "limit of 512 MiB" in warning and "agent.resources.limits.memory" in warning
    assert restore_memory_warning(counts(fits + 1, 20 * (fits + 1)), limit) is not None


def test_long_paths_and_links_need_more_than_the_same_count_of_short_paths() -> None:
    """What a restore holds grows with the paths' and the targets' bytes, not only with the count
    (measured: 164 B per entry at 24-byte paths, 370 B at 126 bytes; a link 140 B more plus its
    target's bytes): a node of long paths warns where as many short ones fit."""
    limit = 512 * MiB
    assert restore_memory_warning(counts(1_500_000, 1_500_000 * 20), limit) is None
    assert restore_memory_warning(counts(1_500_000, 1_500_000 * 126), limit) is not None
    links = counts(1_500_000, 1_500_000 * 20, links=1_500_000, target_bytes=1_500_000 * 100)
    assert restore_memory_warning(links, limit) is not None
    short = restore_memory_needed(1, 20, 0, 0)
    assert restore_memory_needed(1, 126, 0, 0) - short == 106 * RESTORE_BYTES_PER_PATH_BYTE
    link = RESTORE_BYTES_PER_LINK + 100 * RESTORE_BYTES_PER_TARGET_BYTE
    assert restore_memory_needed(1, 20, 1, 100) - short == link


def test_the_spool_counts_the_bytes_of_paths_and_targets_as_utf8(tmp_path: Path) -> None:
    entries = [
        Entry.make("c", EntryType.DIR, mode=0o755),
        Entry.make("c/é.sst", EntryType.FILE, mode=0o644, size=0, sha256="ab" * 32),  # é: 2 bytes
        Entry.make(os.fsdecode(b"c/\xff\xfe"), EntryType.FILE, mode=0o644, size=0, sha256="ab" * 32),
        Entry.make("c/l", EntryType.SYMLINK, mode=0o777, target="../target"),
    ]
    assert entries[2].path_b64 is not None  # kept in base64: not UTF-8
    with EntrySpool(tmp_path) as spool:
        for e in entries:
            spool.add("c", e)
        assert (spool.entries, spool.links, spool.target_bytes) == (4, 1, 9)
        assert spool.path_bytes == 1 + 8 + 4 + 3


def test_the_memory_limit_setting_overrides_the_container_and_zero_means_none() -> None:
    assert memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": "536870912"}) == 512 * 1024 * 1024
    assert memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": "0"}) is None  # no limit: never a warning
    assert memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": " "}) == cgroup_memory_limit()
    assert memory_limit({}) == cgroup_memory_limit()
    for bad in ("512Mi", "-1", "1e9", "²"):
        with pytest.raises(ValueError, match="SHARDKEEPER_MEMORY_LIMIT_BYTES must be a whole number"):
            memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": bad})
