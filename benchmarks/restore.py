"""Restore throughput of a real agent against ``<decompressor> | tar -x`` on the same data.

For every compression setting, in one run: the agent backs the data set up (to have chunks of that
setting), then

* baseline: the same data as one ``tar | compressor`` stream, restored with
  ``<same library, decompress> < file | tar -x -C dir`` and a ``sync``;
* shardkeeper: a fresh agent process on an empty data root restores the backup: prepare, commit
  (download, verify every chunk and file sha256, unpack into staging, sync), finalize (rename into
  place) and complete, timed from commit to SUCCESS.

Each is run ``--repeat`` times, alternately, and medians are compared: this machine's disk is noisy.
Prints throughput (uncompressed MB/s), the ratio to the baseline, the agent's peak RSS, and the
CPU seconds (user+system, medians) of the baseline's processes and of the agent from commit to
SUCCESS (all its threads; neither counts the kernel's writeback at ``sync``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.backup import COLLECTIONS, LEVELS, MB, baseline, cpu_column, shardkeeper
from benchmarks.common import (
    DECOMPRESS_FILTER,
    StaticHook,
    agent_process,
    children_cpu_times,
    cpu_seconds,
    cpu_times,
    load,
    reset,
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
    for name in args.levels.split(","):
        codec, level = LEVELS[name]
        store, target = work / "store", work / "restored"
        reset(store)
        archive = store / "baseline.tar"
        baseline(data, archive, codec, level)
        backup_id = f"bench-{name.lower()}"
        shardkeeper(data, store / "backups", hook, name, args.cpu_percentage, backup_id)
        base_runs: list[dict[str, Any]] = []
        our_runs: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # alternate, so that both see the same (noisy) disk
            reset(target)
            user, system = children_cpu_times()
            seconds = baseline_restore(archive, target, codec)
            user_after, system_after = children_cpu_times()
            base_runs.append({"seconds": seconds, "cpu": (user_after - user, system_after - system)})
            reset(target)
            our_runs.append(
                shardkeeper_restore(store / "backups", target, hook, backup_id, args.cpu_percentage)
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
    reset(work / "store")
    reset(work / "restored")
    print()
    print(table(rows, list(rows[0])))
    print(load())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
