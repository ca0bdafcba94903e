"""Agent settings, read once at start from flags or the environment."""

from __future__ import annotations

import os
import shutil
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


def usable_cores(env: dict[str, str] | None = None) -> int:
    """Cores this process may use: ``SHARDKEEPER_CPU_CORES`` if set, else the CPU affinity capped
    by the container's CPU limit. It bounds the worker pool together with ``cpuPercentage``."""
    env = dict(os.environ) if env is None else env
    if env.get("SHARDKEEPER_CPU_CORES"):
        return max(1, int(env["SHARDKEEPER_CPU_CORES"]))
    cores = len(os.sched_getaffinity(0))
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, int(limit)) if limit else cores)


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
    immutable_patterns: tuple[str, ...] = ("*.sst", "*.db", "*.bloom")
    """Hookless mode: files matching these are hard-linked; all others are copied and re-checked."""
    max_reservation_seconds: float = 600.0
    hook_timeout_seconds: float = 60.0
    cores: int = field(default_factory=usable_cores)
    capacity_bytes: int | None = None
    """SHARDKEEPER_DATA_CAPACITY_BYTES: the most the data root may hold (a quota on a shared volume);
    restores that would exceed it are refused. None: the volume's free space is the limit."""
    max_bytes_per_second: int | None = None
    """Bandwidth limit per node for transfers (SHARDKEEPER_MAX_BYTES_PER_SECOND); None: unlimited."""

    @property
    def state_dir(self) -> Path:
        return self.data_root / c.AGENT_STATE_DIR

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    @property
    def restore_dir(self) -> Path:
        return self.state_dir / "restore"

    def usable_bytes(self) -> int:
        """What a restore may still write into the data root."""
        free = shutil.disk_usage(self.data_root).free
        if self.capacity_bytes is not None:
            used = sum(
                (Path(dirpath) / name).lstat().st_size
                for dirpath, _dirs, names in os.walk(self.data_root)
                for name in names
            )
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
