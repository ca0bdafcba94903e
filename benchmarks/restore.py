"""Restore throughput of a real agent against ``<decompressor> | tar -x`` on the same data.

For every compression setting, in one run: the agent backs the data set up (to have chunks of that
setting), then

* baseline: the same data as one ``tar | compressor`` stream, restored with
  ``<same library, decompress> < file | tar -x -C dir`` and a ``sync``;
* shardkeeper: a fresh agent process on an empty data root restores the backup: prepare, commit
  (download, verify every chunk and file sha256, unpack into staging, sync), finalize (rename into
  place) and complete, timed from commit to SUCCESS.

Each is run ``--repeat`` times, alternately (baseline first, then the agent first, and so on), and
the medians of their times are compared: this machine's disk is noisy.
Every run restores into a directory of its own, kept until all runs are done (or the disk would
not hold the next setting's: then the trees go, and that setting waits), and the runs start
no sooner than ``common.INODE_REUSE_DELAY_S`` after this script last deleted trees in this work
directory (other deletions on the filesystem it cannot see): creating files soon after thousands
were deleted costs this VM's filesystem seconds of scanning, which varies between runs by more
than the two restores differ. Before each run the page cache is dropped (as root; the output says
if it could not be): each run reads its input from disk, and none pays for reclaiming the memory
the runs before it filled (which, with the trees kept, weighs on ``tar -x`` more than on the agent).
Prints throughput (uncompressed MB/s), the ratio to the baseline, the agent's peak RSS, and the
CPU seconds (user+system, medians) of the baseline's processes and of the agent from commit to
SUCCESS (all its threads; neither counts the kernel's writeback at ``sync``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.backup import COLLECTIONS, LEVELS, MB, baseline, cpu_column, shardkeeper
from benchmarks.common import (
    DECOMPRESS_FILTER,
    Deletions,
    StaticHook,
    agent_process,
    children_cpu_times,
    cpu_seconds,
    cpu_times,
    drop_page_cache,
    load,
    restore_request,
    run_pipeline,
    table,
)
from benchmarks.dataset import data_dir, generate, total_bytes


def baseline_restore(archive: Path, target: Path, codec: str) -> float:
    untar = ["tar", "-xf", "-", "-C", str(target)]
    stages = [["cat", str(archive)], untar] if codec == "none" else [[*DECOMPRESS_FILTER[codec]], untar]
    started = time.perf_counter()
    if codec == "none":
        run_pipeline(stages)
    else:
        with archive.open("rb") as source:
            import subprocess

            decomp = subprocess.Popen(stages[0], stdin=source, stdout=subprocess.PIPE)
            tar = subprocess.Popen(untar, stdin=decomp.stdout)
            assert decomp.stdout is not None
            decomp.stdout.close()
            if tar.wait() != 0 or decomp.wait() != 0:
                raise RuntimeError("baseline restore failed")
    os.sync()
    return time.perf_counter() - started


def shardkeeper_restore(
    store: Path,
    target: Path,
    hook: StaticHook | None,
    backup_id: str,
    cpu: int,
    collections: list[str] = COLLECTIONS,
) -> dict[str, Any]:
    """Restores ``collections`` of node bench-0 of ``backup_id`` into ``target`` with a fresh agent
    process: seconds from commit to SUCCESS, the agent's peak RSS and CPU seconds, bytes and files."""
    with agent_process(target, store, hook_url=hook.url if hook else None) as agent:
        op = f"restore-{backup_id}"
        request = restore_request(op, backup_id, collections, cpu_percentage=cpu)
        agent.call("PUT", f"/v1/operations/{op}", json=request)
        agent.wait(op, "PREPARED")
        started = time.perf_counter()
        user, system = cpu_times(agent.proc.pid)
        agent.call("POST", f"/v1/operations/{op}/commit")
        agent.wait(op, "TRANSFERRED")
        agent.call("POST", f"/v1/operations/{op}/finalize")
        agent.wait(op, "FINALIZING")
        agent.call("POST", f"/v1/operations/{op}/complete")
        done = agent.wait(op, "SUCCESS")
        seconds = time.perf_counter() - started
        user_after, system_after = cpu_times(agent.proc.pid)
        return {
            "seconds": seconds,
            "cpu": (user_after - user, system_after - system),  # commit to SUCCESS
            "rss_mb": agent.peak_rss_mb(),
            "agent_cpu_s": cpu_seconds(agent.proc.pid),
            "bytes": done["bytesTotal"],
            "files": done["filesTotal"],
        }


def _run(r: dict[str, Any]) -> str:
    return f"{r['seconds']:.2f} s (CPU {r['cpu'][0]:.2f}+{r['cpu'][1]:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument(
        "--workdir", default=os.environ.get("SHARDKEEPER_BENCH_DIR", "/tmp/shardkeeper-bench")
    )
    parser.add_argument("--levels", default=",".join(LEVELS))
    parser.add_argument("--cpu-percentage", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians are compared")
    args = parser.parse_args()

    work = Path(args.workdir)
    data = generate(data_dir(work, args.scale), scale=args.scale)
    raw, files = total_bytes(data)
    print(f"data set: {raw / MB:,.0f} MB in {files} files (scale {args.scale}); {load()}")
    hook = StaticHook(data)
    rows = []
    store, restored = work / "store", work / "restored"
    deletions = Deletions(work / "deleted-at")
    deletions.remove(restored)  # an earlier run's, if it stopped before its end
    for name in args.levels.split(","):
        codec, level = LEVELS[name]
        shutil.rmtree(store, ignore_errors=True)  # a few dozen files: no wait needed
        store.mkdir(parents=True)
        if shutil.disk_usage(work).free < (2 * args.repeat + 2) * raw:  # this setting's trees, its store
            deletions.remove(restored)  # and wait for the filesystem below
        archive = store / "baseline.tar"
        baseline(data, archive, codec, level)
        backup_id = f"bench-{name.lower()}"
        shardkeeper(data, store / "backups", hook, name, args.cpu_percentage, backup_id)
        print(f"{name}: waited {deletions.settle():.0f} s for the filesystem to let go of deleted inodes")
        base_runs: list[dict[str, Any]] = []
        our_runs: list[dict[str, Any]] = []
        dropped: list[bool] = []
        for i in range(args.repeat):  # ABBA..., so that both see the same (noisy) disk equally
            for who in ("baseline", "shardkeeper") if i % 2 == 0 else ("shardkeeper", "baseline"):
                target = restored / f"{name}-{i}-{who}"
                target.mkdir(parents=True, exist_ok=True)
                dropped.append(drop_page_cache())
                if who == "shardkeeper":
                    our_runs.append(
                        shardkeeper_restore(store / "backups", target, hook, backup_id, args.cpu_percentage)
                    )
                    continue
                user, system = children_cpu_times()
                seconds = baseline_restore(archive, target, codec)
                user_after, system_after = children_cpu_times()
                base_runs.append({"seconds": seconds, "cpu": (user_after - user, system_after - system)})
            note = "" if all(dropped) else " (page cache not dropped: later runs find it fuller)"
            print(
                f"  run {i + 1}: baseline {_run(base_runs[-1])}, shardkeeper {_run(our_runs[-1])}{note}",
                flush=True,
            )
        base_s = statistics.median(r["seconds"] for r in base_runs)
        ours = {
            "seconds": statistics.median(r["seconds"] for r in our_runs),
            "rss_mb": max(r["rss_mb"] for r in our_runs),
        }
        rows.append(
            {
                "setting": name,
                "codec": f"{codec}-{level}" if codec != "none" else "none",
                "baseline MB/s": f"{raw / MB / base_s:.0f}",
                "shardkeeper MB/s": f"{raw / MB / ours['seconds']:.0f}",
                "vs baseline": f"{base_s / ours['seconds']:.2f}",
                "peak RSS MB": f"{ours['rss_mb']:.0f}",
                "CPU s, baseline (user+sys)": cpu_column(base_runs),
                "CPU s, shardkeeper (user+sys)": cpu_column(our_runs),
            }
        )
        print(table(rows[-1:], list(rows[-1])), flush=True)
    shutil.rmtree(store)
    deletions.remove(restored)
    print()
    print(table(rows, list(rows[0])))
    print(load())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
