"""A store that refuses writes in the middle of a backup: FAILED, and its end is recorded and cleaned
up in the backend as soon as the store takes writes again, however long that takes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import Env, backup_manifest


def _immutable(paths: list[Path], on: bool) -> None:
    """chattr +i: even root may not create, change or remove entries there (EPERM)."""
    subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], check=True)


def test_the_final_descriptor_and_the_cleanup_are_retried_until_done(env: Env) -> None:
    env.backend_env["SHARDKEEPER_MAX_BYTES_PER_SECOND"] = str(300_000)
    env.make_cluster(value_size=4096).fill({"articles": [0, 1, 2]}, keys=600)
    env.start_operator()
    env.apply(backup_manifest("refused-store"))
    env.wait_for(
        "backup",
        "refused-store",
        lambda o: o.get("status", {}).get("phase") == "TRANSFERRING" and o["status"]["bytesDone"] > 0,
        timeout=60,
    )
    root = env.backups / "refused-store"
    locked = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    _immutable(locked, True)
    try:
        failed = env.wait_phase("backup", "refused-store", "FAILED", "SUCCESS", timeout=120)
        assert failed["status"]["phase"] == "FAILED"
        assert "not permitted" in failed["status"]["error"] or "denied" in failed["status"]["error"]
        pending = env.wait_for(
            "backup", "refused-store", lambda o: bool(o["status"].get("cleanupPending")), timeout=60
        )
        assert "final descriptor" in pending["status"]["cleanupPending"]
        assert json.loads((root / "backup_config.json").read_text())["status"] == "STARTED"
    finally:
        _immutable(locked, False)
    done = env.wait_for(
        "backup", "refused-store", lambda o: not o["status"].get("cleanupPending"), timeout=120
    )
    assert done["status"]["phase"] == "FAILED"
    assert json.loads((root / "backup_config.json").read_text())["status"] == "FAILED"
    assert env.stored("refused-store") == ["backup_config.json"]  # no chunk, temp file or probe left
    reasons = [e["reason"] for e in env.events("refused-store")]
    assert "CleanupPending" in reasons and reasons[-1] == "CleanupDone"
    assert env.agents_free()
