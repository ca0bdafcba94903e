"""Agent settings, read once at start from flags or the environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from shardkeeper import conventions as c


def _cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """The container's CPU limit in cores (cgroup v2 ``cpu.max``: "<quota> <period>" or "max ...")."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def cgroup_memory_limit(path: Path = Path("/sys/fs/cgroup/memory.max")) -> int | None:
    """The container's memory limit in bytes (cgroup v2 ``memory.max``: a number or "max"); None
    when there is none or it cannot be read."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def memory_limit(env: Mapping[str, str]) -> int | None:
    """The agent's memory limit in bytes: ``SHARDKEEPER_MEMORY_LIMIT_BYTES`` if set (0: none, as
    ``SHARDKEEPER_MAX_BYTES_PER_SECOND``), else the container's (``cgroup_memory_limit``). Raises
    ``ValueError`` if the variable is not a whole number of bytes."""
    value = env.get("SHARDKEEPER_MEMORY_LIMIT_BYTES", "").strip()
    if not value:
        return cgroup_memory_limit()
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"SHARDKEEPER_MEMORY_LIMIT_BYTES must be a whole number of bytes, not {value!r}")
    return int(value) or None


def usable_cores(env: dict[str, str] | None = None) -> int:
    """Cores this process may use: ``SHARDKEEPER_CPU_CORES`` if set, else the CPU affinity capped
    by the container's CPU limit. It bounds the worker pool together with ``cpuPercentage``."""
    env = dict(os.environ) if env is None else env
    if env.get("SHARDKEEPER_CPU_CORES"):
        return max(1, int(env["SHARDKEEPER_CPU_CORES"]))
    cores = len(os.sched_getaffinity(0))
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, int(limit)) if limit else cores)


#: Tables that engines write once and never change (RocksDB/LevelDB). SQLite, bbolt, LMDB and most
#: other single-file stores update their files in place: they must be copied, so they are not here.
DEFAULT_IMMUTABLE_PATTERNS = ("*.sst", "*.ldb")


def immutable_patterns(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """SHARDKEEPER_IMMUTABLE_PATTERNS as a tuple; unset: the default; empty: copy everything."""
    env = dict(os.environ) if env is None else env
    raw = env.get("SHARDKEEPER_IMMUTABLE_PATTERNS")
    if raw is None:
        return DEFAULT_IMMUTABLE_PATTERNS
    return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class AgentSettings:
    node: str
    """The node name: the pod name (POD_NAME from the downward API)."""
    data_root: Path
    """The database's data directory; each top-level directory in it is a collection."""
    token: SecretStr
    """Bearer token every request except /healthz must carry."""
    host: str = "0.0.0.0"  # noqa: S104 - an agent serves its pod's IP
    port: int = c.AGENT_DEFAULT_PORT
    hook_url: str | None = None
    """Base URL of the workload hook; without it the agent snapshots crash-consistently."""
    immutable_patterns: tuple[str, ...] = DEFAULT_IMMUTABLE_PATTERNS
    """Hookless mode (SHARDKEEPER_IMMUTABLE_PATTERNS, comma-separated globs on the file name): files
    matching these are hard-linked and re-checked; all others are copied. Only files the workload
    never changes in place belong here: a file rewritten in place fails the backup, naming it."""
    max_reservation_seconds: float = 600.0
    hook_timeout_seconds: float = 60.0
    cores: int = field(default_factory=usable_cores)
    capacity_bytes: int | None = None
    """SHARDKEEPER_DATA_CAPACITY_BYTES: the most the data root may hold (a quota on a shared volume);
    restores that would exceed it are refused. None: the volume's free space is the limit."""
    max_bytes_per_second: int | None = None
    """Bandwidth limit per node for transfers (SHARDKEEPER_MAX_BYTES_PER_SECOND); None: unlimited."""
    memory_limit_bytes: int | None = field(default_factory=cgroup_memory_limit)
    """SHARDKEEPER_MEMORY_LIMIT_BYTES, else the container's limit (cgroup v2 ``memory.max``); None:
    none known. A backup warns when its node's restore would need more (``agent.backup``)."""

    @property
    def state_dir(self) -> Path:
        return self.data_root / c.AGENT_STATE_DIR

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    @property
    def restore_dir(self) -> Path:
        return self.state_dir / "restore"

    @property
    def journal_dir(self) -> Path:
        """What restores moved into place (``agent.journal``): it survives the process."""
        return self.state_dir / "journal"

    def usable_bytes(self) -> int:
        """What a restore may still write into the data root, in bytes. With a capacity, what the
        data root holds is counted as allocated blocks, each inode once (holes and hard links take
        no room), as a quota would count it."""
        free = shutil.disk_usage(self.data_root).free
        if self.capacity_bytes is not None:
            seen: set[tuple[int, int]] = set()
            used = 0
            for dirpath, _dirs, names in os.walk(self.data_root):
                for name in names:
                    try:
                        st = os.lstat(f"{dirpath}/{name}")
                    except FileNotFoundError:
                        continue
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        used += st.st_blocks * 512
            free = min(free, max(0, self.capacity_bytes - used))
        return free


def read_token(*, token_file: str | None, env: dict[str, str] | None = None) -> SecretStr:
    env = dict(os.environ) if env is None else env
    path = token_file or env.get("SHARDKEEPER_AGENT_TOKEN_FILE")
    value = Path(path).read_text().strip() if path else env.get("SHARDKEEPER_AGENT_TOKEN", "").strip()
    if not value:
        raise SystemExit(
            "no agent token: set SHARDKEEPER_AGENT_TOKEN_FILE (or SHARDKEEPER_AGENT_TOKEN), "
            "from the Secret the chart creates"
        )
    return SecretStr(value)
