"""A backup warns when the restore of its node would not fit in the agent's memory limit: a
restore holds every entry of its node (in columns), a backup about as much in other shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardkeeper.agent.backup import (
    RESTORE_BASE_BYTES,
    RESTORE_BYTES_PER_ENTRY,
    MiB,
    restore_memory_warning,
)
from shardkeeper.agent.settings import cgroup_memory_limit, memory_limit


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


def test_a_node_whose_restore_fits_gets_no_warning() -> None:
    assert restore_memory_warning(10_000, 512 * MiB) is None
    assert restore_memory_warning(10_000_000, None) is None  # no limit


def test_a_node_whose_restore_would_not_fit_is_warned_with_the_numbers() -> None:
    limit = 512 * MiB
    fits = (limit - RESTORE_BASE_BYTES) // RESTORE_BYTES_PER_ENTRY
    assert restore_memory_warning(fits, limit) is None
    assert restore_memory_warning(1_000_000, limit) is None  # measured: 217 MB (benchmarks/README.md)
    warning = restore_memory_warning(3_000_000, limit)
    assert warning is not None
    assert "needs about 530 MiB" in warning and "3000000 entries" in warning
    assert "limit of 512 MiB" in warning and "agent.resources.limits.memory" in warning
    assert restore_memory_warning(fits + 1, limit) is not None


def test_the_memory_limit_setting_overrides_the_container_and_zero_means_none() -> None:
    assert memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": "536870912"}) == 512 * 1024 * 1024
    assert memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": "0"}) is None  # no limit: never a warning
    assert memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": " "}) == cgroup_memory_limit()
    assert memory_limit({}) == cgroup_memory_limit()
    for bad in ("512Mi", "-1", "1e9", "²"):
        with pytest.raises(ValueError, match="SHARDKEEPER_MEMORY_LIMIT_BYTES must be a whole number"):
            memory_limit({"SHARDKEEPER_MEMORY_LIMIT_BYTES": bad})
