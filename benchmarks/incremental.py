"""Incremental backups against full ones and against restic, in one run on the same data.

The data set (``dataset.py``, scale 1: ~1.2 GB, 5,041 files) is backed up by a real agent process to
the filesystem backend with a workload hook that calls the big files immutable (as a database's
segments are) and the 5,000 small ones mutable (copied, so hashed to be compared). Then:

* an unchanged re-backup, incremental on the full one: time and bytes uploaded;
* 5 % of the files changed (250 small files rewritten in place, and one 64 MB vector file replaced
  by a new one, as compaction would), incremental on the previous one;
* eight more incrementals after small changes (a chain of 10), then a restore of the last one
  against a restore of the full one;
* restic 0.18.1 (built from its Go module by ``hack/build-restic.sh``): ``restic backup`` of the same
  directory twice, the second unchanged.

    python -m benchmarks.incremental
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.backup import COLLECTIONS, MB
from benchmarks.common import StaticHook, agent_process, backup_request, reset, table
from benchmarks.dataset import data_dir, generate, total_bytes
from benchmarks.restore import shardkeeper_restore

REPO = Path(__file__).resolve().parent.parent
LEVEL = "ZstdBestSpeed"


def backup(data: Path, store: Path, hook: StaticHook, op_id: str, base: str | None) -> dict[str, Any]:
    with agent_process(data, store, hook_url=hook.url) as agent:
        request = backup_request(
            op_id, COLLECTIONS, compression_level=LEVEL, cpu_percentage=50, incremental_base=base
        )
        agent.call("PUT", f"/v1/operations/{op_id}", json=request)
        agent.wait(op_id, "PREPARED")
        started = time.perf_counter()
        agent.call("POST", f"/v1/operations/{op_id}/commit")
        done = agent.wait(op_id, "SUCCESS")
        seconds = time.perf_counter() - started
    uploaded = sum(p.stat().st_size for p in (store / op_id).rglob("chunk-*"))
    return {"seconds": seconds, "uploaded": uploaded, "reused": done["bytesReused"]}


def change(data: Path, rng: random.Random, fraction: float, *, replace_big: bool) -> None:
    small = sorted((data / "small").rglob("*"))
    small = [p for p in small if p.is_file()]
    for path in rng.sample(small, int(len(small) * fraction)):
        with path.open("r+b") as f:  # in place, same size
            f.write(os.urandom(min(512, path.stat().st_size)))
    if replace_big:
        victim = sorted((data / "vectors").glob("*"))[-1]
        fresh = victim.with_name(victim.name + ".new")
        fresh.write_bytes(os.urandom(victim.stat().st_size))
        victim.unlink()
        fresh.rename(victim)


def restic(binary: Path, data: Path, repo: Path) -> list[float]:
    env = {
        **os.environ,
        "RESTIC_PASSWORD": "bench",
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_CACHE_DIR": str(repo) + ".cache",
    }
    subprocess.run([str(binary), "init", "-q"], env=env, check=True)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run([str(binary), "backup", "-q", "."], env=env, cwd=data, check=True)
        os.sync()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workdir", default=os.environ.get("SHARDKEEPER_BENCH_DIR", "/tmp/shardkeeper-bench")
    )
    args = parser.parse_args()
    work = Path(args.workdir)
    pristine = generate(data_dir(work), scale=1)
    data = work / "incremental-data"  # a copy: this benchmark changes it
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(pristine, data)
    raw, files = total_bytes(data)
    print(f"data set: {raw / MB:,.0f} MB in {files} files; one worker ({LEVEL})")
    store = work / "incremental-store"
    reset(store)
    hook = StaticHook(data, mutable=frozenset({"small"}))  # big files are segments: immutable
    rng = random.Random(7)
    rows = []
    full = backup(data, store, hook, "b0", None)
    rows.append({"run": "full backup", **_row(full, full, raw)})
    same = backup(data, store, hook, "b1", "b0")
    rows.append({"run": "unchanged, incremental", **_row(same, full, raw)})
    change(data, rng, 0.05, replace_big=True)
    five = backup(data, store, hook, "b2", "b1")
    rows.append({"run": "5 % of files changed, incremental", **_row(five, full, raw)})
    for n in range(3, 10):
        change(data, rng, 0.01, replace_big=False)
        backup(data, store, hook, f"b{n}", f"b{n - 1}")
    restic_bin = (
        Path(
            subprocess.run(
                [str(REPO / "hack" / "build-restic.sh")], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        / "restic"
    )
    repo = work / "restic-repo"
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(str(repo) + ".cache", ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(pristine, data)
    first, second = restic(restic_bin, data, repo)
    rows.append(
        {
            "run": "restic 0.18.1, first backup",
            "seconds": f"{first:.2f}",
            "vs full": f"{first / full['seconds']:.2f}",
            "uploaded MB": "",
            "uploaded / data": "",
            "reused MB": "",
        }
    )
    rows.append(
        {
            "run": "restic 0.18.1, second (unchanged)",
            "seconds": f"{second:.2f}",
            "vs full": f"{second / full['seconds']:.2f}",
            "uploaded MB": "",
            "uploaded / data": "",
            "reused MB": "",
        }
    )
    print(table(rows, list(rows[0])))

    target = work / "incremental-restore"
    times = {}
    for backup_id in ("b0", "b9"):
        reset(target)
        times[backup_id] = shardkeeper_restore(store, target, hook, backup_id, 50)["seconds"]
    print(
        f"\nrestore of the full backup: {times['b0']:.2f} s; of the 10th of its chain: {times['b9']:.2f} s "
        f"({times['b9'] / times['b0']:.2f}x)"
    )
    shutil.rmtree(data, ignore_errors=True)
    return 0


def _row(result: dict[str, Any], full: dict[str, Any], raw: int) -> dict[str, str]:
    return {
        "seconds": f"{result['seconds']:.2f}",
        "vs full": f"{result['seconds'] / full['seconds']:.2f}",
        "uploaded MB": f"{result['uploaded'] / MB:.1f}",
        "uploaded / data": f"{result['uploaded'] / raw:.3%}",
        "reused MB": f"{result['reused'] / MB:.0f}",
    }


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
